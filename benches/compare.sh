#!/usr/bin/env bash
# Side-by-side benchmark: roomcast (RC) against its floor (R0), Socket.IO with the redis
# adapter (R2) and with the streams adapter (R2S), socketioxide with its redis adapter
# (R3), and the Redis ceiling, in one run, interleaved, reported as ratios
# (shared/BENCHMARKING.md §1–§8).
#
#   bash benches/compare.sh                # QUICK=1 (default): ~7 min, 1 pair
#   FULL=1 bash benches/compare.sh         # the full version (~2 h 15 min, 5 pairs)
#   SCENARIOS=peers bash benches/compare.sh   # the peer shapes at 2 and 8 servers only
#
# Systems, each started on fresh processes for every trial and stopped after it:
#   RC   roomcast: redis-server + the module, 2 edges × 1 worker (idle: IDLE_EDGES edges).
#   R0   the floor: ONE `roomcast-edge --bench-floor --workers 1` (no Redis; rooms are
#        local to a worker, so every member of every room sits on that one edge).
#   R2   Socket.IO 4.8 + @socket.io/redis-adapter (sharded, dynamic): plain redis-server
#        + 2 `node server.js --adapter redis` (idle: IDLE_EDGES node processes).
#   R2S  Socket.IO 4.8 + @socket.io/redis-streams-adapter: plain redis-server + 2
#        `node server.js --adapter streams` (fan-out only, in its own pairs against RC).
#   R3   socketioxide 0.18 + socketioxide-redis 0.4 (plain `redis` driver; every server
#        receives every broadcast through Redis): plain redis-server + 2 (peers: N)
#        `roomcast-bench-socketioxide --adapter redis` (benches/socketioxide/, built by its
#        build.sh; one current_thread runtime per process), the same event contract as R2
#        and the same generator protocol (socketio) (idle: IDLE_EDGES processes).
#   redis  the Redis ceiling: a plain redis-server driven by `redis-benchmark -P 16`.
# The system under test is pinned to CPU 0 and the generator (`roomcast-fanout`, or
# redis-benchmark and its subscribers) to CPU 1. CPU time comes from /proc (utime+stime
# per process, the generator's `--watch`; INFO cpu for the ceiling); every trial records
# loadavg and the box's background CPU (busy minus every watched process); a trial over
# MAX_BG_PCT is retried once and, if still noisy, kept but marked (report.py leaves noisy
# trials out of the ratios).
#
# Order: per scenario and pair, RC R2 R3 R0 R0 R3 R2 RC (FANOUT_ORDER; ABCDDCBA: every
# system's two trials are symmetric around the middle of the pair, so RC/R2, RC/R3, RC/R0
# and R0/R3 are all ABBA-balanced); R2S in its own pairs, RC R2S R2S RC. The peers group
# uses PEERS_ORDER (the same by default). A pair gives one ratio per metric: mean(trials
# of the one system) / mean(trials of the other).
#
# Scenarios (SCENARIOS picks groups; "all" = every group of the mode, in this order):
#   quick  fanout: 20 rooms × 10 and 2 rooms × 100 at QUICK_LOAD deliveries/s (PAIRS = 1
#          pair); streams: R2S against RC at the same shapes and load (streams-m10,
#          streams-m100, PAIRS pairs); ceiling: redis-benchmark -P 16 for PING, PUBLISH
#          with 0 and CEILING_SUBS subscribers, XADD MAXLEN ~ 10000 (CEILING_ROUNDS
#          rounds); idle: 10k connections (1 trial per system); strace: write syscalls
#          per delivered message (strace -c on RC's edges, M = 10 and 100). "all" leaves
#          out peers in quick mode (name it: SCENARIOS="fanout peers").
#   full   fanout: M = 1/10/100/1000, efficiency at FULL_LOAD deliveries/s (PAIRS pairs);
#          streams: as in quick at FULL_LOAD (PAIRS pairs); ceiling: as in quick;
#          sweep: a knee sweep per system and M (offered loads doubling from
#          SWEEP_START; knee = the last load with p99 ≤ 50 ms, no loss, ≥ 98 % delivered,
#          generator < 85 % of its core) then latency at 10/50/80 % of each system's
#          knee; idle: 10k/50k/100k over IDLE_EDGES server processes and ⌈N/19000⌉
#          generator processes; churn: connect/join/close at CHURN_RATE; slow: slow
#          consumers (1 % of members never read, normal vs slow, RC and R2); strace: on
#          RC, R0, R2 and R3; peers (below).
#   peers  (both modes) the shapes of PEER_SHAPES, each "S:ROOMSxMEMBERSxRATE" (RATE =
#          msgs/s per room, the generator's --rate): S server processes for RC (S edges ×
#          1 worker), R2 and R3, one floor edge for R0, PAIRS pairs in PEERS_ORDER; only the
#          server counts listed in SERVERS run. Defaults: 10x50x20, 10x50x100, 10x50x200,
#          200x5x10, 100x1x50 at 2 servers; 400x4x5 and 40x40x25 at 8 servers.
#
# Results: target/compare-results/<timestamp>/ (one JSON per trial and trials.jsonl,
# the manifest), then `benches/report.py` writes the generated section of
# docs/BENCHMARKS.md and the PNGs under docs/img/ (REPORT=0: skip).
#
# Knobs: QUICK/FULL, PAIRS, WARMUP, MEASURE, QUICK_LOAD (10000), FULL_LOAD (10000),
#        MAX_BG_PCT (10), LOAD_MAX (1.0) and WAIT_LOAD_S (60 quick, 300 full): wait for
#        a 1-min loadavg under LOAD_MAX before measuring; NO_BUILD=1, REPORT=0,
#        RESULTS_DIR, SCENARIOS ("all"; or a subset of: fanout streams ceiling sweep idle
#        churn slow strace peers, e.g. SCENARIOS="streams ceiling" for a functional check),
#        FANOUT_ORDER ("RC R2 R3 R0 R0 R3 R2 RC"), PEERS_ORDER (the same), PEER_SHAPES
#        (see peers), SERVERS ("2 8": which server counts of PEER_SHAPES run), e.g. an R3-only
#        functional check: SCENARIOS=peers PEERS_ORDER="R3 R3" PEER_SHAPES=2:10x50x20,
#        FULL_MEMBERS ("1 10 100 1000"), STREAMS_MEMBERS ("10 100"), IDLE_SIZES,
#        IDLE_EDGES (6), CHURN_CONNS (2000), CHURN_RATE (200), SLOW_PAYLOAD (16000:
#        800 KB/s per member, so a stalled one overflows its 1 MiB queue plus the kernel
#        buffers within the window), STRACE_S (3), STRACE_LOAD (30000 deliveries/s
#        offered while strace is attached), CEILING_N (requests per ceiling test:
#        200000 quick, 1000000 full), CEILING_ROUNDS (1 quick, 3 full; rounds alternate
#        the test order), CEILING_CLIENTS (50), CEILING_PIPELINE (16), CEILING_SUBS (2:
#        `redis-cli subscribe` processes, one per edge node), RC_ARGS (extra roomcast-edge
#        flags for RC, e.g. RC_ARGS="--publish-batch-max 1" for the unbatched publish path),
#        SWEEP_SYSTEMS ("RC R3 R2 R0": the systems the full mode's knee sweep runs).
set -euo pipefail

if [ -n "${FULL:-}" ] && [ "${FULL}" != 0 ]; then MODE=full; else MODE=quick; fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${RESULTS_DIR:-"$ROOT/target/compare-results/$STAMP-$MODE"}
mkdir -p "$OUT"
MANIFEST="$OUT/trials.jsonl"
: >"$MANIFEST"
MAX_BG_PCT=${MAX_BG_PCT:-10}
LOAD_MAX=${LOAD_MAX:-1.0}
PAYLOAD=${PAYLOAD:-100}
if [ "$MODE" = quick ]; then
    PAIRS=${PAIRS:-1}
    WARMUP=${WARMUP:-2}
    MEASURE=${MEASURE:-7}
    WAIT_LOAD_S=${WAIT_LOAD_S:-60}
    IDLE_SIZES=${IDLE_SIZES:-10000}
    IDLE_EDGES=${IDLE_EDGES:-2}
    CEILING_N=${CEILING_N:-200000}
    CEILING_ROUNDS=${CEILING_ROUNDS:-1}
else
    PAIRS=${PAIRS:-5}
    WARMUP=${WARMUP:-2}
    MEASURE=${MEASURE:-8}
    WAIT_LOAD_S=${WAIT_LOAD_S:-300}
    IDLE_SIZES=${IDLE_SIZES:-"10000 50000 100000"}
    IDLE_EDGES=${IDLE_EDGES:-6}
    CEILING_N=${CEILING_N:-1000000}
    CEILING_ROUNDS=${CEILING_ROUNDS:-3}
fi
QUICK_LOAD=${QUICK_LOAD:-10000}
RC_ARGS=${RC_ARGS:-}
SWEEP_SYSTEMS=${SWEEP_SYSTEMS:-"RC R3 R2 R0"}
FULL_LOAD=${FULL_LOAD:-10000}
FULL_MEMBERS=${FULL_MEMBERS:-"1 10 100 1000"}
SWEEP_START=${SWEEP_START:-2500}
SWEEP_MAX=${SWEEP_MAX:-160000}
SWEEP_MEASURE=${SWEEP_MEASURE:-4}
IDLE_HOLD=${IDLE_HOLD:-3}
IDLE_PER_GEN=${IDLE_PER_GEN:-19000}
CHURN_CONNS=${CHURN_CONNS:-2000}
CHURN_ROOMS=${CHURN_ROOMS:-200}
CHURN_RATE=${CHURN_RATE:-200}
CHURN_PAIRS=${CHURN_PAIRS:-3}
SLOW_PAIRS=${SLOW_PAIRS:-2}
SLOW_PAYLOAD=${SLOW_PAYLOAD:-16000}
SLOW_MEASURE=${SLOW_MEASURE:-15}
STRACE_S=${STRACE_S:-3}
STRACE_LOAD=${STRACE_LOAD:-30000}
STREAMS_MEMBERS=${STREAMS_MEMBERS:-"10 100"}
CEILING_CLIENTS=${CEILING_CLIENTS:-50}
CEILING_PIPELINE=${CEILING_PIPELINE:-16}
CEILING_SUBS=${CEILING_SUBS:-2}
FANOUT_ORDER=${FANOUT_ORDER:-"RC R2 R3 R0 R0 R3 R2 RC"}
PEERS_ORDER=${PEERS_ORDER:-$FANOUT_ORDER}
PEER_SHAPES=${PEER_SHAPES:-"2:10x50x20 2:10x50x100 2:10x50x200 2:200x5x10 2:100x1x50 8:400x4x5 8:40x40x25"}
SERVERS=${SERVERS:-"2 8"}
NSERVERS=2 # server processes of RC, R2, R2S and R3 in the current fan-out trial
SCENARIOS=${SCENARIOS:-all}
# want GROUP: true when the scenario group runs in this invocation ("all" includes peers
# in full mode only: quick stays quick).
want() {
    if [ "$SCENARIOS" = all ]; then [ "$1" != peers ] || [ "$MODE" = full ]; return; fi
    [[ " $SCENARIOS " == *" $1 "* ]]
}
# PEER_SHAPES is checked before anything runs: a typo must not end a long run midway.
for entry in $PEER_SHAPES; do
    [[ "$entry" =~ ^[1-9][0-9]*:[1-9][0-9]*x[1-9][0-9]*x[0-9]+(\.[0-9]+)?$ ]] || {
        echo "compare.sh: PEER_SHAPES entry \"$entry\" is not S:ROOMSxMEMBERSxRATE (e.g. 2:10x50x20)" >&2
        exit 1
    }
done
T_START=$(date +%s)

log() { printf '== [%4ds] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }

for tool in redis-server redis-cli redis-benchmark python3 node npm taskset curl; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "compare.sh: needs 2 cores (SUT on CPU 0, generator on CPU 1)" >&2; exit 1; }
SUT_PIN=(taskset -c 0)
GEN_PIN=(taskset -c 1)

# ---------------------------------------------------------------- build and install
if [ -z "${NO_BUILD:-}" ]; then
    log "building (release): module, edge, load generator"
    (cd "$ROOT" && cargo build --release -q -p roomcast-module -p roomcast-edge -p roomcast-benches >&2)
fi
for f in libroomcast.so roomcast-edge roomcast-fanout; do
    [ -e "$REL/$f" ] || { echo "compare.sh: $REL/$f missing" >&2; exit 1; }
done
SIO_JS=$(bash "$ROOT/benches/socketio/install.sh")
if [ -z "${NO_BUILD:-}" ]; then
    log "building (release): the socketioxide peer (R3)"
    SIOX_BIN=$(bash "$ROOT/benches/socketioxide/build.sh")
else
    SIOX_BIN="$ROOT/target/socketioxide/release/roomcast-bench-socketioxide"
fi
[ -x "$SIOX_BIN" ] || { echo "compare.sh: $SIOX_BIN missing (bash benches/socketioxide/build.sh)" >&2; exit 1; }
VENV="$ROOT/target/bench-venv"
if [ "${REPORT:-1}" != 0 ] && ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q matplotlib >&2
fi
STRACE_OK=1
if want strace && ! command -v strace >/dev/null; then
    log "strace missing: apt-get install -y strace"
    (apt-get install -y -q strace >/dev/null 2>&1 || sudo -n apt-get install -y -q strace >/dev/null 2>&1) || true
    command -v strace >/dev/null || STRACE_OK=0
fi

# ---------------------------------------------------------------- process bookkeeping
WORK=$(mktemp -d)
SUT_PIDS=() GEN_PIDS=() STRACE_PID="" REDIS_PORT="" REDIS_PID=""
stop_system() {
    local pid
    set +e
    for pid in "${SUT_PIDS[@]}"; do [ "$pid" != "$REDIS_PID" ] && kill -TERM "$pid" 2>/dev/null; done
    if [ -n "$REDIS_PID" ]; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null
    fi
    for pid in "${SUT_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    SUT_PIDS=() REDIS_PID="" REDIS_PORT=""
    set -e
}
cleanup() {
    set +e
    [ -n "$STRACE_PID" ] && kill -INT "$STRACE_PID" 2>/dev/null
    for pid in "${GEN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${GEN_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    stop_system
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts redis-server on a free port, pinned; $1: extra args (module).
start_redis() {
    REDIS_PORT=$(free_port)
    "${SUT_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$REDIS_PORT.log" --maxclients 1000 "$@" &
    REDIS_PID=$!
    SUT_PIDS+=("$REDIS_PID")
    for _ in $(seq 50); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "compare.sh: redis-server did not start" >&2
    cat "$WORK/redis-$REDIS_PORT.log" >&2
    return 1
}

# Waits for a "listening on http://ADDR" line in $1; prints ADDR.
wait_addr() {
    local file=$1 addr=""
    for _ in $(seq 150); do
        addr=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$file" | head -1)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    return 1
}

# start_system SYS N: fresh processes; sets EDGE_LIST (comma-separated), WATCH
# (--watch args), SERVER_PIDS (the edges / node processes).
start_system() {
    local sys=$1 n=$2 i pid addr addrs=()
    WATCH=() SERVER_PIDS=()
    case "$sys" in
        RC) start_redis --loadmodule "$REL/libroomcast.so" ;;
        R2 | R2S | R3) start_redis ;;
        R0) ;;
    esac
    for i in $(seq 0 $((n - 1))); do
        case "$sys" in
            RC) "${SUT_PIN[@]}" "$REL/roomcast-edge" --redis "redis://127.0.0.1:$REDIS_PORT/" --workers 1 \
                    --conn-rate 0 --allow-anonymous --listen 127.0.0.1:0 --node-id "cmp$i" --drain-ms 500 \
                    $RC_ARGS >"$WORK/s$i.out" 2>"$WORK/s$i.err" & ;;
            R0) "${SUT_PIN[@]}" "$REL/roomcast-edge" --bench-floor --workers 1 \
                    --conn-rate 0 --allow-anonymous --listen 127.0.0.1:0 --node-id "floor$i" --drain-ms 500 \
                    >"$WORK/s$i.out" 2>"$WORK/s$i.err" & ;;
            R2) "${SUT_PIN[@]}" node "$SIO_JS" --port 0 --redis "redis://127.0.0.1:$REDIS_PORT" --adapter redis \
                    >"$WORK/s$i.out" 2>"$WORK/s$i.err" & ;;
            R2S) "${SUT_PIN[@]}" node "$SIO_JS" --port 0 --redis "redis://127.0.0.1:$REDIS_PORT" --adapter streams \
                    >"$WORK/s$i.out" 2>"$WORK/s$i.err" & ;;
            R3) "${SUT_PIN[@]}" "$SIOX_BIN" --port 0 --redis "redis://127.0.0.1:$REDIS_PORT" --adapter redis \
                    >"$WORK/s$i.out" 2>"$WORK/s$i.err" & ;;
        esac
        pid=$!
        SUT_PIDS+=("$pid")
        SERVER_PIDS+=("$pid")
    done
    for i in $(seq 0 $((n - 1))); do
        addr=$(wait_addr "$WORK/s$i.out") || {
            echo "compare.sh: $sys server $i did not start" >&2; cat "$WORK/s$i.err" >&2; return 1; }
        addrs+=("$addr")
        WATCH+=(--watch "edge$i=${SERVER_PIDS[$i]}")
    done
    [ -n "$REDIS_PID" ] && WATCH+=(--watch "redis=$REDIS_PID")
    EDGE_LIST=$(IFS=,; echo "${addrs[*]}")
    if [ "$sys" = RC ]; then sleep 0.7; fi # leases registered, inbox readers running
    return 0
}
protocol_of() { case "$1" in R2 | R2S | R3) echo socketio ;; *) echo roomcast ;; esac; }
# Server processes of a fan-out trial: one floor edge for R0 (its rooms are local to a
# worker), NSERVERS for the others.
servers_of() { [ "$1" = R0 ] && echo 1 || echo "$NSERVERS"; }

# Appends one line to the manifest.
manifest() { # kind scenario system pair pos attempt file [extra json]
    python3 - "$@" >>"$MANIFEST" <<'PY'
import json, sys
kind, scen, system, pair, pos, attempt, path = sys.argv[1:8]
extra = json.loads(sys.argv[8]) if len(sys.argv) > 8 and sys.argv[8] else {}
bg = None
try:
    r = json.load(open(path))
    box = r.get("box") or {}
    bg = box.get("background_pct")
    if bg is not None:  # softirq (loopback TCP of the trial itself) is not background
        bg = max(0.0, bg - box.get("softirq_pct", 0.0))
except Exception as e:  # a failed trial: no JSON
    extra["error"] = str(e)
print(json.dumps(dict(kind=kind, scenario=scen, system=system, pair=int(pair), pos=int(pos),
                      attempt=int(attempt), file=path.rsplit("/", 1)[-1], background_pct=bg, **extra)))
PY
}
# Background CPU of a trial: box busy minus every watched process minus softirq (the
# loopback TCP work of the trial itself is accounted as softirq, not to any process).
bg_of() { python3 -c 'import json,sys; b=json.load(open(sys.argv[1])).get("box") or {}; print(int(round(max(0, b.get("background_pct", 0) - b.get("softirq_pct", 0)))))' "$1" 2>/dev/null || echo 999; }

# One fan-out trial, retried once when noisy.
# fanout_trial SCEN SYS PAIR POS ROOMS MEMBERS RATE [extra generator args]
fanout_trial() {
    local scen=$1 sys=$2 pair=$3 pos=$4 rooms=$5 members=$6 rate=$7
    shift 7
    local attempt f bg
    for attempt in 1 2; do
        f="$OUT/$scen-$sys-p$pair-$pos-a$attempt.json"
        start_system "$sys" "$(servers_of "$sys")"
        [ -n "$REDIS_PID" ] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
        "${GEN_PIN[@]}" "$REL/roomcast-fanout" fanout --edges "$EDGE_LIST" "${WATCH[@]}" \
            --protocol "$(protocol_of "$sys")" --rooms "$rooms" --members "$members" --rate "$rate" \
            --seconds "$MEASURE" --warmup "$WARMUP" --drain 1 --payload-bytes "$PAYLOAD" \
            --label "$scen" --out "$f" "$@" 2>"$WORK/gen.err" || {
            log "generator failed ($scen $sys): $(tail -2 "$WORK/gen.err")"; }
        if [ -n "$REDIS_PID" ]; then
            redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' >"${f%.json}.cmdstats"
            redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' >>"${f%.json}.cmdstats"
        fi
        stop_system
        manifest fanout "$scen" "$sys" "$pair" "$pos" "$attempt" "$f" \
            "{\"rooms\":$rooms,\"members\":$members,\"rate\":$rate,\"servers\":$(servers_of "$sys")}"
        bg=$(bg_of "$f")
        log "$scen $sys pair $pair pos $pos: $(summary "$f") background ${bg}%"
        [ "$bg" -le "$MAX_BG_PCT" ] && break
        log "  noisy (background ${bg}% > ${MAX_BG_PCT}%)${attempt:+, attempt $attempt}"
    done
}
summary() { python3 "$ROOT/benches/report.py" --one "$1" 2>/dev/null || echo "(no result)"; }

# Pairs of fan-out trials: fanout_pairs SCEN NPAIRS ROOMS MEMBERS RATE [args]; the
# order within a pair is PAIR_ORDER (default FANOUT_ORDER: RC R2 R3 R0 R0 R3 R2 RC).
fanout_pairs() {
    local scen=$1 np=$2 rooms=$3 members=$4 rate=$5
    shift 5
    local p pos sys
    for p in $(seq 1 "$np"); do
        pos=0
        for sys in ${PAIR_ORDER:-$FANOUT_ORDER}; do
            pos=$((pos + 1))
            fanout_trial "$scen" "$sys" "$p" "$pos" "$rooms" "$members" "$rate" "$@"
        done
    done
}

# Rooms for M members per room at a total of LOAD deliveries/s: prints "rooms rate".
shape() { # members load
    python3 -c '
import sys
m, load = int(sys.argv[1]), float(sys.argv[2])
rooms = {1: 100, 10: 20, 100: 2}.get(m, 1)
print(rooms, f"{load / (rooms * m):g}")' "$1" "$2"
}

# ---------------------------------------------------------------- idle
# idle_trial SYS N SERVERS
idle_trial() {
    local sys=$1 n=$2 servers=$3 ngen g per f i left
    start_system "$sys" "$servers"
    sleep 1
    ngen=$(((n + IDLE_PER_GEN - 1) / IDLE_PER_GEN))
    local pids_csv
    pids_csv=$(IFS=,; echo "${SUT_PIDS[*]}")
    python3 - before "$pids_csv" >"$WORK/idle-before.json" <<'PY'
import json, sys, os
def rss(p):
    for l in open(f"/proc/{p}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def ticks(p):
    s = open(f"/proc/{p}/stat").read(); f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])
def slab():
    for l in open("/proc/meminfo"):
        if l.startswith("Slab:"): return int(l.split()[1])
cpu = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
pids = sys.argv[2].split(",")
print(json.dumps({"rss": {p: rss(p) for p in pids}, "slab": slab(), "cpu": cpu}))
PY
    GEN_PIDS=()
    left=$n
    for g in $(seq 1 "$ngen"); do
        per=$(((left + ngen - g) / (ngen - g + 1)))
        left=$((left - per))
        "${GEN_PIN[@]}" "$REL/roomcast-fanout" idle --edges "$EDGE_LIST" "${WATCH[@]}" \
            --protocol "$(protocol_of "$sys")" --conns "$per" --hold $((IDLE_HOLD + 4 * ngen)) \
            --src-ips 8 --concurrency 128 --prefix "g$g-" --label "idle-$n" \
            --out "$OUT/idle-$sys-$n-g$g.json" 2>"$WORK/idle-g$g.err" &
        GEN_PIDS+=($!)
    done
    # Every generator connected (or gave up): then the "after" reading.
    for _ in $(seq 1200); do
        local done_n=0
        for g in $(seq 1 "$ngen"); do grep -q "connected in" "$WORK/idle-g$g.err" && done_n=$((done_n + 1)); done
        [ "$done_n" = "$ngen" ] && break
        sleep 0.25
    done
    sleep 1.5
    python3 - after "$pids_csv" >"$WORK/idle-after.json" <<'PY'
import json, sys
def rss(p):
    for l in open(f"/proc/{p}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def slab():
    for l in open("/proc/meminfo"):
        if l.startswith("Slab:"): return int(l.split()[1])
cpu = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
print(json.dumps({"rss": {p: rss(p) for p in sys.argv[2].split(",")}, "slab": slab(), "cpu": cpu}))
PY
    for i in "${!GEN_PIDS[@]}"; do wait "${GEN_PIDS[$i]}" || log "idle generator $i failed: $(tail -1 "$WORK/idle-g$((i + 1)).err")"; done
    GEN_PIDS=()
    f="$OUT/idle-$sys-$n.json"
    python3 - "$sys" "$n" "$ngen" "$(IFS=,; echo "${SERVER_PIDS[*]}")" "${REDIS_PID:-}" "$OUT" "$WORK" >"$f" <<'PY'
import json, sys, glob
sys_, n, ngen, servers, redis, out, work = sys.argv[1:8]
n, ngen = int(n), int(ngen)
b = json.load(open(f"{work}/idle-before.json")); a = json.load(open(f"{work}/idle-after.json"))
gens = [json.load(open(f"{out}/idle-{sys_}-{n}-g{g}.json")) for g in range(1, ngen + 1)]
connected = sum(g["connected"] for g in gens)
connect_s = max(g["connect_s"] for g in gens)
servers = [p for p in servers.split(",") if p]
grow = lambda ps: sum(a["rss"][p] - b["rss"][p] for p in ps)
# Background over the connect phase: box busy minus the SUT and the generators is not
# separable per process here; record the box busy share and the loadavg instead.
bc, ac = b["cpu"], a["cpu"]
busy = lambda c: c[0] + c[1] + c[2] + c[5] + c[6] + c[7]
tot = max(1, sum(ac) - sum(bc))
hold_cpu = {}
for g in gens:
    for k, v in g["cpu_s_during_hold"].items():
        if k != "generator" and v is not None:
            hold_cpu[k] = max(hold_cpu.get(k, 0.0), v)  # every generator reads the same processes
print(json.dumps({
    "mode": "idle", "system": sys_, "conns": n, "connected": connected, "generators": ngen,
    "servers": len(servers), "connect_s": connect_s, "connect_per_s": connected / connect_s,
    "handshake_p99_ms": max(g["handshake_ms"]["p99"] for g in gens),
    "handshake_p50_ms": sorted(g["handshake_ms"]["p50"] for g in gens)[len(gens) // 2],
    "server_rss_kb_before": sum(b["rss"][p] for p in servers),
    "server_rss_kb_after": sum(a["rss"][p] for p in servers),
    "server_rss_kb_per_conn": grow(servers) / max(1, connected),
    "redis_rss_kb_per_conn": (grow([redis]) / max(1, connected)) if redis else None,
    "slab_kb_per_conn": (a["slab"] - b["slab"]) / max(1, connected),
    "box_busy_pct_connect": 100 * (busy(ac) - busy(bc)) / tot,
    "server_cpu_us_per_s_per_conn": sum(v for k, v in hold_cpu.items() if k.startswith("edge"))
        * 1e6 / max(1e-9, gens[0]["hold_s"]) / max(1, connected),
    "loadavg_start": gens[0]["loadavg_start"], "loadavg_end": gens[-1]["loadavg_end"],
    "failed": [g["failed"] for g in gens],
}))
PY
    stop_system
    manifest idle "idle-$n" "$sys" 1 1 1 "$f"
    log "idle $sys $n: $(summary "$f")"
}

# ---------------------------------------------------------------- write syscalls
# strace_trial SYS MEMBERS LOAD
strace_trial() {
    local sys=$1 m=$2 load=$3 rooms rate f gen spids=() p
    read -r rooms rate < <(shape "$m" "$load")
    f="$OUT/strace-$sys-m$m"
    start_system "$sys" "$(servers_of "$sys")"
    "${GEN_PIN[@]}" "$REL/roomcast-fanout" fanout --edges "$EDGE_LIST" "${WATCH[@]}" \
        --protocol "$(protocol_of "$sys")" --rooms "$rooms" --members "$m" --rate "$rate" \
        --seconds $((STRACE_S + 3)) --warmup 1 --drain 1 --payload-bytes "$PAYLOAD" \
        --label "strace" --out "$f.json" 2>"$WORK/gen.err" &
    gen=$!
    GEN_PIDS=("$gen")
    # Wait for the publishing to start (the setup is over when `[label] t=` lines appear).
    for _ in $(seq 200); do grep -q "measure\|warmup" "$WORK/gen.err" && break; sleep 0.1; done
    sleep 1.5
    for p in "${SERVER_PIDS[@]}"; do spids+=(-p "$p"); done
    metrics_sum "$sys" >"$f.m0"
    strace -c -f -e trace=write,writev,sendto,sendmsg -o "$f.strace" "${spids[@]}" 2>"$WORK/strace.err" &
    STRACE_PID=$!
    sleep "$STRACE_S"
    kill -INT "$STRACE_PID" 2>/dev/null || true
    wait "$STRACE_PID" 2>/dev/null || true
    STRACE_PID=""
    metrics_sum "$sys" >"$f.m1"
    wait "$gen" || true
    GEN_PIDS=()
    stop_system
    if grep -qi "not permitted\|attach:" "$WORK/strace.err"; then
        log "strace: $(head -1 "$WORK/strace.err")"
        cp "$WORK/strace.err" "$f.strace-error"
    fi
    manifest strace "strace-m$m" "$sys" 1 1 1 "$f.json" "{\"members\":$m,\"strace\":\"${f##*/}.strace\",\"m0\":\"${f##*/}.m0\",\"m1\":\"${f##*/}.m1\"}"
    log "strace $sys M=$m: $(python3 "$ROOT/benches/report.py" --strace-summary "$f" "$m" 2>/dev/null || echo '?')"
}
# Sums of the servers' counters: "messages_out messages_in publishes".
metrics_sum() {
    local addr sys=$1
    for addr in ${EDGE_LIST//,/ }; do curl -s --max-time 2 "http://$addr/metrics" || true; done |
        awk -v sys="$sys" '
            /^roomcast_edge_messages_out_total / {o += $2}
            /^roomcast_edge_messages_in_total / {i += $2}
            /^socketio_publishes_total / {p += $2}
            END {printf "%d %d %d\n", o, i, p}'
}

# ---------------------------------------------------------------- churn
churn_trial() { # SYS PAIR POS
    local sys=$1 pair=$2 pos=$3 f attempt bg
    for attempt in 1 2; do
        f="$OUT/churn-$sys-p$pair-$pos-a$attempt.json"
        start_system "$sys" "$(servers_of "$sys")"
        [ -n "$REDIS_PID" ] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
        "${GEN_PIN[@]}" "$REL/roomcast-fanout" churn --edges "$EDGE_LIST" "${WATCH[@]}" \
            --protocol "$(protocol_of "$sys")" --conns "$CHURN_CONNS" --rooms "$CHURN_ROOMS" \
            --rate "$CHURN_RATE" --seconds "$MEASURE" --warmup "$WARMUP" --src-ips 4 \
            --label churn --out "$f" 2>"$WORK/gen.err" || log "churn generator failed: $(tail -1 "$WORK/gen.err")"
        if [ -n "$REDIS_PID" ]; then
            redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' >"${f%.json}.cmdstats"
        fi
        stop_system
        manifest churn churn "$sys" "$pair" "$pos" "$attempt" "$f"
        bg=$(bg_of "$f")
        log "churn $sys pair $pair: $(summary "$f") background ${bg}%"
        [ "$bg" -le "$MAX_BG_PCT" ] && break
    done
}

# ---------------------------------------------------------------- Redis ceiling
# ceiling_trial TEST ROUND POS SUBS CMD...: a fresh plain redis-server pinned like the SUT
# (CPU 0), SUBS `redis-cli subscribe ch` processes and redis-benchmark on CPU 1
# (-c CEILING_CLIENTS -P CEILING_PIPELINE -n CEILING_N, after a warm-up of N/10). Redis CPU
# is INFO cpu used_cpu_user+used_cpu_sys before/after the measured run; background CPU
# = box busy − Redis − subscribers − redis-benchmark − softirq, as for the other trials.
ceiling_trial() {
    local test=$1 round=$2 pos=$3 subs=$4
    shift 4
    local attempt f bg i spids=()
    for attempt in 1 2; do
        f="$OUT/ceiling-$test-r$round-a$attempt.json"
        start_redis
        GEN_PIDS=() spids=()
        for i in $(seq 1 "$subs"); do
            "${GEN_PIN[@]}" redis-cli -p "$REDIS_PORT" subscribe ch >/dev/null 2>&1 &
            GEN_PIDS+=($!)
            spids+=($!)
        done
        for _ in $(seq 100); do
            [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub ch | tail -1)" = "$subs" ] && break
            sleep 0.05
        done
        python3 - "$REDIS_PORT" "$REDIS_PID" "$(IFS=,; echo "${spids[*]}")" "$CEILING_N" "$CEILING_CLIENTS" \
            "$CEILING_PIPELINE" "$test" "$subs" "$@" >"$f" 2>"$WORK/ceiling.err" <<'PY' || log "ceiling $test failed: $(tail -2 "$WORK/ceiling.err")"
import json, os, resource, subprocess, sys, time
port, redis_pid, spids, n, clients, pipeline, test, subs = sys.argv[1:9]
cmd = sys.argv[9:]
spids = [p for p in spids.split(",") if p]
n, subs = int(n), int(subs)
HZ = os.sysconf("SC_CLK_TCK")
def cli(*a):
    return subprocess.run(["redis-cli", "-p", port, *a], capture_output=True, text=True, check=True).stdout
def info_cpu():
    kv = dict(l.split(":", 1) for l in cli("info", "cpu").splitlines() if ":" in l)
    return float(kv["used_cpu_user"]) + float(kv["used_cpu_sys"])
def ticks(p):
    try:
        s = open(f"/proc/{p}/stat").read(); f = s[s.rfind(")") + 2:].split()
        return int(f[11]) + int(f[12])
    except OSError:
        return 0
def box():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return {"busy": v[0] + v[1] + v[2] + v[5] + v[6] + v[7], "softirq": v[6], "steal": v[7], "total": sum(v)}
def bench(k):
    return subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", port,
                           "-c", clients, "-n", str(k), "-P", pipeline, "--csv", *cmd],
                          capture_output=True, text=True, check=True).stdout
bench(max(1000, n // 10))  # warm-up: connections, allocator, the stream up to its MAXLEN
load0 = open("/proc/loadavg").read().split()[:3]
c0, b0, r0 = info_cpu(), box(), ticks(redis_pid)
s0 = sum(ticks(p) for p in spids)
u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.monotonic()
out = bench(n)
wall = time.monotonic() - t0
u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
c1, b1, r1 = info_cpu(), box(), ticks(redis_pid)
s1 = sum(ticks(p) for p in spids)
rows = [l.split('","') for l in out.strip().splitlines() if l.startswith('"') and not l.startswith('"test"')]
rps = float(rows[-1][1].strip('"')) if rows else None
bench_cpu = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)  # redis-benchmark (+ the INFO call)
watched = (r1 - r0) + (s1 - s0) + bench_cpu * HZ
tot = max(1, b1["total"] - b0["total"])
busy = b1["busy"] - b0["busy"]
numsub = cli("pubsub", "numsub", "ch").split()
shown = [a if len(a) <= 20 else f"<{len(a)}-byte payload>" for a in cmd]
print(json.dumps({
    "mode": "ceiling", "test": test, "command": " ".join(shown), "requests": n,
    "clients": int(clients), "pipeline": int(pipeline), "subscribers": subs,
    "subscribers_after": int(numsub[-1]) if numsub else None,
    "ops_per_s": rps, "wall_s": wall, "wall_ops_per_s": n / wall,
    "redis_cpu_s": c1 - c0, "redis_cpu_us_per_op": (c1 - c0) * 1e6 / n,
    "redis_cpu_s_proc": (r1 - r0) / HZ, "redis_core_pct": 100 * (c1 - c0) / wall,
    "subscribers_cpu_s": (s1 - s0) / HZ, "bench_cpu_s": bench_cpu,
    "box": {"busy_pct": 100 * busy / tot, "background_pct": 100 * max(0.0, busy - watched) / tot,
            "steal_pct": 100 * (b1["steal"] - b0["steal"]) / tot,
            "softirq_pct": 100 * (b1["softirq"] - b0["softirq"]) / tot},
    "loadavg_start": load0, "loadavg_end": open("/proc/loadavg").read().split()[:3],
}))
PY
        for i in "${GEN_PIDS[@]}"; do kill -TERM "$i" 2>/dev/null || true; done
        for i in "${GEN_PIDS[@]}"; do wait "$i" 2>/dev/null || true; done
        GEN_PIDS=()
        stop_system
        manifest ceiling "ceiling-$test" redis "$round" "$pos" "$attempt" "$f" \
            "{\"test\":\"$test\",\"subscribers\":$subs}"
        bg=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["box"]; print(int(round(max(0, b["background_pct"] - b["softirq_pct"]))))' "$f" 2>/dev/null || echo 999)
        log "ceiling $test round $round: $(summary "$f") background ${bg}%"
        [ "$bg" -le "$MAX_BG_PCT" ] && break
        log "  noisy (background ${bg}% > ${MAX_BG_PCT}%), attempt $attempt"
    done
}
# The four ceiling tests per round, in alternating order (forward, then backward).
ceiling_rounds() {
    local r pos t tests payload
    payload=$(head -c "$PAYLOAD" /dev/zero | tr '\0' x)
    for r in $(seq 1 "$CEILING_ROUNDS"); do
        tests="ping publish0 publishN xadd"
        [ $((r % 2)) = 0 ] && tests="xadd publishN publish0 ping"
        pos=0
        for t in $tests; do
            pos=$((pos + 1))
            case "$t" in
                ping) ceiling_trial ping "$r" "$pos" 0 PING ;;
                publish0) ceiling_trial publish0 "$r" "$pos" 0 PUBLISH ch "$payload" ;;
                publishN) ceiling_trial publishN "$r" "$pos" "$CEILING_SUBS" PUBLISH ch "$payload" ;;
                xadd) ceiling_trial xadd "$r" "$pos" 0 XADD s MAXLEN '~' 10000 '*' f "$payload" ;;
            esac
        done
    done
}

# ---------------------------------------------------------------- run
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while python3 -c "import sys; sys.exit(0 if float('$(load1)') >= float('$LOAD_MAX') else 1)"; do
    [ "$waited" -ge "$WAIT_LOAD_S" ] && { log "loadavg still $(load1) after ${waited}s: measuring anyway (trials are checked one by one)"; break; }
    [ "$waited" = 0 ] && log "waiting for loadavg < $LOAD_MAX (now $(load1), at most ${WAIT_LOAD_S}s)"
    sleep 5
    waited=$((waited + 5))
done
python3 - "$MODE" "$OUT/meta.json" <<PY
import json, sys, subprocess, platform
def lock_versions(path, names):
    """name -> version of the packages NAMES in a Cargo.lock (the R3 peer's)."""
    out, name = {}, None
    try:
        for line in open(path):
            if line.startswith("name = "):
                name = line.split('"')[1]
            elif line.startswith("version = ") and name in names:
                out[name] = line.split('"')[1]
    except OSError:
        pass
    return out
json.dump({"mode": sys.argv[1], "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "nproc": $(nproc),
           "loadavg_start": open("/proc/loadavg").read().split()[:3],
           "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
           "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
           "kernel": platform.release(), "pairs": $PAIRS, "warmup": $WARMUP, "measure": $MEASURE,
           "max_bg_pct": $MAX_BG_PCT, "payload": $PAYLOAD, "quick_load": $QUICK_LOAD, "full_load": $FULL_LOAD,
           "scenarios": "$SCENARIOS", "streams_members": "$STREAMS_MEMBERS", "ceiling_n": $CEILING_N,
           "ceiling_rounds": $CEILING_ROUNDS, "ceiling_clients": $CEILING_CLIENTS,
           "ceiling_pipeline": $CEILING_PIPELINE, "ceiling_subs": $CEILING_SUBS,
           "fanout_order": "$FANOUT_ORDER", "peers_order": "$PEERS_ORDER",
           "peer_shapes": "$PEER_SHAPES", "servers": "$SERVERS",
           "socketioxide": lock_versions("$ROOT/benches/socketioxide/Cargo.lock",
                                         ("socketioxide", "socketioxide-redis", "redis")),
           "git": subprocess.run(["git", "-C", "$ROOT", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()},
          open(sys.argv[2], "w"), indent=1)
PY
log "mode $MODE, results in $OUT (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"

# R2S (Socket.IO + streams adapter) against RC in its own ABBA pairs: RC R2S R2S RC.
streams_pairs() { # LOAD (halved for M = 1, as for the fan-out scenarios)
    local m rooms rate load
    for m in $STREAMS_MEMBERS; do
        load=$1
        [ "$m" = 1 ] && load=$((load / 2))
        read -r rooms rate < <(shape "$m" "$load")
        PAIR_ORDER="RC R2S R2S RC" fanout_pairs "streams-m$m" "$PAIRS" "$rooms" "$m" "$rate"
    done
}

# The peer shapes: PEER_SHAPES entries "S:ROOMSxMEMBERSxRATE" whose S is in SERVERS,
# PAIRS pairs each in PEERS_ORDER, as scenario "peers-sS-ROOMSxMEMBERSxRATE".
peers_pairs() {
    local entry n shape rooms members rate
    for entry in $PEER_SHAPES; do
        n=${entry%%:*}
        shape=${entry#*:}
        [[ " $SERVERS " == *" $n "* ]] || continue
        IFS=x read -r rooms members rate <<<"$shape"
        NSERVERS=$n PAIR_ORDER=$PEERS_ORDER fanout_pairs "peers-s$n-$shape" "$PAIRS" "$rooms" "$members" "$rate"
    done
}

if [ "$MODE" = quick ]; then
    if want fanout; then
        for m in 10 100; do
            read -r rooms rate < <(shape "$m" "$QUICK_LOAD")
            fanout_pairs "fanout-m$m" "$PAIRS" "$rooms" "$m" "$rate"
        done
    fi
    if want streams; then streams_pairs "$QUICK_LOAD"; fi
    if want peers; then peers_pairs; fi
    if want ceiling; then ceiling_rounds; fi
    if want idle; then
        for n in $IDLE_SIZES; do
            for sys in RC R2 R3 R0; do idle_trial "$sys" "$n" "$([ "$sys" = R0 ] && echo 1 || echo "$IDLE_EDGES")"; done
        done
    fi
    if want strace && [ "$STRACE_OK" = 1 ]; then
        for m in 10 100; do strace_trial RC "$m" "$STRACE_LOAD"; done
    fi
else
    # Fan-out efficiency at one offered load, ABCCBA pairs.
    if want fanout; then
        for m in $FULL_MEMBERS; do
            load=$FULL_LOAD
            [ "$m" = 1 ] && load=$((FULL_LOAD / 2))
            read -r rooms rate < <(shape "$m" "$load")
            fanout_pairs "fanout-m$m" "$PAIRS" "$rooms" "$m" "$rate"
        done
    fi
    if want streams; then streams_pairs "$FULL_LOAD"; fi
    if want peers; then peers_pairs; fi
    if want ceiling; then ceiling_rounds; fi
    # Knee sweep per system and M (single trials), then latency at 10/50/80 % of it.
    for m in $FULL_MEMBERS; do
        want sweep || break
        for sys in $SWEEP_SYSTEMS; do
            load=$SWEEP_START
            knee=0
            while [ "$load" -le "$SWEEP_MAX" ]; do
                read -r rooms rate < <(shape "$m" "$load")
                MEASURE=$SWEEP_MEASURE WARMUP=1 fanout_trial "sweep-m$m" "$sys" 1 "$load" "$rooms" "$m" "$rate"
                f=$(ls -t "$OUT"/sweep-m"$m"-"$sys"-p1-"$load"-a*.json 2>/dev/null | head -1)
                ok=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
good = (r["latency_us"]["p99"] <= 50000 and r["loss"] == 0 and not r["receivers_closed"]
        and r["delivered_per_s"] >= 0.98 * r["offered_deliveries_per_s"])
gen_ok = (r["generator_core_pct"] or 0) < 85
print("good" if good and gen_ok else ("genbound" if good else "bad"))' "$f" 2>/dev/null || echo bad)
                if [ "$ok" = good ]; then knee=$load; else
                    echo "{\"kind\":\"knee\",\"scenario\":\"sweep-m$m\",\"system\":\"$sys\",\"knee\":$knee,\"stopped_at\":$load,\"why\":\"$ok\"}" >>"$MANIFEST"
                    break; fi
                load=$((load * 2))
            done
            if [ "$ok" = good ]; then
                echo "{\"kind\":\"knee\",\"scenario\":\"sweep-m$m\",\"system\":\"$sys\",\"knee\":$knee,\"stopped_at\":null,\"why\":\"max\"}" >>"$MANIFEST"
            fi
            log "knee $sys M=$m: $knee deliveries/s (stopped: $ok)"
            [ "$knee" -gt 0 ] || continue
            for pct in 10 50 80; do
                l=$((knee * pct / 100))
                read -r rooms rate < <(shape "$m" "$l")
                fanout_trial "lat-m$m-$pct" "$sys" 1 "$l" "$rooms" "$m" "$rate"
            done
        done
    done
    # Idle capacity.
    if want idle; then
        for n in $IDLE_SIZES; do
            for sys in RC R2 R3 R0; do idle_trial "$sys" "$n" "$IDLE_EDGES"; done
        done
    fi
    # Churn, ABCCBA.
    if want churn; then
        for p in $(seq 1 "$CHURN_PAIRS"); do
            pos=0
            for sys in RC R2 R0 R0 R2 RC; do pos=$((pos + 1)); churn_trial "$sys" "$p" "$pos"; done
        done
    fi
    # Slow consumers: normal / slow / slow / normal per pair, RC and R2.
    if want slow; then
        for p in $(seq 1 "$SLOW_PAIRS"); do
            for sys in RC R2; do
                pos=0
                for v in 0 1 1 0; do
                    pos=$((pos + 1))
                    MEASURE=$SLOW_MEASURE PAYLOAD=$SLOW_PAYLOAD fanout_trial "slow$v" "$sys" "$p" "$pos" 2 100 50 --slow-pct "$v"
                done
            done
        done
    fi
    if want strace && [ "$STRACE_OK" = 1 ]; then
        for sys in RC R0 R2 R3; do for m in 10 100; do strace_trial "$sys" "$m" "$STRACE_LOAD"; done; done
    fi
fi

log "trials done in $(($(date +%s) - T_START)) s (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
if [ "${REPORT:-1}" != 0 ]; then
    "$VENV/bin/python" "$ROOT/benches/report.py" "$OUT"
fi
log "total $(($(date +%s) - T_START)) s; results in $OUT"
