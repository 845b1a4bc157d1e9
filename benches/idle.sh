#!/usr/bin/env bash
# Redis's CPU while nothing happens: the fixed background cost of the module (its sweep
# timer) and of idle edges (lease renewals, probes).
#
# Three runs, each with a fresh redis-server on a free loopback port:
#   plain    redis-server without the module
#   module   redis-server with the module
#   edges    redis-server with the module + EDGES idle edges (each --workers 1)
# Each run waits WAIT seconds, then reads Redis's utime+stime from /proc/PID/stat before
# and after MEASURE seconds and prints ms of CPU per second, and with the module how often
# its sweep timer fired per second (roomcast_sweep_ticks in INFO roomcast; it fires only
# when something is due, at least every 10 s). Stops everything it started.
#
# It builds nothing: the binaries come from ROOT (default this repository), so the same
# script measures an old and a new build:
#   ROOT=/path/to/old/checkout benches/idle.sh ; benches/idle.sh
#     $ROOT/target/release/libroomcast.so, $ROOT/target/release/roomcast-edge
#
# Env knobs: ROOT, EDGES (2), WAIT (5 s), MEASURE (60 s; /proc counts CPU in clock
#            ticks, so the resolution is 1000 / CLK_TCK / MEASURE ms/s), REDIS_SERVER
#            (redis-server).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ROOT:-$HERE}
EDGES=${EDGES:-2}
WAIT=${WAIT:-5}
MEASURE=${MEASURE:-60}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
MODULE="$ROOT/target/release/libroomcast.so"
EDGE_BIN="$ROOT/target/release/roomcast-edge"

for tool in "$REDIS_SERVER" redis-cli python3 getconf; do
    command -v "$tool" >/dev/null || { echo "idle.sh: $tool not found" >&2; exit 1; }
done
for f in "$MODULE" "$EDGE_BIN"; do
    [ -f "$f" ] || { echo "idle.sh: $f not found (build it: cargo build --release -p roomcast-module -p roomcast-edge)" >&2; exit 1; }
done
TICKS=$(getconf CLK_TCK)

WORK=$(mktemp -d)
PORT=""
SERVER_PID=""
EDGE_PIDS=()

stop_all() {
    for pid in "${EDGE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    EDGE_PIDS=()
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_all
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

# start_redis [--loadmodule path]: a fresh server on a free port, waited for.
start_redis() {
    PORT=$(free_port)
    "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$PORT.log" "$@" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then return; fi
        sleep 0.05
    done
    echo "idle.sh: redis-server did not start" >&2
    cat "$WORK/redis-$PORT.log" >&2
    exit 1
}

# start_edge N: an idle edge with one worker, waited for until it listens.
start_edge() {
    local out="$WORK/edge$1.out"
    "$EDGE_BIN" --redis "redis://127.0.0.1:$PORT/" --workers 1 --allow-anonymous \
        --listen 127.0.0.1:0 --node-id "idle$1" >"$out" 2>&1 &
    EDGE_PIDS+=($!)
    for _ in $(seq 200); do
        if grep -q 'listening on' "$out"; then return; fi
        sleep 0.05
    done
    echo "idle.sh: edge $1 did not start" >&2
    cat "$out" >&2
    exit 1
}

# Redis's user + system CPU so far, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name in field 2 may hold spaces, so count from after its ')').
cpu_ticks() {
    sed 's/^.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}'
}

# The module's sweep timer firings so far ("-" without the module).
sweep_ticks() {
    local n
    n=$(redis-cli -h 127.0.0.1 -p "$PORT" info roomcast 2>/dev/null | tr -d '\r' | sed -n 's/^roomcast_sweep_ticks://p')
    echo "${n:--}"
}

# measure LABEL: waits WAIT s, then prints Redis's ms of CPU per second over MEASURE s
# and the sweep timer's firings per second.
measure() {
    sleep "$WAIT"
    local before after wakes_before wakes_after
    wakes_before=$(sweep_ticks)
    before=$(cpu_ticks)
    sleep "$MEASURE"
    after=$(cpu_ticks)
    wakes_after=$(sweep_ticks)
    python3 -c "
import sys
before, after, hz, measure, label, w0, w1 = sys.argv[1:]
t = int(after) - int(before)
wakes = '-' if '-' in (w0, w1) else f'{(int(w1) - int(w0)) / float(measure):.2f}/s'
print(f'{label:<8} {t * 1000 / int(hz) / float(measure):7.2f} ms/s  ({t} ticks in {measure} s)  sweep timer {wakes}')
" "$before" "$after" "$TICKS" "$MEASURE" "$1" "$wakes_before" "$wakes_after"
}

echo "idle.sh: ROOT=$ROOT EDGES=$EDGES WAIT=$WAIT s MEASURE=$MEASURE s (resolution $(python3 -c "print(round(1000/$TICKS/$MEASURE, 2))") ms/s)"
echo "run      Redis CPU"

start_redis
measure plain
stop_all

start_redis --loadmodule "$MODULE"
measure module
stop_all

start_redis --loadmodule "$MODULE"
for n in $(seq "$EDGES"); do start_edge "$n"; done
measure edges
stop_all
