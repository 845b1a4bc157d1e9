#!/usr/bin/env bash
# Idle memory per connection as a user sees it: N token-authenticated WebSocket
# connections held open by an independent client (benches/idle_user.py, python stdlib
# only, not the project's generator), and the edges' RSS growth per connection read at
# fixed delays after the last connect (default 1.5 s and 5 s), with the kernel's Slab
# growth alongside for context.
#
# Starts a fresh redis-server with the module on a free loopback port and EDGES edges
# (each --workers 1, --jwt-secret, default lease, --max-conns above what it will hold),
# runs the client, and stops everything it started.
#
# It builds nothing: the binaries come from ROOT (default this repository), so the same
# script measures an old and a new build:
#   ROOT=/path/to/old/checkout benches/idle_user.sh ; benches/idle_user.sh
#     $ROOT/target/release/libroomcast.so, $ROOT/target/release/roomcast-edge
#
# Env knobs: ROOT, EDGES (2), N (10000), AUTH (token, or user for anonymous `?user=`
#            connections; the edges then also get --allow-anonymous), READS (1.5,5:
#            seconds after the last connect), SOURCES (4: source addresses
#            127.0.0.1..N), PARALLEL (256: handshakes the client keeps in flight),
#            REDIS_SERVER (redis-server).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ROOT:-$HERE}
EDGES=${EDGES:-2}
N=${N:-10000}
AUTH=${AUTH:-token}
READS=${READS:-1.5,5}
SOURCES=${SOURCES:-4}
PARALLEL=${PARALLEL:-256}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
MODULE="$ROOT/target/release/libroomcast.so"
EDGE_BIN="$ROOT/target/release/roomcast-edge"
SECRET=idle-user-bench-secret

for tool in "$REDIS_SERVER" redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "idle_user.sh: $tool not found" >&2; exit 1; }
done
for f in "$MODULE" "$EDGE_BIN"; do
    [ -f "$f" ] || { echo "idle_user.sh: $f not found (build it: cargo build --release -p roomcast-module -p roomcast-edge)" >&2; exit 1; }
done
case "$AUTH" in
    token) AUTH_ARGS=() ;;
    user) AUTH_ARGS=(--allow-anonymous) ;;
    *) echo "idle_user.sh: AUTH must be token or user" >&2; exit 1 ;;
esac
# The client holds N sockets, each edge about N / EDGES plus its Redis connections.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((N + 100)) ]; then
    echo "idle_user.sh: ulimit -n is $(ulimit -n), the client needs more than N=$N" >&2
    exit 1
fi
MAX_CONNS=$((N / EDGES + 1000))

WORK=$(mktemp -d)
PORT=""
SERVER_PID=""
EDGE_PIDS=()
EDGE_ARGS=()

cleanup() {
    for pid in "${EDGE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port=6379
    while [ "$port" = 6379 ]; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    done
    echo "$port"
}

start_redis() {
    PORT=$(free_port)
    "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" --loadmodule "$MODULE" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then return; fi
        sleep 0.05
    done
    echo "idle_user.sh: redis-server did not start" >&2
    cat "$WORK/redis.log" >&2
    exit 1
}

# start_edge N: an edge with one worker, waited for until it listens; adds its
# HOST:PORT:PID to EDGE_ARGS.
start_edge() {
    local out="$WORK/edge$1.out" pid addr
    # Created here, not by the child's redirection, so the first read below cannot race it.
    : >"$out"
    "$EDGE_BIN" --redis "redis://127.0.0.1:$PORT/" --workers 1 --jwt-secret "$SECRET" \
        "${AUTH_ARGS[@]}" --max-conns "$MAX_CONNS" \
        --listen 127.0.0.1:0 --node-id "idleuser$1" >"$out" 2>&1 &
    pid=$!
    EDGE_PIDS+=("$pid")
    for _ in $(seq 200); do
        addr=$(sed -n 's/.*listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$out" | head -n 1)
        if [ -n "$addr" ]; then
            EDGE_ARGS+=(--edge "$addr:$pid")
            return
        fi
        sleep 0.05
    done
    echo "idle_user.sh: edge $1 did not start" >&2
    cat "$out" >&2
    exit 1
}

start_redis
for n in $(seq "$EDGES"); do start_edge "$n"; done
# Let the edges finish starting up (leases, inbox readers) before the baseline.
sleep 1

echo "idle_user.sh: ROOT=$ROOT EDGES=$EDGES N=$N AUTH=$AUTH READS=$READS PARALLEL=$PARALLEL"
status=0
python3 "$HERE/benches/idle_user.py" "${EDGE_ARGS[@]}" -n "$N" --auth "$AUTH" \
    --secret "$SECRET" --reads "$READS" --sources "$SOURCES" \
    --parallel "$PARALLEL" --extra-pid "$SERVER_PID" || status=$?
for n in $(seq "$EDGES"); do
    if grep -qiE 'error|panic' "$WORK/edge$n.out"; then
        echo "idle_user.sh: edge $n logged:" >&2
        grep -iE 'error|panic' "$WORK/edge$n.out" | head -n 5 >&2
    fi
done
exit "$status"
