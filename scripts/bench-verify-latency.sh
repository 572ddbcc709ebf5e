#!/bin/sh
# Planning latency with verification: cold (empty package store), cached, and verification off.
# Usage: sh scripts/bench-verify-latency.sh  (from the repository root, after cargo build --release;
# uses ports 8711 and 8712 and /tmp/lat-dd, /tmp/lat-off)
set -e
BIN=./target/release/dynamcp
rm -rf /tmp/lat-dd /tmp/lat-off && mkdir -p /tmp/lat-dd /tmp/lat-off
turn() { # port message
  curl -s -o /tmp/lat-body.json -w '%{time_total}' "http://127.0.0.1:$1/api/chat" \
    -H 'content-type: application/json' -d "{\"message\": \"$2\"}"
}
start() { # data-dir port verify
  DYNAMCP_VERIFY_SERVERS=$3 DYNAMCP_LOG=warn $BIN serve --data-dir "$1" --addr "127.0.0.1:$2" >/dev/null 2>"$1/log" &
  for i in $(seq 1 120); do curl -sf "http://127.0.0.1:$2/health" >/dev/null && return 0; sleep 1; done
  echo "no start"; exit 1
}
start /tmp/lat-dd 8711 true
start /tmp/lat-off 8712 false
for q in "What time is it in Tokyo?" "Check my Gmail for invoices and extract the data into a Google Sheet"; do
  off=$(turn 8712 "$q"); cold=$(turn 8711 "$q"); warm=$(turn 8711 "$q"); off2=$(turn 8712 "$q")
  echo "$q | verification off: ${off}s / ${off2}s | cold (empty package store): ${cold}s | cached: ${warm}s"
  python3 -c "import json; print(json.load(open('/tmp/lat-body.json'))['reply'][:1500])"
done
kill $(jobs -p) 2>/dev/null || true
