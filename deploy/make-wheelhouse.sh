#!/usr/bin/env bash
# On a connected machine (any OS or CPU), collect every wheel the Raspberry Pi
# (Bookworm 64-bit: aarch64, CPython 3.11, glibc 2.36) needs into WHEELHOUSE:
#
#   deploy/make-wheelhouse.sh [--dry-run] WHEELHOUSE [PROJECT_DIR]
#
# Copy WHEELHOUSE and deploy/ to the Pi, then: sudo deploy/install-pi.sh --offline WHEELHOUSE
# PYTHON selects the interpreter that runs pip [python3].
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

if [[ ${1:-} == --dry-run ]]; then
  DRY_RUN=1
  shift
fi
(($# >= 1)) || die "usage: ${0##*/} [--dry-run] WHEELHOUSE [PROJECT_DIR]"
OUT="$1"
PROJECT="${2:-$(dirname "$HERE")}"
PY="${PYTHON:-python3}"

# pip does not widen a manylinux_2_X tag to older ones: name each glibc up to 2.36.
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do
  platforms+=(--platform "manylinux_2_${minor}_aarch64")
done

run mkdir -p "$OUT"
run "$PY" -m pip wheel --no-deps --wheel-dir "$OUT" "$PROJECT"
if ((DRY_RUN)); then
  wheel="$OUT/leukedge-VERSION-py3-none-any.whl"
else
  wheels=("$OUT"/leukedge-*-py3-none-any.whl)
  wheel="${wheels[-1]}"
fi
run "$PY" -m pip download --dest "$OUT" --only-binary=:all: "${platforms[@]}" \
  --python-version 311 --implementation cp --abi cp311 \
  -c "$HERE/pi-constraints.txt" "${wheel}[edge,sign,station]"
run cp "$HERE/pi-constraints.txt" "$OUT/"
note "wheelhouse ready: $OUT"
