# Helpers shared by the deploy scripts (sourced, not run).
# shellcheck shell=bash

DRY_RUN=${DRY_RUN:-0}

# note MSG: a message on stderr.
note() { echo "${0##*/}: $*" >&2; }

# die MSG: the message on stderr, then exit 1.
die() {
  note "$*"
  exit 1
}

# run CMD ARG...: run a command, or with DRY_RUN=1 only print it after "+ ".
run() {
  if ((DRY_RUN)); then
    echo "+ $*"
  else
    "$@"
  fi
}
