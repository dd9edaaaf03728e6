#!/usr/bin/env bash
# Makes sure libyara is there for the yara plugin: Debian's libyara-dev
# (headers and pkg-config file for cgo; it pulls in the run-time libyara9)
# and the `yara` command, which `make bench` compares the plugin against.
# github.com/hillu/go-yara/v4 v4.2.4 builds against libyara 4.2.x, what
# Debian bookworm ships (4.2.3); go-yara v4.3 refuses it at compile time.
set -euo pipefail
have() { pkg-config --exists yara 2>/dev/null && command -v yara >/dev/null 2>&1; }
if command -v pkg-config >/dev/null 2>&1 && have; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "libyara is missing; installing libyara-dev, yara and pkg-config" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libyara-dev yara pkg-config >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
libyara is missing (the yara plugin links it through cgo). Install it, then re-run:

    sudo apt-get update && sudo apt-get install -y libyara-dev yara pkg-config
MSG
exit 1
