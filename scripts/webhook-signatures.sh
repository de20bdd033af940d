#!/usr/bin/env bash
# Verifies syncbrok's webhook signatures with an independent implementation of Standard
# Webhooks (the `standardwebhooks` Python package) and its delivery batches with the
# CloudEvents SDK (`cloudevents`), both installed into target/ by this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/webhook-check-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import standardwebhooks, cloudevents.core" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==1.1.0" "cloudevents==2.2.0"
fi
. scripts/lib/broker.sh
"$venv/bin/python" scripts/webhook-signatures.py "$url"
