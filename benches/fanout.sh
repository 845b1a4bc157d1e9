#!/usr/bin/env bash
# End-to-end fan-out through the edge: publisher -> edge -> RC.PUBLISH -> inbox -> edge -> members.
#
# Builds (release) the module, the edge and the load generator, starts a private
# redis-server on a free loopback port with the module loaded (or, with SHARDS=N, a
# Redis Cluster of N masters) and two edges (1 worker each, --conn-rate 0, anonymous),
# then runs `roomcast-fanout`:
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
#            MAX_BG_PCT (10), SHARDS (1).
# SHARDS=1 (default): one plain redis-server. SHARDS=N (N >= 3; redis-cli --cluster create
# needs 3 masters, so 2 is refused): N redis-server processes in cluster mode (no
# replicas, each in its own directory, on a free loopback port whose cluster-bus port
# +10000 is free too), joined with `redis-cli --cluster create`, pinned like the single
# server; the edges get the first node's URL and discover the cluster themselves. Every
# node is watched (`--watch redis=PID0 --watch redis1=PID1 ...`: the generator sums every
# name starting with `redis`), so the Redis CPU column is the sum over all shards.
# Redis `INFO commandstats` is reset before each fan-out run and saved after it, on every
# node (setup and warm-up included): calls and usec_per_call of RC.PUBLISHM (the edges'
# batches of client publishes) and of XRANGE (the inbox readers' catch-up and gap reads:
# entries arrive as pushes, so these stay few), summed over the nodes under cluster.
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
# Redis shards: 1 = one plain redis-server; N >= 3 = a Redis Cluster of N masters.
SHARDS=${SHARDS:-1}
case "$SHARDS" in
    '' | *[!0-9]*) echo "fanout.sh: SHARDS must be a number (1, or 3 and more), got '$SHARDS'" >&2; exit 1 ;;
esac
if [ "$SHARDS" -eq 2 ] || [ "$SHARDS" -lt 1 ]; then
    echo "fanout.sh: SHARDS=$SHARDS: use 1 (one plain redis-server) or 3 and more (a Redis Cluster;" \
        "redis-cli --cluster create needs at least 3 masters)" >&2
    exit 1
fi

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

# Free loopback ports, one per shard, none of them 6379. Under cluster, each port's
# cluster-bus port (+10000) is free too and no port is another one's bus port.
free_ports() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
n, cluster = int(sys.argv[1]), sys.argv[2] == "1"
held, ports, used = [], [], set()
for _ in range(1000):
    if len(ports) == n:
        break
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    held.append(s)
    if p == 6379 or p in used:
        continue
    if cluster:
        if p > 55535 or p + 10000 in used:
            continue
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
        finally:
            b.close()
    ports.append(p)
    used.update((p, p + 10000))
if len(ports) < n:
    sys.exit("fanout.sh: no free loopback ports for the Redis nodes")
print(" ".join(map(str, ports)))
EOF
}

SERVER_PIN=() CLIENT_PIN=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    SERVER_PIN=(taskset -c 0)
    if [ "$(nproc)" -ge 2 ]; then CLIENT_PIN=(taskset -c 1); fi
fi

WORK=$(mktemp -d)
REDIS_PORTS=() REDIS_PIDS=() EDGE_PIDS=()
cleanup() {
    set +e
    for pid in "${EDGE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${EDGE_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    local n
    for n in "${!REDIS_PIDS[@]}"; do
        if kill -0 "${REDIS_PIDS[n]}" 2>/dev/null; then
            redis-cli -h 127.0.0.1 -p "${REDIS_PORTS[n]}" shutdown nosave >/dev/null 2>&1 ||
                kill "${REDIS_PIDS[n]}" 2>/dev/null
        fi
    done
    for n in "${!REDIS_PIDS[@]}"; do wait "${REDIS_PIDS[n]}" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Last lines of every Redis node's log, for error messages.
redis_logs() {
    local log
    for log in "$WORK"/redis.log "$WORK"/redis*/redis.log; do
        [ -e "$log" ] || continue
        echo "---- $log" >&2
        tail -n 30 "$log" >&2
    done
}

# Waits (5 s at most) until the redis-server on port $1 (pid $2) answers PING.
wait_pong() {
    for _ in $(seq 50); do
        kill -0 "$2" 2>/dev/null || return 1
        if redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.1
    done
    return 1
}

if [ "$SHARDS" = 1 ]; then
    PORT=$(free_ports 1 0)
    echo "== redis-server on 127.0.0.1:$PORT (pinned: ${SERVER_PIN[*]:-no}; generator: ${CLIENT_PIN[*]:-no})" >&2
    "${SERVER_PIN[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" --loadmodule "$MODULE_SO" &
    REDIS_PIDS+=($!) REDIS_PORTS+=("$PORT")
    wait_pong "$PORT" "${REDIS_PIDS[0]}" || {
        echo "fanout.sh: redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }
else
    read -r -a ports <<<"$(free_ports "$SHARDS" 1)"
    echo "== Redis Cluster: $SHARDS masters on 127.0.0.1:${ports[*]} (pinned: ${SERVER_PIN[*]:-no}; generator: ${CLIENT_PIN[*]:-no})" >&2
    for n in $(seq 0 $((SHARDS - 1))); do
        dir="$WORK/redis$n"
        started=""
        for try in 1 2 3 4 5; do
            # A port taken since it was picked: a fresh one (and a fresh nodes.conf).
            [ "$try" = 1 ] || { ports[n]=$(free_ports 1 1); rm -rf "$dir"; }
            mkdir -p "$dir"
            "${SERVER_PIN[@]}" redis-server --port "${ports[n]}" --bind 127.0.0.1 --save '' \
                --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
                --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
                --cluster-node-timeout 2000 --loadmodule "$MODULE_SO" &
            pid=$!
            if wait_pong "${ports[n]}" "$pid"; then started=1; break; fi
            kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        done
        [ -n "$started" ] || {
            echo "fanout.sh: cluster node $n did not start (5 tries)" >&2; redis_logs; exit 1; }
        REDIS_PIDS+=("$pid") REDIS_PORTS+=("${ports[n]}")
    done
    PORT=${REDIS_PORTS[0]}
    nodes=()
    for p in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
    if ! timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        </dev/null >"$WORK/cluster-create.out" 2>&1; then
        echo "fanout.sh: redis-cli --cluster create failed:" >&2
        cat "$WORK/cluster-create.out" >&2; redis_logs; exit 1
    fi
    # Until every node says cluster_state:ok, knows all N nodes, sees every link up and
    # all of them agree on the slot map (masters and their slots, from CLUSTER NODES).
    cluster_view() {
        redis-cli -h 127.0.0.1 -p "$1" cluster nodes 2>/dev/null | tr -d '\r' |
            awk '$8 == "connected" { s = $2; for (i = 9; i <= NF; i++) s = s " " $i; print s }' | sort
    }
    agreed=""
    why=""
    for _ in $(seq 300); do # 30 s
        why="" first=""
        for p in "${REDIS_PORTS[@]}"; do
            info=$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r')
            state=$(sed -n 's/^cluster_state://p' <<<"$info")
            known=$(sed -n 's/^cluster_known_nodes://p' <<<"$info")
            assigned=$(sed -n 's/^cluster_slots_assigned://p' <<<"$info")
            if [ "$state" != ok ] || [ "$known" != "$SHARDS" ] || [ "$assigned" != 16384 ]; then
                why="node $p: cluster_state:${state:-?} cluster_known_nodes:${known:-?} cluster_slots_assigned:${assigned:-?}"
                break
            fi
            view=$(cluster_view "$p")
            if [ "$(wc -l <<<"$view")" != "$SHARDS" ]; then
                why="node $p sees $(wc -l <<<"$view") of $SHARDS nodes connected"
                break
            fi
            if [ -z "$first" ]; then
                first=$view
            elif [ "$view" != "$first" ]; then
                why="nodes ${REDIS_PORTS[0]} and $p disagree on the slot map"
                break
            fi
        done
        [ -z "$why" ] && { agreed=1; break; }
        sleep 0.1
    done
    [ -n "$agreed" ] || {
        echo "fanout.sh: the cluster did not come up within 30 s: $why" >&2
        cat "$WORK/cluster-create.out" >&2; redis_logs; exit 1; }
    echo "== cluster ok: $(cluster_view "$PORT" | awk '{$1 = $1; printf "%s%s", sep, $0; sep = "; "}')" >&2
fi

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
    # Ready: its lease is registered (`/readyz` answers 200), 15 s at most.
    if ! python3 - "$addr" <<'EOF'; then
import sys, time, urllib.request
for _ in range(150):
    try:
        if urllib.request.urlopen(f"http://{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
        echo "fanout.sh: edge $n ($addr) did not become ready within 15 s; its log:" >&2
        tail -n 40 "$WORK/edge$n.err" >&2
        exit 1
    fi
    EDGES+=("$addr")
done
EDGE_LIST=$(IFS=,; echo "${EDGES[*]}")
# Every Redis node is watched: the generator sums every name starting with `redis`.
WATCH=(--watch "edge0=${EDGE_PIDS[0]}" --watch "edge1=${EDGE_PIDS[1]}" --watch "redis=${REDIS_PIDS[0]}")
for n in $(seq 1 $((${#REDIS_PIDS[@]} - 1))); do WATCH+=(--watch "redis$n=${REDIS_PIDS[n]}"); done
if [ "$SHARDS" = 1 ]; then
    echo "== edges: $EDGE_LIST (pids ${EDGE_PIDS[*]}), redis pid ${REDIS_PIDS[0]}" >&2
else
    echo "== edges: $EDGE_LIST (pids ${EDGE_PIDS[*]}), redis pids ${REDIS_PIDS[*]}" >&2
fi
sleep 1 # leases registered, inbox readers running

# utime+stime ticks of the edges and Redis together.
sut_ticks() {
    local pid
    for pid in "${EDGE_PIDS[@]}" "${REDIS_PIDS[@]}"; do cat "/proc/$pid/stat"; done |
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
    for p in "${REDIS_PORTS[@]}"; do redis-cli -h 127.0.0.1 -p "$p" config resetstat >/dev/null; done
    echo "== fanout $i: $K rooms x $M members, $RATE publishes/s per room ($((K * M * RATE)) deliveries/s offered)" >&2
    "${CLIENT_PIN[@]}" "$REL/roomcast-fanout" fanout --edges "$EDGE_LIST" "${WATCH[@]}" \
        --rooms "$K" --members "$M" --rate "$RATE" --seconds "$MEASURE" --warmup "$WARMUP" \
        --payload-bytes "$PAYLOAD" --prefix "s$i-" --label "$sc" \
        --out "$RESULTS_DIR/fanout-$i.json"
    # Whole run (setup and warm-up included): the calls and per-call cost of RC.PUBLISHM
    # and XRANGE. Every node's, one after the other (`# node PORT` first under cluster);
    # the report sums calls and usec over the nodes.
    if [ "$SHARDS" = 1 ]; then
        redis-cli -h 127.0.0.1 -p "$PORT" info commandstats | tr -d '\r' >"$RESULTS_DIR/commandstats-$i.txt"
    else
        for p in "${REDIS_PORTS[@]}"; do
            echo "# node 127.0.0.1:$p"
            redis-cli -h 127.0.0.1 -p "$p" info commandstats | tr -d '\r'
        done >"$RESULTS_DIR/commandstats-$i.txt"
    fi
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

for n in 0 1; do
    if grep -qiE "error|panic" "$WORK/edge$n.err"; then
        echo "== edge $n logged errors (first lines):" >&2
        grep -iE "error|panic" "$WORK/edge$n.err" | head -5 >&2
    fi
done

echo "== results in $RESULTS_DIR ($(($(date +%s) - START)) s of runs; loadavg before $LOAD_BEFORE, after $LOAD_AFTER)" >&2
python3 - "$RESULTS_DIR" "$LOAD_BEFORE" "$LOAD_AFTER" "${SERVER_PIN[*]:-unpinned}" "$MAX_BG_PCT" "$SHARDS" <<'EOF'
import glob, json, os, sys
d, before, after, pin, max_bg, shards = sys.argv[1:7]
shards = int(shards)
runs = sorted(glob.glob(os.path.join(d, "fanout-*.json")), key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
f = lambda x, n=1: "—" if x is None else f"{x:,.{n}f}"
print(f"loadavg before {before}, after {after}; system under test {pin}"
      + ("" if shards == 1 else f"; Redis Cluster of {shards} masters: Redis figures are sums over all {shards} nodes") + "\n")
redis_col = "Redis CPU-µs/msg" if shards == 1 else f"Redis CPU-µs/msg ({shards} shards)"
print(f"| rooms × members | publishes/s | offered deliveries/s | delivered msgs/s | p50 ms | p99 ms | p99.9 ms | max ms | loss / dup / ooo | edge CPU-µs/msg | {redis_col} | edges+Redis core % | generator CPU-µs/msg (core %) | background CPU % | loadavg (1m) |")
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
    st = {}  # command -> [calls, usec], summed over the nodes
    if os.path.exists(cs_path):
        for line in open(cs_path):
            if line.startswith("cmdstat_"):
                name, rest = line.strip()[8:].split(":", 1)
                kv = dict(x.split("=", 1) for x in rest.split(","))
                t = st.setdefault(name, [0, 0, kv["usec_per_call"]])
                t[0] += int(kv["calls"])
                t[1] += int(kv["usec"])
    # One node: its own usec_per_call; several: usec / calls over all of them.
    per_call = lambda t: "—" if not t else t[2] if shards == 1 else f"{t[1] / max(1, t[0]):.2f}"
    pub, xr = st.get("rc.publishm"), st.get("xrange")
    calls = lambda t: f"{t[0]:,}" if t else "0"
    cmd_rows.append(f"| {r['rooms']} × {r['members']} | {f(r['published_per_s'],0)} | {calls(pub)} | {per_call(pub)} "
                    f"| {calls(xr)} | {per_call(xr)} |")
    bad = [k for k in ("publish_errors", "wrong_room", "bad_data") if r[k]]
    if bad or r["receivers_closed"] or r["publishers_closed"]:
        print(f"|  ⚠ {r['label']}: " + ", ".join(f"{k}={r[k]}" for k in bad)
              + f" closed={len(r['receivers_closed'])}+{len(r['publishers_closed'])} first_error={r['first_error']} |")
print()
if shards > 1:
    print(f"Redis Cluster of {shards} masters: calls and usec summed over the nodes.\n")
print("| rooms × members | publishes/s | RC.PUBLISHM calls | RC.PUBLISHM usec_per_call | XRANGE calls (catch-up, gaps) | XRANGE usec_per_call |")
print("|---|---|---|---|---|---|")
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
