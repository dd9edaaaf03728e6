#!/usr/bin/env bash
# Makes sure clamd (Debian's clamav-daemon) is installed. We never use the
# system service: tests and `make run` start a private clamd as a child
# process from a generated config, on the repo's own signatures.
set -euo pipefail
if command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "clamd is missing; installing clamav-daemon" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clamav-daemon >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
clamd is missing. Install it (the system service is not used), then re-run:

    sudo apt-get update && sudo apt-get install -y clamav-daemon
MSG
exit 1
