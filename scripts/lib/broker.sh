# Sourced by the test scripts: builds syncbrok and starts `syncbrok serve` on a free port with a
# temporary data directory; sets $url and stops the broker when the script exits.
cargo build --quiet --locked -p syncbrok
broker_dir=$(mktemp -d)
target/debug/syncbrok serve --listen 127.0.0.1:0 --data "$broker_dir/data" \
  >"$broker_dir/out" 2>"$broker_dir/log" &
broker_pid=$!
stop_broker() {
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
url=""
for _ in $(seq 100); do
  url=$(sed -n 's/^syncbrok listening on //p' "$broker_dir/out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the broker did not start"; cat "$broker_dir/log"; exit 1; }
