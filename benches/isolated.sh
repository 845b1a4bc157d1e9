#!/usr/bin/env bash
# The isolated Redis figure: Redis's CPU per message × node when a backend drives
# pipelined RC.PUBLISH into rooms spread over N nodes, against a bare pipelined PUBLISH
# that reaches N subscribers, in the same run on the same server. Goal: RC.PUBLISH costs
# at most 1.5× bare PUBLISH per message × node.
#
# For each N in NODES, a fresh redis-server with the module on a free loopback port:
#   setup    N nodes leased (RC.NODE.LEASE, long TTL, renewed before every row); ROOMS
#            rooms room:000000000000 … (the names redis-benchmark's __rand_int__ makes),
#            each with one member connection on every node, so every publish reaches all
#            N nodes
#   bare     N subscribers, each SUBSCRIBEd to every room's channel; redis-benchmark runs
#            PUBLISH room:__rand_int__ <payload>: each message reaches N subscribers
#   rc       N subscribers, each SUBSCRIBEd to one node's live channel ({tag}:live:<node>,
#            partition 0's tag from RC.INFO, as the edge does); redis-benchmark runs
#            RC.PUBLISH room:__rand_int__ <payload>: N inbox appends + N live pushes
#   rc+hist  as rc with roomcast.history-len 100 (each message is also kept in its room)
#   rcm<B>   as rc, but B messages per RC.PUBLISHM (each to a random room), for each B in
#            BATCHES: what an edge sends under load. Each node gets one inbox entry and
#            one push per command; the subscribers count pushes (one per command), and
#            RC.INFO's published counter must move by every message
# The subscribers (a small python3 reader each, reading as fast as it can) count what they
# get; their own CPU is not measured. Each row is warmed up and sized by a short probe
# run (PROBE messages) so that it lasts about ROW_SECONDS, then Redis's utime+stime
# (/proc/PID/stat, clock ticks) is read around the timed run. A row fails loudly unless
# every subscriber got exactly every message (and, for rc, every inbox has entries and
# RC.INFO's published counter moved by the messages sent).
#
# It builds nothing: the module comes from ROOT (default this repository), so the same
# script measures an old and a new build:
#   ROOT=/path/to/old/checkout benches/isolated.sh ; benches/isolated.sh
#     $ROOT/target/release/libroomcast.so (cargo build --release -p roomcast-module)
#
# Env knobs: ROOT, NODES ("2"; e.g. "2 8"), ROOMS (100), ROW_SECONDS (6), PROBE (20000
#            messages), MESSAGES (fixed messages per row instead of sizing by the probe),
#            PIPELINE (16), CLIENTS (4), HISTORY (1: also the rc+hist row; 0: skip it),
#            BATCHES ("16 64": the rcm rows; "" skips them),
#            REDIS_SERVER (redis-server).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ROOT:-$HERE}
NODES=${NODES:-2}
ROOMS=${ROOMS:-100}
ROW_SECONDS=${ROW_SECONDS:-6}
PROBE=${PROBE:-20000}
MESSAGES=${MESSAGES:-}
PIPELINE=${PIPELINE:-16}
CLIENTS=${CLIENTS:-4}
HISTORY=${HISTORY:-1}
BATCHES=${BATCHES-16 64}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
MODULE="$ROOT/target/release/libroomcast.so"
# 100 bytes of JSON; the payload of benches/publish.sh and benches/benches/pure.rs.
PAYLOAD='{"type":"chat","user":"alice","text":"hello everyone in the lobby, this is a test msg!","n":1234567}'
# Long enough for any row; renewed before each one anyway.
LEASE_MS=600000

for tool in "$REDIS_SERVER" redis-cli redis-benchmark python3 getconf; do
    command -v "$tool" >/dev/null || { echo "isolated.sh: $tool not found" >&2; exit 1; }
done
[ -f "$MODULE" ] || { echo "isolated.sh: $MODULE not found (build it: cargo build --release -p roomcast-module)" >&2; exit 1; }
TICKS=$(getconf CLK_TCK)

WORK=$(mktemp -d)
PORT=""
SERVER_PID=""
SUB_PIDS=()
ROWS="$WORK/rows.tsv"
: >"$ROWS"

fail() {
    echo "isolated.sh: $*" >&2
    exit 1
}

stop_subscribers() {
    for pid in "${SUB_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SUB_PIDS=()
}
stop_all() {
    stop_subscribers
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

# The subscriber: subscribes to the channels given, then counts the messages it reads
# (the RESP push header of a "message" is counted in the raw byte stream, so reading
# stays cheap) and rewrites its count file every 0.1 s while busy, after 0.1 s of quiet
# and when stopped. The
# count file appears only once every subscription is confirmed: that is "ready".
cat >"$WORK/sub.py" <<'PY'
import os, signal, socket, sys, time

port, out, channels = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
MARK = b"\r\n$7\r\nmessage\r\n"
CONFIRM = b"\r\n$9\r\nsubscribe\r\n"

def write(count):
    with open(out + ".tmp", "w") as f:
        f.write(str(count))
    os.replace(out + ".tmp", out)

def command(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)

s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.sendall(command("SUBSCRIBE", *channels))
buf = b""
while buf.count(CONFIRM) < len(channels):
    data = s.recv(1 << 16)
    if not data:
        sys.exit("subscriber: connection closed before the subscriptions were confirmed")
    buf += data
count, tail, last = buf.count(MARK), buf[-(len(MARK) - 1):], time.monotonic()
write(count)
signal.signal(signal.SIGTERM, lambda *_: (write(count), os._exit(0)))
s.settimeout(0.1)
while True:
    try:
        data = s.recv(1 << 20)
    except socket.timeout:
        data = None
    if data == b"":
        break
    if data:
        chunk = tail + data
        count += chunk.count(MARK)
        tail = chunk[-(len(MARK) - 1):]
    now = time.monotonic()
    if data is None or now - last >= 0.1:
        write(count)
        last = now
write(count)
PY

free_port() {
    local port=6379
    while [ "$port" = 6379 ]; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    done
    echo "$port"
}

rcli() {
    redis-cli -h 127.0.0.1 -p "$PORT" "$@"
}

# start_redis: a fresh server with the module on a free port, waited for. Subscribers
# that fall behind are never cut off (their own CPU is not measured, and the delivery
# check would fail anyway): no pubsub output buffer limit.
start_redis() {
    PORT=$(free_port)
    "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --client-output-buffer-limit "pubsub 0 0 0" \
        --dir "$WORK" --logfile "$WORK/redis-$PORT.log" --loadmodule "$MODULE" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if rcli ping 2>/dev/null | grep -q PONG; then return; fi
        sleep 0.05
    done
    echo "isolated.sh: redis-server did not start" >&2
    cat "$WORK/redis-$PORT.log" >&2
    exit 1
}

# Redis's user + system CPU so far, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name in field 2 may hold spaces, so count from after its ')').
cpu_ticks() {
    sed 's/^.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}'
}

# room_name R: the name redis-benchmark makes of __rand_int__ = R (12 digits).
room_name() {
    printf 'room:%012d' "$1"
}

# rc_info FIELD: one scalar field of RC.INFO.
rc_info() {
    rcli RC.INFO | awk -v f="$1" 'prev == f { print; exit } { prev = $0 }'
}

# renew_leases N: every node's lease in every partition.
renew_leases() {
    local n
    for n in $(seq "$1"); do
        rcli RC.NODE.LEASE "node$n" "$LEASE_MS" >/dev/null
    done
}

# setup_rooms N: leases, then one member connection per room on each of the N nodes
# (connection n<n>.<r> of user u<n>.<r>), checked through RC.INFO and one RC.PUBLISH.
setup_rooms() {
    local nodes=$1 n r
    renew_leases "$nodes"
    for n in $(seq "$nodes"); do
        for r in $(seq 0 $((ROOMS - 1))); do
            echo "RC.CONNECT u$n.$r node$n n$n.$r"
            echo "RC.JOIN $(room_name "$r") node$n n$n.$r u$n.$r"
        done
    done >"$WORK/setup.txt"
    rcli <"$WORK/setup.txt" >"$WORK/setup.out"
    if grep -q ERR "$WORK/setup.out"; then
        grep -m 3 ERR "$WORK/setup.out" >&2
        fail "room setup failed"
    fi
    [ "$(rc_info connections)" = $((nodes * ROOMS)) ] || fail "expected $((nodes * ROOMS)) connections, RC.INFO says $(rc_info connections)"
    [ "$(rc_info rooms)" = "$ROOMS" ] || fail "expected $ROOMS rooms, RC.INFO says $(rc_info rooms)"
    local reply
    reply=$(rcli RC.PUBLISH "$(room_name 0)" setup | head -2 | paste -sd' ')
    [ "$reply" = "$nodes $nodes" ] || fail "RC.PUBLISH should reach $nodes connections on $nodes nodes, replied: $reply"
}

# live_channel NODE: the node's live channel, partition 0's (the first tag of RC.INFO).
live_channel() {
    local tag
    tag=$(rcli RC.INFO | awk 'prev == "tags" { print; exit } { prev = $0 }')
    [ -n "$tag" ] || fail "no partition tag in RC.INFO"
    echo "{$tag}:live:$1"
}

# start_subscriber NAME CHANNEL...: a counting subscriber, waited for until subscribed.
start_subscriber() {
    local name=$1
    shift
    rm -f "$WORK/$name.count"
    python3 "$WORK/sub.py" "$PORT" "$WORK/$name.count" "$@" 2>"$WORK/$name.err" &
    SUB_PIDS+=($!)
    for _ in $(seq 200); do
        [ -f "$WORK/$name.count" ] && return
        sleep 0.05
    done
    cat "$WORK/$name.err" >&2
    fail "subscriber $name did not subscribe"
}

# start_subscribers SCENARIO N: N subscribers sub1..subN for the scenario.
start_subscribers() {
    local scenario=$1 nodes=$2 n r rooms=()
    if [ "$scenario" = bare ]; then
        for r in $(seq 0 $((ROOMS - 1))); do rooms+=("$(room_name "$r")"); done
        for n in $(seq "$nodes"); do start_subscriber "sub$n" "${rooms[@]}"; done
    else
        for n in $(seq "$nodes"); do start_subscriber "sub$n" "$(live_channel "node$n")"; done
    fi
}

# subscriber_counts N: the N subscribers' counts, space-separated.
subscriber_counts() {
    local n
    for n in $(seq "$1"); do printf '%s ' "$(cat "$WORK/sub$n.count")"; done
}

# wait_delivered N BEFORE MESSAGES: waits (at most 30 s) until every subscriber's count
# is its BEFORE count + MESSAGES; fails loudly if one is short or over.
wait_delivered() {
    local nodes=$1 before=($2) messages=$3 n count complete
    for _ in $(seq 300); do
        complete=1
        for n in $(seq "$nodes"); do
            count=$(cat "$WORK/sub$n.count")
            if [ "$count" -gt $((before[n - 1] + messages)) ]; then
                fail "subscriber $n got $((count - before[n - 1])) messages, $messages were sent"
            fi
            if [ "$count" -lt $((before[n - 1] + messages)) ]; then complete=0; fi
        done
        if [ "$complete" = 1 ]; then return; fi
        sleep 0.1
    done
    fail "not every subscriber got all $messages messages: counts before $2, now $(subscriber_counts "$nodes")"
}

# load COMMAND COMMANDS [B]: redis-benchmark's pipelined run of COMMANDS commands over
# the rooms (with B: RC.PUBLISHM of B messages each); prints the achieved commands per
# second.
load() {
    local cmd=$1 commands=$2 batch=${3:-} out args i
    if [ -n "$batch" ]; then
        args=(RC.PUBLISHM x "$batch")
        for i in $(seq "$batch"); do args+=("room:__rand_int__" "$PAYLOAD" "" ""); done
    else
        args=("$cmd" "room:__rand_int__" "$PAYLOAD")
    fi
    out=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -P "$PIPELINE" -c "$CLIENTS" -n "$commands" \
        -r "$ROOMS" --csv "${args[@]}") || fail "redis-benchmark failed: $out"
    # The last CSV line: "test","rps", then six latency columns; the test name holds the
    # payload, commas and quotes included, so count from the end.
    echo "$out" | tail -1 | awk -F, '{ gsub(/"/, "", $(NF - 6)); print $(NF - 6) }'
}

# row_messages RPS: messages for a row of about ROW_SECONDS at RPS (or MESSAGES), a
# multiple of PIPELINE (redis-benchmark issues whole pipelines) and at least PROBE.
row_messages() {
    python3 -c "import sys; rps, secs, probe, p, fixed = sys.argv[1:]
m = int(fixed) if fixed else max(int(float(rps) * float(secs)), int(probe))
print(max(m // int(p), 1) * int(p))" "$1" "$ROW_SECONDS" "$PROBE" "$PIPELINE" "$MESSAGES"
}

# run_row SCENARIO N [B]: one row: subscribers, a probe run, the timed run, the checks.
# With B (the rcm rows) each command carries B messages, and each subscriber gets one
# push per command.
run_row() {
    local scenario=$1 nodes=$2 batch=${3:-} cmd=RC.PUBLISH before probe rps commands messages
    local t0 t1 published n xlen per=1
    [ "$scenario" = bare ] && cmd=PUBLISH
    [ -n "$batch" ] && per=$batch
    renew_leases "$nodes"
    start_subscribers "$scenario" "$nodes"
    probe=$(( (PROBE / per / PIPELINE + 1) * PIPELINE ))
    before=$(subscriber_counts "$nodes")
    rps=$(load "$cmd" "$probe" "$batch")
    wait_delivered "$nodes" "$before" "$probe"
    commands=$(row_messages "$(python3 -c "print(float('$rps') * $per)")")
    commands=$(( (commands / per / PIPELINE + 1) * PIPELINE ))
    messages=$((commands * per))
    before=$(subscriber_counts "$nodes")
    published=$(rc_info published)
    t0=$(cpu_ticks)
    rps=$(load "$cmd" "$commands" "$batch")
    t1=$(cpu_ticks)
    rps=$(python3 -c "print(float('$rps') * $per)")
    wait_delivered "$nodes" "$before" "$commands"
    if [ "$scenario" != bare ]; then
        [ $(( $(rc_info published) - published )) = "$messages" ] || fail "RC.INFO published moved by $(( $(rc_info published) - published )), $messages were sent"
        for n in $(seq "$nodes"); do
            xlen=$(rcli XLEN "$(live_channel "node$n" | sed 's/:live:/:inbox:/')")
            [ "$xlen" -gt 0 ] || fail "node$n's inbox is empty after $scenario"
        done
    fi
    stop_subscribers
    python3 -c 'import sys; r = float(sys.argv[3])
sys.exit(0) if r >= 10000 else print(f"isolated.sh: warning: {sys.argv[1]} at N={sys.argv[2]} ran at {r:.0f} msgs/s, under 10k", file=sys.stderr)' \
        "$scenario" "$nodes" "$rps"
    printf '%s\t%s\t%s\t%s\t%s\n' "$nodes" "$scenario" "$rps" "$messages" "$((t1 - t0))" >>"$ROWS"
    echo "isolated.sh: N=$nodes $scenario: $messages messages at $rps msgs/s, $((t1 - t0)) ticks" >&2
}

echo "isolated.sh: ROOT=$ROOT NODES=\"$NODES\" ROOMS=$ROOMS ROW_SECONDS=$ROW_SECONDS PIPELINE=$PIPELINE CLIENTS=$CLIENTS payload ${#PAYLOAD} B, CLK_TCK=$TICKS" >&2
for nodes in $NODES; do
    start_redis
    echo "isolated.sh: N=$nodes on port $PORT, inbox-maxlen $(rcli CONFIG GET roomcast.inbox-maxlen | tail -1)" >&2
    setup_rooms "$nodes"
    run_row bare "$nodes"
    run_row rc "$nodes"
    for b in $BATCHES; do run_row "rcm$b" "$nodes" "$b"; done
    if [ "$HISTORY" = 1 ]; then
        rcli CONFIG SET roomcast.history-len 100 >/dev/null
        run_row rc+hist "$nodes"
    fi
    stop_all
done

# The table: µs of Redis CPU per message, per message × node, and the ratio to the bare
# PUBLISH row of the same N.
python3 - "$ROWS" "$TICKS" <<'PY'
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
ticks = int(sys.argv[2])
names = {"bare": "bare PUBLISH", "rc": "RC.PUBLISH", "rc+hist": "RC.PUBLISH, history-len 100"}
def name(scenario):
    if scenario.startswith("rcm"):
        return f"RC.PUBLISHM, {scenario[3:]} per command"
    return names[scenario]
bare = {}
print("| nodes | scenario | msgs/s | messages | Redis CPU-s | µs/msg | µs/msg×node | ratio to bare |")
print("|---|---|---|---|---|---|---|---|")
for nodes, scenario, rps, messages, t in rows:
    cpu = int(t) / ticks
    per_msg = cpu * 1e6 / int(messages)
    per_node = per_msg / int(nodes)
    if scenario == "bare":
        bare[nodes] = per_node
    ratio = per_node / bare[nodes] if bare.get(nodes) else float("nan")
    print(f"| {nodes} | {name(scenario)} | {float(rps):,.0f} | {int(messages):,} | {cpu:.2f} "
          f"| {per_msg:.2f} | {per_node:.2f} | {ratio:.2f}× |")
print()
for nodes, scenario, _, messages, t in rows:
    if scenario != "bare" and bare.get(nodes):
        ratio = int(t) / ticks * 1e6 / int(messages) / int(nodes) / bare[nodes]
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(f"N={nodes}: {name(scenario)} costs {ratio:.2f}× bare PUBLISH per msg×node (goal ≤ 1.5×: {verdict})")
PY
