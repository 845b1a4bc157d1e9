#!/usr/bin/env bash
# End-to-end fan-out through the edge: publisher -> edge -> RC.PUBLISH -> inbox -> edge -> members.
#
# Builds (release) the module, the edge and the load generator, starts a private
# redis-server on a free loopback port with the module loaded and two edges
# (1 worker each, --conn-rate 0, anonymous), then runs `roomcast-fanout`:
#
#   idle    first, on fresh edges: IDLE_CONNS connections over both edges and 4 source
#           addresses, held IDLE_HOLD s: edge RSS growth per connection, connect rate.
#   fanout  then one run per SCENARIOS entry "K:M:RATE" (K rooms x M receiving members,
#           RATE publishes/s per room, members round-robin over both edges, the
#           publisher of each room on edge 0), WARMUP s of warm-up + MEASURE s measured.
#           Open-loop publishing; latency = receive time - scheduled send time.
#
# Redis and both edges are pinned to CPU 0, the generator to CPU 1 (taskset, when
# available). CPU time (utime+stime from /proc/PID/stat) of each edge, redis-server and
# the generator is read by the generator at the start and end of the measured window;
# it also records /proc/loadavg and the whole-box /proc/stat. Prints a markdown table;
# the JSON results stay in RESULTS_DIR.
#
# Env knobs: SCENARIOS ("100:1:100 20:10:100 2:100:100 100:1:200 20:10:200 2:100:200"),
#            MEASURE (15), WARMUP (3), PAYLOAD (100), IDLE_CONNS (10000), IDLE_HOLD (5),
#            RESULTS_DIR (target/fanout-results/<timestamp>), NO_BUILD (unset), PIN (1),
#            EDGE_BIN (target/release/roomcast-edge), MODULE_SO (target/release/libroomcast.so),
#            MAX_BG_PCT (10).
# Redis `INFO commandstats` is reset before each fan-out run and saved after it
# (setup and warm-up included): usec_per_call of RC.PUBLISH and XREAD, and XREAD calls
# per publish (1 means the inbox readers get one entry per call: no batching).
set -euo pipefail

SCENARIOS=${SCENARIOS:-"100:1:100 20:10:100 2:100:100 100:1:200 20:10:200 2:100:200"}
MEASURE=${MEASURE:-15}
WARMUP=${WARMUP:-3}
PAYLOAD=${PAYLOAD:-100}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-5}
PIN=${PIN:-1}
# Runs whose background CPU (box busy minus the watched processes, % of the whole box)
# is above this are flagged "noisy" in the table (shared/BENCHMARKING.md: discard them).
MAX_BG_PCT=${MAX_BG_PCT:-10}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
RESULTS_DIR=${RESULTS_DIR:-"$ROOT/target/fanout-results/$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$RESULTS_DIR"

for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "fanout.sh: $tool not found" >&2; exit 1; }
done

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release): module, edge, load generator" >&2
    (cd "$ROOT" && cargo build --release -p roomcast-module -p roomcast-edge -p roomcast-benches >&2)
fi
for f in libroomcast.so roomcast-edge roomcast-fanout; do
    [ -e "$REL/$f" ] || { echo "fanout.sh: $REL/$f missing" >&2; exit 1; }
done
# EDGE_BIN / MODULE_SO: another roomcast-edge binary and libroomcast.so to measure
# (e.g. a build of an older commit, for an A/B in one run).
EDGE_BIN=${EDGE_BIN:-$REL/roomcast-edge}
MODULE_SO=${MODULE_SO:-$REL/libroomcast.so}

PORT=6379
while [ "$PORT" = 6379 ]; do
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
done

SERVER_PIN=() CLIENT_PIN=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    SERVER_PIN=(taskset -c 0)
    if [ "$(nproc)" -ge 2 ]; then CLIENT_PIN=(taskset -c 1); fi
fi

WORK=$(mktemp -d)
REDIS_PID="" EDGE_PIDS=()
cleanup() {
    set +e
    for pid in "${EDGE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${EDGE_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== redis-server on 127.0.0.1:$PORT (pinned: ${SERVER_PIN[*]:-no}; generator: ${CLIENT_PIN[*]:-no})" >&2
"${SERVER_PIN[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" --loadmodule "$MODULE_SO" &
REDIS_PID=$!
for _ in $(seq 50); do
    if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then break; fi
    sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null || {
    echo "fanout.sh: redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }

EDGES=()
for n in 0 1; do
    "${SERVER_PIN[@]}" "$EDGE_BIN" --redis "redis://127.0.0.1:$PORT/" --workers 1 \
        --conn-rate 0 --allow-anonymous --listen 127.0.0.1:0 --node-id "fo$n" --drain-ms 1000 \
        >"$WORK/edge$n.out" 2>"$WORK/edge$n.err" &
    EDGE_PIDS+=($!)
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's#^roomcast-edge listening on http://\([^ ]*\) .*#\1#p' "$WORK/edge$n.out")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "fanout.sh: edge $n did not start" >&2; cat "$WORK/edge$n.err" >&2; exit 1; }
    EDGES+=("$addr")
done
EDGE_LIST=$(IFS=,; echo "${EDGES[*]}")
WATCH=(--watch "edge0=${EDGE_PIDS[0]}" --watch "edge1=${EDGE_PIDS[1]}" --watch "redis=$REDIS_PID")
echo "== edges: $EDGE_LIST (pids ${EDGE_PIDS[*]}), redis pid $REDIS_PID" >&2
sleep 1 # leases registered, inbox readers running

# utime+stime ticks of the edges and Redis together.
sut_ticks() {
    local pid
    for pid in "${EDGE_PIDS[@]}" "$REDIS_PID"; do cat "/proc/$pid/stat"; done |
        awk '{sub(/.*\) /, ""); s += $12 + $13} END {print s}'
}
# Waits (at most 15 s) until the edges and Redis together use under 5 % of a core.
settle() {
    local hz t0 t1
    hz=$(getconf CLK_TCK)
    for _ in $(seq 15); do
        t0=$(sut_ticks); sleep 1; t1=$(sut_ticks)
        [ $((t1 - t0)) -le $((hz / 20)) ] && return 0
    done
    echo "fanout.sh: edges/Redis still busy after 15 s" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
echo "== idle: $IDLE_CONNS connections over ${#EDGES[@]} edges, held ${IDLE_HOLD}s" >&2
"${CLIENT_PIN[@]}" "$REL/roomcast-fanout" idle --edges "$EDGE_LIST" "${WATCH[@]}" \
    --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --src-ips 4 --concurrency 256 \
    --out "$RESULTS_DIR/idle.json"
settle

i=0
for sc in $SCENARIOS; do
    IFS=: read -r K M RATE <<<"$sc"
    i=$((i + 1))
    redis-cli -h 127.0.0.1 -p "$PORT" config resetstat >/dev/null
    echo "== fanout $i: $K rooms x $M members, $RATE publishes/s per room ($((K * M * RATE)) deliveries/s offered)" >&2
    "${CLIENT_PIN[@]}" "$REL/roomcast-fanout" fanout --edges "$EDGE_LIST" "${WATCH[@]}" \
        --rooms "$K" --members "$M" --rate "$RATE" --seconds "$MEASURE" --warmup "$WARMUP" \
        --payload-bytes "$PAYLOAD" --prefix "s$i-" --label "$sc" \
        --out "$RESULTS_DIR/fanout-$i.json"
    # Whole run (setup and warm-up included): the per-call cost of RC.PUBLISH and XREAD.
    redis-cli -h 127.0.0.1 -p "$PORT" info commandstats | tr -d '\r' >"$RESULTS_DIR/commandstats-$i.txt"
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

for n in 0 1; do
    if grep -qiE "error|panic" "$WORK/edge$n.err"; then
        echo "== edge $n logged errors (first lines):" >&2
        grep -iE "error|panic" "$WORK/edge$n.err" | head -5 >&2
    fi
done

echo "== results in $RESULTS_DIR ($(($(date +%s) - START)) s of runs; loadavg before $LOAD_BEFORE, after $LOAD_AFTER)" >&2
python3 - "$RESULTS_DIR" "$LOAD_BEFORE" "$LOAD_AFTER" "${SERVER_PIN[*]:-unpinned}" "$MAX_BG_PCT" <<'EOF'
import glob, json, os, sys
d, before, after, pin, max_bg = sys.argv[1:6]
runs = sorted(glob.glob(os.path.join(d, "fanout-*.json")), key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
f = lambda x, n=1: "—" if x is None else f"{x:,.{n}f}"
print(f"loadavg before {before}, after {after}; system under test {pin}\n")
print("| rooms × members | publishes/s | offered deliveries/s | delivered msgs/s | p50 ms | p99 ms | p99.9 ms | max ms | loss / dup / ooo | edge CPU-µs/msg | Redis CPU-µs/msg | edges+Redis core % | generator CPU-µs/msg (core %) | background CPU % | loadavg (1m) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
cmd_rows = []
for p in runs:
    r = json.load(open(p))
    l, c = r["latency_us"], r["cpu_us_per_delivered"]
    cs = r["cpu_s"]
    sut = 100 * sum(v for k, v in cs.items() if v is not None and k != "generator") / r["window_s"]
    print(f"| {r['rooms']} × {r['members']} | {f(r['published_per_s'],0)} | {f(r['offered_deliveries_per_s'],0)} | {f(r['delivered_per_s'],0)} "
          f"| {f(l['p50']/1e3,2)} | {f(l['p99']/1e3,2)} | {f(l['p999']/1e3,2)} | {f(l['max']/1e3,1)} "
          f"| {r['loss']} / {r['dup']} / {r['ooo']} | {f(c['edges'],1)} | {f(c['redis'],1)} | {f(sut,0)} "
          f"| {f(c['generator'],1)} ({f(r['generator_core_pct'],0)} %) | {f(r['box']['background_pct'],0)}{' (noisy)' if r['box']['background_pct'] > float(max_bg) else ''} | {r['loadavg_start'].split()[0]} |")
    cs_path = os.path.join(d, os.path.basename(p).replace("fanout-", "commandstats-").replace(".json", ".txt"))
    st = {}
    if os.path.exists(cs_path):
        for line in open(cs_path):
            if line.startswith("cmdstat_"):
                name, rest = line.strip()[8:].split(":", 1)
                st[name] = dict(kv.split("=") for kv in rest.split(","))
    pub, xr = st.get("rc.publish", {}), st.get("xread", {})
    cmd_rows.append(f"| {r['rooms']} × {r['members']} | {f(r['published_per_s'],0)} | {pub.get('usec_per_call','—')} | {xr.get('usec_per_call','—')} "
                    f"| {f(int(xr['calls']) / int(pub['calls']), 2) if pub and xr else '—'} |")
    bad = [k for k in ("publish_errors", "wrong_room", "bad_data") if r[k]]
    if bad or r["receivers_closed"] or r["publishers_closed"]:
        print(f"|  ⚠ {r['label']}: " + ", ".join(f"{k}={r[k]}" for k in bad)
              + f" closed={len(r['receivers_closed'])}+{len(r['publishers_closed'])} first_error={r['first_error']} |")
print()
print("| rooms × members | publishes/s | RC.PUBLISH usec_per_call | XREAD usec_per_call | XREAD calls per RC.PUBLISH |")
print("|---|---|---|---|---|")
print("\n".join(cmd_rows))
i = os.path.join(d, "idle.json")
if os.path.exists(i):
    r = json.load(open(i))
    print()
    print("| idle conns | connected | connect/s | handshake p99 ms | edge RSS KB/conn | kernel Slab KB/conn (both ends) | edge CPU-µs/s per conn |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['conns']} | {r['connected']} | {f(r['connect_per_s'],0)} | {f(r['handshake_ms']['p99'],2)} | {f(r['edge_rss_kb_per_conn'],2)} "
          f"| {f(r['slab_kb_per_conn'],2)} | {f(r['edge_cpu_us_per_s_per_conn'],3)} |")
EOF
