#!/usr/bin/env bash
# Makes sure libyara is there for the yara plugin: Debian's libyara-dev
# (headers and pkg-config file for cgo; it pulls in the run-time libyara9),
# a C compiler for cgo (the only cgo in the module), and the `yara`
# command, which `make bench` compares the plugin against.
# github.com/hillu/go-yara/v4 v4.2.4 builds against libyara 4.2.x, what
# Debian bookworm ships (4.2.3); go-yara v4.3 refuses it at compile time.
set -euo pipefail
have() { pkg-config --exists yara 2>/dev/null && command -v yara >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1; }
if command -v pkg-config >/dev/null 2>&1 && have; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  echo "libyara is missing; installing libyara-dev, yara, pkg-config and gcc" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libyara-dev yara pkg-config gcc libc6-dev >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
libyara is missing (the yara plugin links it through cgo). Install it, then re-run:

    sudo apt-get update && sudo apt-get install -y libyara-dev yara pkg-config gcc libc6-dev
MSG
exit 1
