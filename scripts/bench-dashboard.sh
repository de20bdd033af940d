#!/usr/bin/env bash
# How fast the dashboard's pages answer on a queue of a million messages (docs/dashboard.md,
# "Bounds"). Builds the release binary, starts it on a temporary directory, publishes
# DASH_MESSAGES messages (default 1,000,000, 100-byte bodies) in batches of 1,000 — each batch
# a root and a chain of 999 children below it, its subscriber paused, so that every message
# stays undelivered and the overview's search for the messages holding back the most has the
# most to look at — then times each page with curl: the median of DASH_ROUNDS (default 9)
# requests, next to `/healthz` (the raw HTTP round trip) in the same run.
#
#   scripts/bench-dashboard.sh                   # 1 M messages
#   DASH_MESSAGES=100000 scripts/bench-dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${DASH_MESSAGES:-1000000}
rounds=${DASH_ROUNDS:-9}
BROKER_PROFILE=release
. scripts/lib/broker.sh
pid=$broker_pid
dir=$broker_dir

curl -fsS -X PUT "$url/v1/queues/big" -d '{}' >/dev/null
curl -fsS -X POST "$url/v1/queues/big/subscribers" -H 'content-type: application/json' \
  -d '{"endpoint": "http://127.0.0.1:9/"}' >/dev/null
curl -fsS -X POST "$url/v1/queues/big/subscribers/1/pause" >/dev/null

# One batch body: a root, then each entry the child of the one before it.
python3 - "$dir/batch.json" <<'PY'
import json, sys
body = "x" * 100
entries = [{"body": body}] + [{"body": body, "parent_index": i} for i in range(999)]
json.dump({"messages": entries}, open(sys.argv[1], "w"))
PY
start=$(date +%s)
for _ in $(seq $((messages / 1000))); do
  curl -fsS -X POST "$url/v1/queues/big/messages/batch" -H 'content-type: application/json' \
    --data-binary @"$dir/batch.json" >/dev/null
done
echo "published $messages messages in $(( $(date +%s) - start )) s"
some=$(curl -fsS "$url/v1/queues/big/messages?limit=1" | sed 's/.*"id":"\([^"]*\)".*/\1/')
last=$(curl -fsS "$url/v1/queues/big/messages?state=waiting&limit=1&after=$some" | sed 's/.*"id":"\([^"]*\)".*/\1/')

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_page() {
  for _ in $(seq "$rounds"); do
    curl -fsS -o /dev/null -w '%{time_total}\n' "$url$1"
  done | median
}
base=$(time_page /healthz)
printf '%-58s %10s %8s\n' page "median ms" "× /healthz"
for page in /healthz /ui "/ui/queues/big" "/ui/queues/big?state=waiting&after=$some" \
  "/ui/queues/big/messages/$some" "/ui/queues/big/messages/$last" /ui/dead-letters /ui/subscribers; do
  t=$(time_page "$page")
  printf '%-58s %10.2f %8.1f\n' "${page:0:58}" "$(echo "$t * 1000" | bc -l)" "$(echo "$t / $base" | bc -l)"
done
# The overview looks for the messages holding back the most at most every 5 s: once more,
# after that, for its cold cost.
sleep 6
cold=$(curl -fsS -o /dev/null -w '%{time_total}\n' "$url/ui")
printf '%-58s %10.2f %8.1f\n' "/ui (cold: blocking roots looked for)" "$(echo "$cold * 1000" | bc -l)" "$(echo "$cold / $base" | bc -l)"
curl -fsS "$url/ui" | grep -o 'holds back [^<]*' | head -3
echo "RSS of the broker: $(ps -o rss= -p $pid) KiB"
