#!/usr/bin/env bash
# Install the leukedge station on Raspberry Pi OS Bookworm (64-bit) as a systemd service.
# leukedge itself always comes from its own wheel, never by name from a package index.
#
#   sudo deploy/install-pi.sh                       online: apt + the project's wheel, built
#                                                   from the project folder around deploy/;
#                                                   its dependencies from PyPI
#   sudo deploy/install-pi.sh --wheel FILE          online, with this leukedge wheel
#   sudo deploy/install-pi.sh --offline WHEELHOUSE  no network: every wheel from make-wheelhouse.sh
#   sudo deploy/install-pi.sh --web [...]           run the web page (leukedge-serve) as the
#                                                   service instead of leukedge-station
#   deploy/install-pi.sh --dry-run [...]            print every command, change nothing
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
readonly WEB_UNIT=leukedge-serve.service
readonly ACCOUNT=leukedge
# Accounts in this group (the microscope software's) may save fields into the hot folder.
readonly SCANNERS=leukedge-scanners
readonly INCOMING="$STATE_DIR/incoming"
readonly EXTRAS="[edge,sign,station]"
readonly APT_PACKAGES=(python3-picamera2 python3-venv)

WHEELHOUSE=""
WHEEL=""
WEB=0
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --web) WEB=1 ;;
    --offline)
      (($# >= 2)) || die "--offline needs the wheelhouse folder"
      [[ -d $2 ]] || die "wheelhouse $2 is not a folder"
      WHEELHOUSE="$(cd "$2" && pwd)"
      shift
      ;;
    --wheel)
      (($# >= 2)) || die "--wheel needs a leukedge-*.whl file"
      [[ -f $2 && $2 == *.whl ]] || die "wheel $2 is not a .whl file"
      WHEEL="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
      shift
      ;;
    -h | --help)
      sed -n '2,13s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

# the_wheel DIR: the one leukedge wheel in DIR (a placeholder name in a dry run).
the_wheel() {
  if ((DRY_RUN)); then
    echo "$1/leukedge-VERSION-py3-none-any.whl"
    return
  fi
  local wheels=("$1"/leukedge-*-py3-none-any.whl)
  [[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] ||
    die "expected one leukedge-*-py3-none-any.whl in $1, found: ${wheels[*]}"
  echo "${wheels[0]}"
}

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

# An unprivileged account that may use the camera and read the hot folder.
if getent group "$SCANNERS" >/dev/null 2>&1; then
  note "group $SCANNERS exists"
else
  run groupadd --system "$SCANNERS"
fi
if id -u "$ACCOUNT" >/dev/null 2>&1; then
  note "account $ACCOUNT exists"
  run usermod --append --groups "video,$SCANNERS" "$ACCOUNT"
else
  run useradd --system --user-group --groups "video,$SCANNERS" --home-dir "$STATE_DIR" \
    --no-create-home --shell /usr/sbin/nologin "$ACCOUNT"
fi
# The results stay private (0751: others may only pass through); the hot folder is
# writable by the scanners group, and setgid keeps new files in that group.
run install -d -o "$ACCOUNT" -g "$ACCOUNT" -m 0751 "$STATE_DIR"
run install -d -o "$ACCOUNT" -g "$SCANNERS" -m 2770 "$INCOMING"
if command -v setfacl >/dev/null 2>&1; then
  # New files stay readable by the group even when the scanner software saves them 0600.
  run setfacl -d -m "g:$SCANNERS:rwX" "$INCOMING"
else
  note "setfacl not found (apt install acl): scanner software must save files group-readable"
fi
run install -d -m 0755 "$PREFIX" "$CONF_DIR"

# The venv sees the system site-packages so that apt's picamera2 imports in it.
run python3 -m venv --system-site-packages "$VENV"
if [[ -z $WHEEL && -z $WHEELHOUSE ]]; then
  project="$(dirname "$HERE")"
  [[ -f $project/pyproject.toml ]] ||
    die "no leukedge project around $HERE: copy the whole project, or pass --wheel FILE"
  build="$PREFIX/wheels"
  run rm -rf "$build"
  run "$VENV/bin/pip" wheel --no-deps --wheel-dir "$build" "$project"
  WHEEL="$(the_wheel "$build")"
elif [[ -z $WHEEL ]]; then
  WHEEL="$(the_wheel "$WHEELHOUSE")"
fi
if [[ -n $WHEELHOUSE ]]; then
  run "$VENV/bin/pip" install --no-index --find-links "$WHEELHOUSE" \
    -c "$HERE/pi-constraints.txt" "$WHEEL$EXTRAS"
else
  run "$VENV/bin/pip" install -c "$HERE/pi-constraints.txt" "$WHEEL$EXTRAS"
fi
run ln -sf "$VENV/bin/leukedge" /usr/local/bin/leukedge

if [[ -e $CONF_DIR/station.toml ]]; then
  note "keeping the existing $CONF_DIR/station.toml"
else
  run install -m 0644 "$HERE/station.toml" "$CONF_DIR/station.toml"
fi
# The web page's token: made once, root-only; systemd gives it to leukedge-serve.
if [[ -e $CONF_DIR/serve.env ]]; then
  note "keeping the existing $CONF_DIR/serve.env"
elif ((DRY_RUN)); then
  echo "+ write LEUKEDGE_TOKEN=(24 random characters) to $CONF_DIR/serve.env, mode 0600"
else
  (
    umask 077
    printf 'LEUKEDGE_TOKEN=%s\n' "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" \
      >"$CONF_DIR/serve.env"
  )
fi
run install -m 0644 "$HERE/$UNIT" "/etc/systemd/system/$UNIT"
run install -m 0644 "$HERE/$WEB_UNIT" "/etc/systemd/system/$WEB_UNIT"
run systemctl daemon-reload
if ((WEB)); then
  run systemctl disable "$UNIT"
  run systemctl enable "$WEB_UNIT"
else
  run systemctl enable "$UNIT"
fi

if ((DRY_RUN)); then
  note "dry run: nothing was changed"
fi
note "next: set the model and source in $CONF_DIR/station.toml, then:"
note "  sudo usermod --append --groups $SCANNERS SCANNER_ACCOUNT   # lets it save into $INCOMING"
if ((WEB)); then
  note "  sudo systemctl start ${WEB_UNIT%.service}; then open http://$(hostname).local:8080/?token=TOKEN"
  note "  (TOKEN: sudo cat $CONF_DIR/serve.env)"
else
  note "  sudo systemctl start ${UNIT%.service}; systemctl status ${UNIT%.service}"
fi
