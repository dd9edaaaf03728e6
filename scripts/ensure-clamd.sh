#!/usr/bin/env bash
# Makes sure clamd (Debian's clamav-daemon) is installed, and Debian's
# clamdscan, which `make bench` measures us against. We never use the
# system service: tests and `make run` start a private clamd as a child
# process from a generated config, on the repo's own signatures.
set -euo pipefail
if { command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ]; } && command -v clamdscan >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "clamd or clamdscan is missing; installing clamav-daemon clamdscan" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clamav-daemon clamdscan >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
clamd or clamdscan is missing. Install them (the system service is not used), then re-run:

    sudo apt-get update && sudo apt-get install -y clamav-daemon clamdscan
MSG
exit 1
