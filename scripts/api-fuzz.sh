#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP API from its own OpenAPI document: schemathesis generates
# requests for every operation of /openapi.json (including stateful sequences) and fails on any
# 5xx. Installs schemathesis into a virtualenv under target/ the first time.
#
#   scripts/api-fuzz.sh [MAX_EXAMPLES]     (default 60 per operation; CI uses the default)
set -euo pipefail
cd "$(dirname "$0")/.."
max_examples="${1:-60}"
venv=target/api-fuzz-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
. scripts/lib/broker.sh
# A queue to aim at, so that operations on /v1/queues/{queue}/… get past the 404.
target/debug/syncbrok --url "$url" queue create q >/dev/null
# The events stream never ends by design (it is tested by crates/frontend/tests/watchers.rs
# and the CLI's tail test): every call would only wait out the client's timeout.
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$url/openapi.json" \
  --checks not_a_server_error \
  --exclude-path '/v1/queues/{queue}/events' \
  --max-examples "$max_examples" \
  --no-color
if grep -qi "panicked" "$broker_dir/log"; then
  echo "the broker panicked during fuzzing:"; grep -i -A5 "panicked" "$broker_dir/log"; exit 1
fi
echo "api fuzz: no server error"
