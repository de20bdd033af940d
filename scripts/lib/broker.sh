# Sourced by the scripts that need a running broker. Builds syncbrok (the debug build, or the
# release one with BROKER_PROFILE=release; SYNCBROK_BIN=path runs that binary, unbuilt) and
# starts `syncbrok serve` on a free port with its data in $broker_dir (made here unless the
# script made it first, e.g. to write a configuration), with `--config $BROKER_CONFIG` when
# that is set. Sets $url and $broker_pid; stops the broker and removes $broker_dir on exit.

# Prints the rest of the first line of FILE that starts with PREFIX, waiting up to 10 s for it.
wait_for_line() {
  local found=""
  for _ in $(seq 100); do
    found=$(sed -n "s|^$2||p" "$1" | head -n 1)
    [ -n "$found" ] && break
    sleep 0.1
  done
  printf '%s' "$found"
}

broker_bin=${SYNCBROK_BIN:-}
if [ -z "$broker_bin" ]; then
  if [ "${BROKER_PROFILE:-debug}" = release ]; then
    cargo build --quiet --locked --release -p syncbrok
    broker_bin=target/release/syncbrok
  else
    cargo build --quiet --locked -p syncbrok
    broker_bin=target/debug/syncbrok
  fi
fi
broker_dir=${broker_dir:-$(mktemp -d)}
broker_args=(serve --listen 127.0.0.1:0 --data "$broker_dir/data")
[ -n "${BROKER_CONFIG:-}" ] && broker_args+=(--config "$BROKER_CONFIG")
"$broker_bin" "${broker_args[@]}" >"$broker_dir/out" 2>"$broker_dir/log" &
broker_pid=$!
stop_broker() {
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
url=$(wait_for_line "$broker_dir/out" "syncbrok listening on ")
[ -n "$url" ] || { echo "the broker did not start"; cat "$broker_dir/log"; exit 1; }
