#!/usr/bin/env bash
# Install the leukedge station on Raspberry Pi OS Bookworm (64-bit) as a systemd service.
#
#   sudo deploy/install-pi.sh                       online: apt + PyPI
#   sudo deploy/install-pi.sh --offline WHEELHOUSE  no network: wheels from make-wheelhouse.sh
#   deploy/install-pi.sh --dry-run [...]            print every command, change nothing
#   --package SPEC                                  what pip installs [leukedge[edge]],
#                                                   e.g. ./leukedge-0.1.0-py3-none-any.whl[edge]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

readonly PREFIX=/opt/leukedge
readonly VENV="$PREFIX/venv"
readonly STATE_DIR=/var/lib/leukedge
readonly CONF_DIR=/etc/leukedge
readonly UNIT=leukedge-station.service
readonly ACCOUNT=leukedge
readonly APT_PACKAGES=(python3-picamera2 python3-venv)

WHEELHOUSE=""
PACKAGE="leukedge[edge]"
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --offline)
      (($# >= 2)) || die "--offline needs the wheelhouse folder"
      [[ -d $2 ]] || die "wheelhouse $2 is not a folder"
      WHEELHOUSE="$(cd "$2" && pwd)"
      shift
      ;;
    --package)
      (($# >= 2)) || die "--package needs a pip requirement"
      PACKAGE="$2"
      shift
      ;;
    -h | --help)
      sed -n '2,9s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

if ((!DRY_RUN && EUID != 0)); then
  die "run as root: sudo $0 (or try --dry-run)"
fi

codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null || true)"
if [[ $codename != bookworm || $(uname -m) != aarch64 ]]; then
  note "warning: made for Raspberry Pi OS Bookworm 64-bit; this is ${codename:-unknown} $(uname -m)"
fi

# System packages: picamera2 only comes from apt (it needs libcamera).
if [[ -z $WHEELHOUSE ]]; then
  run apt-get update
  run apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
else
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
      note "warning: $pkg is not installed; offline, install its .deb files with apt-get install ./*.deb"
    fi
  done
fi

# An unprivileged account that may use the camera.
if id -u "$ACCOUNT" >/dev/null 2>&1; then
  note "account $ACCOUNT exists"
else
  run useradd --system --user-group --groups video --home-dir "$STATE_DIR" --no-create-home \
    --shell /usr/sbin/nologin "$ACCOUNT"
fi
run install -d -o "$ACCOUNT" -g "$ACCOUNT" -m 0750 "$STATE_DIR" "$STATE_DIR/incoming"
run install -d -m 0755 "$PREFIX" "$CONF_DIR"

# The venv sees the system site-packages so that apt's picamera2 imports in it.
run python3 -m venv --system-site-packages "$VENV"
if [[ -z $WHEELHOUSE ]]; then
  run "$VENV/bin/pip" install -c "$HERE/pi-constraints.txt" "$PACKAGE"
else
  run "$VENV/bin/pip" install --no-index --find-links "$WHEELHOUSE" \
    -c "$HERE/pi-constraints.txt" "$PACKAGE"
fi
run ln -sf "$VENV/bin/leukedge" /usr/local/bin/leukedge

if [[ -e $CONF_DIR/station.toml ]]; then
  note "keeping the existing $CONF_DIR/station.toml"
else
  run install -m 0644 "$HERE/station.toml" "$CONF_DIR/station.toml"
fi
run install -m 0644 "$HERE/$UNIT" "/etc/systemd/system/$UNIT"
run systemctl daemon-reload
run systemctl enable "$UNIT"

if ((DRY_RUN)); then
  note "dry run: nothing was changed"
fi
note "next: set the model and source in $CONF_DIR/station.toml, then:"
note "  sudo systemctl start ${UNIT%.service}; systemctl status ${UNIT%.service}"
