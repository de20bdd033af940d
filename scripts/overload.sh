#!/usr/bin/env bash
# The overload suite at scale, against the release build: slowloris connections, 24 MiB
# batches of empty entries, oversized headers, idle connections, many queues and subscribers,
# all at once while a normal client publishes (crates/syncbrok/tests/overload.rs). CI runs it
# at scale 1 with the other tests.
#
#   scripts/overload.sh              # scale 10: 2,000 slowloris and 1,500 idle connections,
#                                    # 40 floods, 100 oversized heads, 200 queues x 4 subscribers
#   OVERLOAD_SCALE=3 scripts/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Thousands of sockets on the test's side and the broker's.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
OVERLOAD_SCALE="${OVERLOAD_SCALE:-10}" \
    cargo test --release -p syncbrok --test overload -- --nocapture
