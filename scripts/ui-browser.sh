#!/usr/bin/env bash
# End-to-end test of the web dashboard (/ui) in a real headless browser: Debian's Chromium
# driven by playwright-core (scripts/ui/dashboard.mjs) against a broker with auth on.
# Screenshots go to target/ui-screenshots/.
#
# SYNCBROK_BIN=path runs that binary and skips the build (scripts/lib/broker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Playwright's own browser builds are downloaded from a CDN that this network (and CI) cannot
# reach, so the browser is Debian's and playwright-core is told where it is.
if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  apt_install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
  }
  # Update only when the package lists do not know chromium, or are too old to fetch it.
  candidate=$(apt-cache policy chromium 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    $sudo apt-get update
    apt_install
  elif ! apt_install; then
    $sudo apt-get update
    apt_install
  fi
fi

# playwright-core, not playwright: it has no install step that downloads a browser. The skip
# variable is a second guard in case a future version grows one.
(cd scripts/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

broker_dir=$(mktemp -d)
# Fresh tokens each run: the broker is on loopback only, but nothing should depend on a
# well-known token. The dashboard's login takes the same bearer tokens as the API.
admin_token="ui-admin-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
read_token="ui-read-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
cat >"$broker_dir/syncbrok.yml" <<EOF
auth:
  tokens:
    - {token: "$admin_token", role: admin}
    - {token: "$read_token", role: read}
EOF
BROKER_CONFIG="$broker_dir/syncbrok.yml"
. scripts/lib/broker.sh

mkdir -p target/ui-screenshots
status=0
SYNCBROK_URL="$url" UI_ADMIN_TOKEN="$admin_token" UI_READ_TOKEN="$read_token" \
  UI_SCREENSHOTS=target/ui-screenshots node scripts/ui/dashboard.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- broker log (last 40 lines) ---"
  tail -n 40 "$broker_dir/log"
fi
exit "$status"
