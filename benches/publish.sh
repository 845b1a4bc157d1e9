#!/usr/bin/env bash
# RC.PUBLISH vs a bare pipelined XADD, side by side in one run.
#
# Builds the module (release), starts a private redis-server on a free loopback port
# with the module loaded, and runs redis-benchmark (-P 16) on three variants in
# interleaved order (A B C C B A per round):
#   A  bare   XADD {6.43}:bench:bare MAXLEN ~ 10000 * kind msg room lobby from "" skip "" offset "" data <payload>
#   B  pub1   RC.PUBLISH lobby <payload>     (10 members, all on 1 node  -> 1 inbox XADD)
#   C  pub10  RC.PUBLISH lobby10 <payload>   (10 members on 10 nodes     -> 10 inbox XADDs)
# The bare XADD writes the same 6 field/value pairs the module writes into an inbox.
#
# Per trial it records client ops/s, the server's usec_per_call from INFO commandstats
# (CONFIG RESETSTAT before each trial), and the Redis main-thread CPU per op from
# INFO cpu. Prints a markdown table of medians and the per-round ratios.
#
# Env knobs: ROUNDS (5), N (500000 requests per bare/pub1 trial), N10 (N/4 for pub10),
#            WARMUP_N (50000), CLIENTS (50), PIPELINE (16).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
N=${N:-500000}
N10=${N10:-$((N / 4))}
WARMUP_N=${WARMUP_N:-50000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
# 100 bytes of JSON; the same payload as benches/benches/pure.rs.
PAYLOAD='{"type":"chat","user":"alice","text":"hello everyone in the lobby, this is a test msg!","n":1234567}'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE="$ROOT/target/release/libroomcast.so"

for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "publish.sh: $tool not found" >&2; exit 1; }
done

echo "== building the module (release)" >&2
(cd "$ROOT" && cargo build --release -p roomcast-module >&2)

# A free loopback port: let the kernel pick one, never 6379.
PORT=6379
while [ "$PORT" = 6379 ]; do
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
done

SERVER_PIN=() CLIENT_PIN=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    SERVER_PIN=(taskset -c 0)
    if [ "$(nproc)" -ge 2 ]; then CLIENT_PIN=(taskset -c 1); fi
fi

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== redis-server on 127.0.0.1:$PORT (pinned: ${SERVER_PIN[*]:-no}; client: ${CLIENT_PIN[*]:-no})" >&2
"${SERVER_PIN[@]}" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" --loadmodule "$MODULE" &
SERVER_PID=$!

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
for _ in $(seq 50); do
    if cli ping 2>/dev/null | grep -q PONG; then break; fi
    sleep 0.1
done
cli ping >/dev/null || { echo "publish.sh: redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }

# Setup: room lobby = 10 members on node n0; room lobby10 = 10 members on nodes n0..n9.
# A failing RC.* reply is printed by redis-cli as "(error) ..." / "ERR ..." and stops us.
check() {
    local out
    out=$(cli "$@")
    case "$out" in
        *ERR*|*error*|*WRONGTYPE*) echo "publish.sh: '$*' failed: $out" >&2; exit 1 ;;
    esac
}
for i in $(seq 0 9); do
    check RC.NODE.LEASE lobby "n$i" 600000
    check RC.NODE.LEASE lobby10 "n$i" 600000
done
for i in $(seq 0 9); do
    check RC.JOIN lobby n0 "a$i" "user$i"
    check RC.JOIN lobby10 "n$i" "b$i" "user$i"
done
routed1=$(cli RC.PUBLISH lobby "$PAYLOAD" | head -2 | tr '\n' ' ')
routed10=$(cli RC.PUBLISH lobby10 "$PAYLOAD" | head -2 | tr '\n' ' ')
echo "== setup: RC.PUBLISH lobby -> [conns nodes] = [$routed1]; lobby10 -> [$routed10]" >&2
[ "$routed1" = "10 1 " ] && [ "$routed10" = "10 10 " ] || {
    echo "publish.sh: unexpected routing (wanted 10 1 / 10 10)" >&2; exit 1; }

stat_of() { case "$1" in bare) echo xadd ;; *) echo rc.publish ;; esac; }
n_of() { case "$1" in pub10) echo "$N10" ;; *) echo "$N" ;; esac; }

bench() { # variant requests -> prints "rps client_cpu_seconds"
    local variant=$1 n=$2
    local -a args
    case "$variant" in
        bare) args=(XADD '{6.43}:bench:bare' MAXLEN '~' 10000 '*' kind msg room lobby from '' skip '' offset '' data "$PAYLOAD") ;;
        pub1) args=(RC.PUBLISH lobby "$PAYLOAD") ;;
        pub10) args=(RC.PUBLISH lobby10 "$PAYLOAD") ;;
    esac
    python3 -c '
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True).stdout
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
# CSV: "test","rps",... and the test name may hold commas: the rps is 7th from the end.
rps = out.strip().splitlines()[-1].split(",")[-7].strip("\"")
print(rps, ru.ru_utime + ru.ru_stime)
' "${CLIENT_PIN[@]}" redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$CLIENTS" -P "$PIPELINE" -n "$n" --csv "${args[@]}"
}

cpu_redis() { # Redis process user+sys CPU seconds (all threads)
    cli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f\n", s}'
}
cpu_main() { # Redis main-thread user+sys CPU seconds
    cli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user)_main_thread:/ {s += $2} END {printf "%.6f\n", s}'
}
usec_per_call() { # command name -> usec_per_call|calls
    cli info commandstats | tr -d '\r' | python3 -c '
import sys
want = "cmdstat_" + sys.argv[1] + ":"
for line in sys.stdin:
    if line.startswith(want):
        f = dict(kv.split("=") for kv in line[len(want):].strip().split(","))
        print(f["usec_per_call"], f["calls"], f.get("failed_calls", "0"))
        break
else:
    print("nan 0 0")
' "$1"
}
# Whole box: busy (user nice system irq softirq steal) and total jiffies.
busy_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
HZ=$(getconf CLK_TCK)
# A trial whose background CPU (box busy minus Redis minus the client) is above this
# share of the box is flagged, and rounds holding one are left out of the ratios.
MAX_BG_PCT=${MAX_BG_PCT:-10}

echo "== warm-up" >&2
for v in bare pub1 pub10; do bench "$v" "$WARMUP_N" >/dev/null; done

RESULTS="$WORK/results.tsv"
printf 'round\tvariant\tn\trps\tusec_per_call\tcpu_us_per_op\tcalls\tfailed\tbg_pct\tloadavg\n' >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
    for v in bare pub1 pub10 pub10 pub1 bare; do
        n=$(n_of "$v")
        cli config resetstat >/dev/null
        main0=$(cpu_main)
        all0=$(cpu_redis)
        read -r busy0 total0 < <(busy_jiffies)
        read -r rps client_cpu < <(bench "$v" "$n")
        read -r busy1 total1 < <(busy_jiffies)
        all1=$(cpu_redis)
        main1=$(cpu_main)
        read -r upc calls failed < <(usec_per_call "$(stat_of "$v")")
        read -r cpu_op bg < <(python3 -c "
main = ($main1 - $main0) * 1e6 / $n
busy = ($busy1 - $busy0) / $HZ
total = max(1, $total1 - $total0) / $HZ
bg = max(0.0, busy - ($all1 - $all0) - $client_cpu) * 100 / total
print(f'{main:.3f} {bg:.0f}')")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$v" "$n" "$rps" "$upc" "$cpu_op" \
            "$calls" "$failed" "$bg" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS"
        printf '   round %s %-5s n=%-7s %10s ops/s  %6s usec/call  %6s cpu-us/op  background %s%%\n' \
            "$round" "$v" "$n" "$rps" "$upc" "$cpu_op" "$bg" >&2
    done
done
ELAPSED=$(($(date +%s) - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Anything odd the server logged (module warnings etc.).
if grep -E -i 'warn|error|panic' "$WORK/redis.log" | grep -v -i 'overcommit\|THP\|transparent' >"$WORK/odd.log"; then
    echo "== redis.log warnings:" >&2
    cat "$WORK/odd.log" >&2
fi

echo
echo "### RC.PUBLISH vs bare XADD — $(date -u +%Y-%m-%d) — nproc $(nproc), loadavg before $LOAD_BEFORE, after $LOAD_AFTER"
echo
echo "redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), -c $CLIENTS -P $PIPELINE, $ROUNDS rounds of A B C C B A, ${ELAPSED}s measured; server ${SERVER_PIN[*]:-unpinned}, client ${CLIENT_PIN[*]:-unpinned}"
echo
python3 - "$RESULTS" "$MAX_BG_PCT" <<'PY'
import csv, statistics, sys

all_rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
max_bg = float(sys.argv[2])
noisy = sorted({int(r["round"]) for r in all_rows if float(r["bg_pct"]) > max_bg})
rows = [r for r in all_rows if int(r["round"]) not in noisy]
if not rows:
    print(f"**Every round had a trial with background CPU > {max_bg:.0f} %: all rounds kept, treat with care.**")
    print()
    rows = all_rows
elif noisy:
    print(f"Rounds left out (a trial had background CPU > {max_bg:.0f} % of the box): {noisy}.")
    print()
variants = ["bare", "pub1", "pub10"]
label = {
    "bare": "bare `XADD` (6 pairs, MAXLEN ~ 10000)",
    "pub1": "`RC.PUBLISH`, 10 members on 1 node",
    "pub10": "`RC.PUBLISH`, 10 members on 10 nodes",
}
rounds = sorted({int(r["round"]) for r in rows})

def per_round(v, field):
    """Mean of the two trials of a variant in each round."""
    return [statistics.mean(float(r[field]) for r in rows if r["variant"] == v and int(r["round"]) == k)
            for k in rounds]

def med(xs):
    return statistics.median(xs)

def span(xs, fmt="{:.2f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

failed = sum(int(r["failed"]) for r in rows)
print("| variant | ops/s (median, min–max) | usec_per_call | Redis main-thread CPU µs/op (INFO cpu) |")
print("|---|---|---|---|")
for v in variants:
    rps = [float(r["rps"]) for r in rows if r["variant"] == v]
    upc = [float(r["usec_per_call"]) for r in rows if r["variant"] == v]
    cpu = [float(r["cpu_us_per_op"]) for r in rows if r["variant"] == v]
    print(f"| {label[v]} | {span(rps, '{:,.0f}')} | {span(upc)} | {span(cpu)} |")
print()

up = {v: per_round(v, "usec_per_call") for v in variants}
cp = {v: per_round(v, "cpu_us_per_op") for v in variants}
rp = {v: per_round(v, "rps") for v in variants}
ratio = lambda a, b: [x / y for x, y in zip(a, b)]
extra = lambda d: [(c - b) / 9 for b, c in zip(d["pub1"], d["pub10"])]

print("| ratio (per-round, median and min–max) | usec_per_call | Redis CPU/op | time/op from ops/s |")
print("|---|---|---|---|")
print(f"| RC.PUBLISH(1 node) / XADD | {span(ratio(up['pub1'], up['bare']))} | {span(ratio(cp['pub1'], cp['bare']))} | {span(ratio(rp['bare'], rp['pub1']))} |")
print(f"| RC.PUBLISH(10 nodes) / RC.PUBLISH(1 node) | {span(ratio(up['pub10'], up['pub1']))} | {span(ratio(cp['pub10'], cp['pub1']))} | {span(ratio(rp['pub1'], rp['pub10']))} |")
print(f"| each extra node, µs | {span(extra(up))} | {span(extra(cp))} | — |")
print(f"| each extra node / XADD | {span(ratio(extra(up), up['bare']))} | {span(ratio(extra(cp), cp['bare']))} | — |")
print()
bg = [int(r["bg_pct"]) for r in all_rows]
print(f"Rounds used: {len(rounds)} of {len({r['round'] for r in all_rows})}. Background CPU per trial "
      f"(box busy minus Redis minus client, % of all cores): {min(bg)}–{max(bg)} %. failed_calls: {failed}.")
PY
