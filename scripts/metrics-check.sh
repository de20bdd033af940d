#!/usr/bin/env bash
# Checks /metrics with Prometheus' own linter (`promtool check metrics`, from Debian's
# `prometheus` package, installed by this script) after real traffic: a parent and its child
# delivered to a real subscriber (`syncbrok sink`), so that every histogram has observations.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  # The package's service must not start here: policy-rc.d says no to every start.
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
  $sudo rm -f /usr/sbin/policy-rc.d
fi

. scripts/lib/broker.sh

target/debug/syncbrok sink --listen 127.0.0.1:0 >"$broker_dir/sink" 2>&1 &
sink_pid=$!
trap 'kill "$sink_pid" 2>/dev/null || true; stop_broker' EXIT
sink=$(wait_for_line "$broker_dir/sink" "syncbrok sink listening on ")
[ -n "$sink" ] || { echo "the sink did not start"; exit 1; }

curl -fsS -X PUT "$url/v1/queues/m" -d '{}' >/dev/null
curl -fsS -X POST "$url/v1/queues/m/subscribers" -H 'content-type: application/json' \
  -d "{\"endpoint\": \"$sink\"}" >/dev/null
curl -fsS -X POST "$url/v1/queues/m/subscribers/1/pause" >/dev/null
# Paused until both are in: the child surely waits for its parent.
parent=$(curl -fsS -X POST "$url/v1/queues/m/messages" -d parent | sed 's/.*"id":"\([^"]*\)".*/\1/')
curl -fsS -X POST "$url/v1/queues/m/messages" -H "syncbrok-parent: $parent" -d child >/dev/null
curl -fsS -X POST "$url/v1/queues/m/subscribers/1/resume" >/dev/null

metrics=$broker_dir/metrics.txt
for _ in $(seq 100); do
  curl -fsS "$url/metrics" >"$metrics"
  grep -q '^syncbrok_parent_ack_to_child_release_seconds_count{queue="m"} 1$' "$metrics" &&
    grep -q '^syncbrok_publish_to_first_delivery_seconds_count{queue="m"} 2$' "$metrics" && break
  sleep 0.1
done
for want in \
  'syncbrok_publish_to_first_delivery_seconds_count{queue="m"} 2' \
  'syncbrok_parent_ack_to_child_release_seconds_count{queue="m"} 1' \
  'syncbrok_attempt_duration_seconds_count{queue="m",subscriber="1"} 2' \
  'syncbrok_subscriber_consecutive_failures{queue="m",subscriber="1"} 0'; do
  grep -qxF "$want" "$metrics" || { echo "missing: $want"; grep -E '_count|subscriber_' "$metrics"; exit 1; }
done
promtool check metrics <"$metrics"
# The subscriber's health in the API says the same of its attempts.
health=$(curl -fsS "$url/v1/queues/m/subscribers/1")
echo "$health" | grep -q '"attempts_timed":2' || { echo "subscriber health: $health"; exit 1; }
echo "$health" | grep -q '"attempt_p99_ms":[0-9]' || { echo "subscriber health: $health"; exit 1; }
echo "metrics-check: promtool accepts /metrics; every histogram observed"
