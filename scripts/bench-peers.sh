#!/usr/bin/env bash
# Side-by-side fan-out benchmark: syncbrok, the raw HTTP limit, NATS JetStream and RabbitMQ,
# on one workload, in one run, on this machine.
#
#   scripts/bench-peers.sh                 # defaults: 50,000 × 1 KiB, 64 publishers, 2 subscribers, 3 rounds
#   scripts/bench-peers.sh --batch 100     # publishes batched 100 per request
#   scripts/bench-peers.sh --json out.jsonl --rounds 5
#
# Installs nats-server and rabbitmq-server from Debian when they are missing, starts both on
# loopback with their data in a temporary directory, builds and runs
# `syncbrok-bench fanout --targets syncbrok,http-limit,nats,rabbitmq` with any extra arguments
# given here, and stops what it started (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null || [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "bench-peers: installing nats-server and rabbitmq-server from Debian" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        nats-server rabbitmq-server >/dev/null
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d "${TMPDIR:-/tmp}/syncbrok-peers.XXXXXX")
# RabbitMQ starts Erlang's port mapper daemon if none runs; stop it after if it was ours.
epmd_was_running=""
pgrep -x epmd >/dev/null && epmd_was_running=yes
nats_pid=""
rabbit_node="syncbrokbench$$@localhost"
export HOME_FOR_RABBIT="$work/rabbitmq"
mkdir -p "$work/nats" "$HOME_FOR_RABBIT/mnesia" "$HOME_FOR_RABBIT/log"

rabbit_env() {
    env HOME="$HOME_FOR_RABBIT" \
        RABBITMQ_NODENAME="$rabbit_node" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$amqp_port" \
        RABBITMQ_DIST_PORT="$dist_port" \
        RABBITMQ_MNESIA_BASE="$HOME_FOR_RABBIT/mnesia" \
        RABBITMQ_LOG_BASE="$HOME_FOR_RABBIT/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$HOME_FOR_RABBIT/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$HOME_FOR_RABBIT/rabbitmq" \
        ERL_CRASH_DUMP="$HOME_FOR_RABBIT/erl_crash.dump" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none" \
        "$@"
}

stop_all() {
    if [ -n "$nats_pid" ]; then
        kill "$nats_pid" 2>/dev/null || true
        wait "$nats_pid" 2>/dev/null || true
    fi
    if [ -n "${amqp_port:-}" ]; then
        rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$rabbit_node" stop >/dev/null 2>&1 || true
        [ -z "${rabbit_pid:-}" ] || kill "$rabbit_pid" 2>/dev/null || true
        [ -z "${rabbit_launcher:-}" ] || wait "$rabbit_launcher" 2>/dev/null || true
        [ -n "$epmd_was_running" ] || pkill -x epmd 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_all EXIT INT TERM

# NATS JetStream: file storage under $work/nats. NATS 2.9 fsyncs on an interval, not per message.
nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
nats_pid=$!

# RabbitMQ: no plugins, data and logs under $work/rabbitmq. Its Erlang schedulers do not
# busy-wait (+sbwt none): an idle RabbitMQ would otherwise take CPU from the target measured.
amqp_port=$(free_port)
dist_port=$(free_port)
echo "[]." >"$HOME_FOR_RABBIT/enabled_plugins"
# The server and rabbitmqctl share this cookie; made here so that neither makes its own.
python3 -c 'import secrets; print(secrets.token_hex(16).upper(), end="")' >"$HOME_FOR_RABBIT/.erlang.cookie"
chmod 400 "$HOME_FOR_RABBIT/.erlang.cookie"
printf 'loopback_users = none\n' >"$HOME_FOR_RABBIT/rabbitmq.conf"
rabbit_env /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rabbitmq.out" 2>&1 &
rabbit_launcher=$!

echo "bench-peers: building syncbrok and syncbrok-bench (release)" >&2
cargo build --release --locked -q -p syncbrok -p syncbrok-bench

for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    sleep 0.1
done
# await_startup fails at once while the node has not registered with epmd yet: retry.
rabbit_up=""
for _ in $(seq 1 60); do
    if rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$rabbit_node" await_startup --timeout 30 >"$work/await.out" 2>&1; then
        rabbit_up=yes
        break
    fi
    sleep 1
done
if [ -z "$rabbit_up" ]; then
    echo "bench-peers: RabbitMQ did not start; its output:" >&2
    cat "$work/await.out" "$work/rabbitmq.out" >&2
    exit 1
fi
rabbit_pid=$(rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$rabbit_node" eval 'os:getpid().' | tr -dc '0-9')

echo "bench-peers: nats-server $(nats-server --version | awk '{print $NF}') on :$nats_port (pid $nats_pid)," \
    "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) on :$amqp_port (pid $rabbit_pid)" >&2

# All four targets unless the caller chose some.
targets=(--targets syncbrok,http-limit,nats,rabbitmq)
for arg in "$@"; do
    case "$arg" in --targets | --targets=*) targets=() ;; esac
done

mkdir -p target/bench-data
target/release/syncbrok-bench fanout \
    "${targets[@]}" \
    --dir target/bench-data \
    --nats-url "nats://127.0.0.1:$nats_port" --nats-pid "$nats_pid" \
    --rabbitmq-url "amqp://guest:guest@127.0.0.1:$amqp_port/%2f" --rabbitmq-pid "$rabbit_pid" \
    "$@"
