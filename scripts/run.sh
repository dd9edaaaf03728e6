#!/usr/bin/env bash
# `make run`: the engine's main job end to end on the default engine.hcl.
# Starts the engine (whose clamav plugin runs its own clamd on the repo's
# test signatures) and the local marketplace simulator on the sample set;
# bounties flow, answers come back, and the scoreboard is shown.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-28}
RATE=${RATE:-9}
mkdir -p build
go run ./internal/cmd/mksamples build/samples

pids=()
cleanup() {
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

wait_for() { # FILE SECONDS WHAT
  local deadline=$((SECONDS + $2))
  until [ -s "$1" ]; do
    if ((SECONDS > deadline)); then echo "make run: $3 did not start (see above)" >&2; exit 1; fi
    sleep 0.1
  done
}

echo "==> the engine: bin/microengine run -config engine.hcl"
rm -f build/data/listen.addr
bin/microengine run -config engine.hcl &
pids+=($!)
wait_for build/data/listen.addr 30 "the engine"

echo
echo "==> what the running engine reports: bin/microengine plugins -config engine.hcl"
bin/microengine plugins -config engine.hcl
echo
echo "==> the marketplace simulator: $COUNT bounties at $RATE/s from build/samples"
status=0
bin/microengine simulate -config engine.hcl -samples build/samples -count "$COUNT" -rate "$RATE" || status=$?
echo
echo "==> the audit trail it keeps: bin/microengine bounties -config engine.hcl -limit 5"
bin/microengine bounties -config engine.hcl -limit 5 || true
echo
echo "==> stopping the engine (SIGTERM: in-flight bounties are answered first)"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
exit $status
