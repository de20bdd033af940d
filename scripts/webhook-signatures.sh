#!/usr/bin/env bash
# Verifies syncbrok's webhook signatures with an independent implementation of Standard
# Webhooks (the `standardwebhooks` Python package, installed into target/ by this script).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/webhook-check-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==1.1.0"
fi
cargo build --quiet --locked -p syncbrok
data=$(mktemp -d)
out=$(mktemp)
target/debug/syncbrok serve --listen 127.0.0.1:0 --data "$data/data" >"$out" 2>"$data/log" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$out"; }
trap cleanup EXIT
for _ in $(seq 100); do
  url=$(sed -n 's/^syncbrok listening on //p' "$out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the broker did not start"; cat "$data/log"; exit 1; }
"$venv/bin/python" scripts/webhook-signatures.py "$url"
