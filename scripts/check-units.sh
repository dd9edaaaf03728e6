#!/usr/bin/env bash
# Checks the systemd units under deploy/ with `systemd-analyze verify`,
# when the machine has it. The unit names the installed binary
# (/usr/local/bin/microengine); the check runs on a copy that names the
# one just built (or /bin/true before a build), as verify wants an
# executable there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "systemd-analyze not found: deploy/*.service not checked"
	exit 0
fi
bin=$PWD/bin/microengine
[ -x "$bin" ] || bin=/bin/true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for unit in deploy/*.service; do
	sed "s|/usr/local/bin/microengine|$bin|g" "$unit" >"$tmp/$(basename "$unit")"
	# Warnings are errors: verify prints them and still exits 0.
	out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/$(basename "$unit")" 2>&1) || fail=1
	if [ -n "$out" ]; then
		echo "$unit:"
		echo "$out"
		fail=1
	fi
done
exit $fail
