#!/usr/bin/env bash
# Autobahn|Testsuite (RFC 6455 conformance) against roomcast-edge in `--echo` mode.
#
#   bash tests/autobahn/run.sh [echo|limits|all]...      (default: all)
#
# Run "echo":   cases 1-10 with raised limits (16 MiB messages, 10^6 fragments), spec
#               tests/autobahn/fuzzingclient.json.
# Run "limits": cases 1-10 with the production limits (64 KiB per message counted across
#               fragments -> close 1009; 128 fragments -> close 1008), spec
#               tests/autobahn/fuzzingclient-limits.json. Cases whose message is over a
#               limit must end with the edge closing with exactly that code.
#
# Pass bar: 0 FAILED, 0 WRONG CODE, 0 UNCLEAN (behavior or close behavior), every case of
# the spec reported, the edge still alive at the end. See tests/autobahn/README.md.
#
# Exit status:
#   0   every selected run passed
#   1   a conformance failure (offending cases are listed), or the edge died mid-run
#   2   setup error: edge binary missing or without --echo, edge did not start, the
#       Autobahn install failed, wstest crashed or timed out, bad arguments
#   77  Autobahn did NOT run: no CPython 2.7 (or it has no pip). Loud message printed.
#
# Environment (all optional):
#   AUTOBAHN_PYTHON   a CPython 2.7 interpreter to use (checked before pyenv and PATH)
#   AUTOBAHN_EDGE     the edge binary (default target/release/roomcast-edge; not built here)
#   AUTOBAHN_CASES    comma-separated case patterns overriding the specs, e.g. "1.*,5.*"
#   AUTOBAHN_TIMEOUT  seconds one wstest run may take (default 900)
#   AUTOBAHN_REINSTALL=1  ignore the cached install in target/autobahn/site
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

HERE=tests/autobahn
WORK=$ROOT/target/autobahn
SITE=$WORK/site
EDGE=${AUTOBAHN_EDGE:-$ROOT/target/release/roomcast-edge}
ATS_VERSION=25.10.1
RUN_TIMEOUT=${AUTOBAHN_TIMEOUT:-900}

EXIT_FAIL=1
EXIT_SETUP=2
EXIT_NO_PY27=77

EDGE_PID=
WSTEST_PID=

log() { printf '[autobahn] %s\n' "$*"; }
die() { # die STATUS MESSAGE...
    local status=$1
    shift
    printf '[autobahn] ERROR: %s\n' "$*" >&2
    exit "$status"
}

cleanup() {
    if [ -n "$WSTEST_PID" ] && kill -0 "$WSTEST_PID" 2>/dev/null; then
        kill -TERM "$WSTEST_PID" 2>/dev/null || true # timeout(1) passes it on to wstest
        wait "$WSTEST_PID" 2>/dev/null || true
    fi
    WSTEST_PID=
    stop_edge
}

stop_edge() {
    if [ -n "$EDGE_PID" ] && kill -0 "$EDGE_PID" 2>/dev/null; then
        kill -TERM "$EDGE_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$EDGE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$EDGE_PID" 2>/dev/null || true
        wait "$EDGE_PID" 2>/dev/null || true
    fi
    EDGE_PID=
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- arguments
RUNS=()
for arg in "$@"; do
    case $arg in
        echo | limits) RUNS+=("$arg") ;;
        all) RUNS+=(echo limits) ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die $EXIT_SETUP "unknown argument '$arg' (expected echo, limits or all)" ;;
    esac
done
[ ${#RUNS[@]} -gt 0 ] || RUNS=(echo limits)

# ---------------------------------------------------------------------------- Python 2.7
not_run() { # the loud "did not run" banner, then exit 77
    local bar='################################################################################'
    {
        echo
        echo "$bar"
        echo "##"
        echo "##   AUTOBAHN|TESTSUITE DID NOT RUN -- WebSocket conformance was NOT tested."
        echo "##"
        for line in "$@"; do echo "##   $line"; done
        echo "##"
        echo "##   wstest (autobahntestsuite $ATS_VERSION) is Python-2-only code: it needs"
        echo "##   CPython 2.7 with pip. To get one:"
        echo "##     pyenv install 2.7.18        (https://github.com/pyenv/pyenv; needs the"
        echo "##                                  usual build deps: libssl-dev zlib1g-dev ...)"
        echo "##     or a distribution package   (e.g. apt-get install python2.7, then pip from"
        echo "##                                  https://bootstrap.pypa.io/pip/2.7/get-pip.py)"
        echo "##   then re-run:  bash tests/autobahn/run.sh"
        echo "##   (or point AUTOBAHN_PYTHON at the interpreter). Exit status $EXIT_NO_PY27."
        echo "##"
        echo "$bar"
        echo
    } >&2
    exit $EXIT_NO_PY27
}

is_cpython27() {
    "$1" -E -s -c 'import sys, platform
sys.exit(0 if sys.version_info[:2] == (2, 7) and platform.python_implementation() == "CPython" else 1)' \
        >/dev/null 2>&1
}

find_python27() {
    local candidates=() c pyenv_root
    if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
        candidates+=("$AUTOBAHN_PYTHON")
    fi
    pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root=$(pyenv root 2>/dev/null || echo "$pyenv_root")
    fi
    local found=()
    shopt -s nullglob
    found=("$pyenv_root"/versions/2.7*/bin/python2.7)
    shopt -u nullglob
    if [ ${#found[@]} -gt 0 ]; then
        # newest 2.7.x first
        while IFS= read -r c; do candidates+=("$c"); done \
            < <(printf '%s\n' "${found[@]}" | sort -V -r)
    fi
    for c in python2.7 python2; do
        if command -v "$c" >/dev/null 2>&1; then candidates+=("$(command -v "$c")"); fi
    done
    for c in ${candidates[@]+"${candidates[@]}"}; do
        if is_cpython27 "$c"; then
            echo "$c"
            return 0
        fi
    done
    if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
        log "AUTOBAHN_PYTHON=$AUTOBAHN_PYTHON is not a working CPython 2.7" >&2
    fi
    return 1
}

PY=$(find_python27) || not_run "No CPython 2.7 interpreter was found (looked at \$AUTOBAHN_PYTHON," \
    "pyenv's versions/2.7*/bin/python2.7, and python2.7/python2 on PATH)."
"$PY" -E -s -m pip --version >/dev/null 2>&1 ||
    not_run "CPython 2.7 found at $PY, but it has no pip (python2.7 -m pip fails)."
log "Python 2.7: $PY ($("$PY" -E -s -c 'import sys; print(sys.version.split()[0])'))"

# ---------------------------------------------------------------------------- the edge
[ -x "$EDGE" ] || die $EXIT_SETUP "no edge binary at $EDGE; build it first:" \
    "cargo build --release -p roomcast-edge"
if ! "$EDGE" --help 2>/dev/null | grep -q -- '--echo'; then
    die $EXIT_SETUP "$EDGE has no --echo flag (an old build?); rebuild it:" \
        "cargo build --release -p roomcast-edge"
fi
command -v python3 >/dev/null || die $EXIT_SETUP "python3 is needed to read the reports"

# Runs wstest (or, with --check, imports the suite) from $SITE. `site.addsitedir` processes
# the .pth files there (zope is a namespace package); the new entries go first on sys.path
# so that nothing in the interpreter's own site-packages shadows the pinned versions.
LOADER='import sys, site
d = sys.argv[1]
before = list(sys.path)
site.addsitedir(d)
sys.path[:] = [p for p in sys.path if p not in before] + before
if sys.argv[2:] == ["--check"]:
    import autobahntestsuite, autobahn, twisted, zope.interface
    try:
        import wsaccel
        acc = "wsaccel %s" % getattr(wsaccel, "__version__", "?")
    except ImportError:
        acc = "no wsaccel (slow pure-Python masking)"
    print("autobahntestsuite %s, autobahn %s, Twisted %s, %s" % (
        autobahntestsuite.version, autobahn.version, twisted.__version__, acc))
else:
    sys.argv = ["wstest"] + sys.argv[2:]
    from autobahntestsuite.wstest import run
    run()'

# ---------------------------------------------------------------------------- install
# autobahntestsuite's sdist lists no install_requires (its requirements.txt is missing from
# the sdist), so the dependency set is taken from the sdist's egg-info/requires.txt (pins
# that still support Python 2.7); tests/autobahn/constraints-py27.txt pins the transitive
# dependencies to versions known to work on 2.7. Installed with `pip install --target` into
# target/autobahn/site, once; later runs reuse it.
# One run.sh at a time per checkout: runs share target/autobahn (install, reports).
mkdir -p "$WORK"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$WORK/.lock"
    if ! flock -n 9; then
        log "another run.sh is using ${WORK#"$ROOT"/}; waiting for it to finish ..."
        flock 9
    fi
fi

install_suite() {
    local dl=$WORK/dl sdist req cons=$HERE/constraints-py27.txt stamp want
    sdist=$dl/autobahntestsuite-$ATS_VERSION.tar.gz
    req=$WORK/requirements-py27.txt
    mkdir -p "$dl"
    if [ ! -f "$sdist" ]; then
        log "downloading autobahntestsuite $ATS_VERSION (sdist) ..."
        "$PY" -E -s -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
            -d "$dl" "autobahntestsuite==$ATS_VERSION" >"$WORK/pip-download.log" 2>&1 || {
            tail -n 20 "$WORK/pip-download.log" >&2
            die $EXIT_SETUP "could not download autobahntestsuite $ATS_VERSION (network? PyPI?)," \
                "log: $WORK/pip-download.log"
        }
    fi
    python3 - "$sdist" "$req" <<'PY'
import sys, tarfile
sdist, out = sys.argv[1], sys.argv[2]
with tarfile.open(sdist) as t:
    member = next(m for m in t.getmembers() if m.name.endswith(".egg-info/requires.txt"))
    text = t.extractfile(member).read().decode()
seen, lines = set(), []
for line in text.splitlines():
    line = line.strip()
    if line.startswith("["):      # an extras section: not part of the base set
        break
    if not line or line.startswith("#"):
        continue
    name = line.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
    if name in seen:              # requires.txt lists pyOpenSSL twice
        continue
    seen.add(name)
    lines.append(line)
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
PY
    stamp=$SITE/.roomcast-install
    want="autobahntestsuite==$ATS_VERSION $PY $(cat "$req" "$cons" | sha256sum | cut -c1-16)"
    if [ "${AUTOBAHN_REINSTALL:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        "$PY" -E -s -c "$LOADER" "$SITE" --check >/dev/null 2>&1; then
        log "using the cached install in ${SITE#"$ROOT"/}"
    else
        log "installing autobahntestsuite $ATS_VERSION and its Python 2.7 dependencies into" \
            "${SITE#"$ROOT"/} (once; log: ${WORK#"$ROOT"/}/pip-install.log) ..."
        rm -rf "$SITE" "$SITE.tmp"
        if ! "$PY" -E -s -m pip install --disable-pip-version-check --no-warn-script-location \
            --target "$SITE.tmp" -r "$req" -c "$cons" "$sdist" >"$WORK/pip-install.log" 2>&1; then
            tail -n 30 "$WORK/pip-install.log" >&2
            rm -rf "$SITE.tmp"
            die $EXIT_SETUP "pip install of autobahntestsuite failed, log: $WORK/pip-install.log"
        fi
        mv "$SITE.tmp" "$SITE"
        echo "$want" >"$stamp"
    fi
    local version
    version=$("$PY" -E -s -c "$LOADER" "$SITE" --check 2>&1) || {
        echo "$version" >&2
        rm -f "$stamp"
        die $EXIT_SETUP "the installed autobahntestsuite does not import (see above)"
    }
    log "$version"
}
install_suite

# ---------------------------------------------------------------------------- one run
# start_edge OUTDIR FLAGS...: starts the edge on a free loopback port, sets EDGE_PID and
# EDGE_ADDR. ROOMCAST_* variables of the caller are not passed on (a ROOMCAST_REDIS would
# conflict with --echo).
start_edge() {
    local out=$1
    shift
    local unset_env=() v
    for v in $(compgen -e); do
        case $v in ROOMCAST_*) unset_env+=(-u "$v") ;; esac
    done
    env ${unset_env[@]+"${unset_env[@]}"} NO_COLOR=1 "$EDGE" "$@" >"$out/edge.stdout" 2>"$out/edge.log" &
    EDGE_PID=$!
    EDGE_ADDR=
    for _ in $(seq 300); do
        EDGE_ADDR=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$out/edge.stdout" 2>/dev/null |
            head -n 1) || true
        [ -n "$EDGE_ADDR" ] && return 0
        kill -0 "$EDGE_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$out/edge.stdout" "$out/edge.log" >&2 || true
    stop_edge
    die $EXIT_SETUP "the edge did not start (no 'listening on' line within 30 s): $EDGE $*"
}

# run_one NAME: one wstest run against a fresh edge; writes OUTDIR/verdicts.json.
# Returns 0 (pass) or 1 (conformance failure); exits on setup errors.
run_one() {
    local name=$1 spec_template flags max_msg max_frags
    case $name in
        echo)
            spec_template=$HERE/fuzzingclient.json
            max_msg=16777216
            max_frags=1000000
            # --send-queue-bytes: the outbound cap must hold a 16 MiB echo (case 9.1.6).
            flags=(--echo --allow-anonymous --workers 1 --listen 127.0.0.1:0
                --max-message-bytes $max_msg --max-fragments $max_frags --conn-rate 0
                --send-queue-bytes 33554432)
            ;;
        limits)
            spec_template=$HERE/fuzzingclient-limits.json
            max_msg=65536   # the edge's defaults, which these flags leave alone
            max_frags=128
            flags=(--echo --allow-anonymous --workers 1 --listen 127.0.0.1:0 --conn-rate 0)
            ;;
    esac
    local out=$WORK/reports/$name
    rm -rf "$out"
    mkdir -p "$out"

    start_edge "$out" "${flags[@]}"
    local url="ws://$EDGE_ADDR/ws?user=autobahn"
    python3 - "$spec_template" "$out/spec.json" "$url" "$out" "${AUTOBAHN_CASES:-}" <<'PY'
import json, sys
template, dest, url, outdir, cases = sys.argv[1:6]
spec = json.load(open(template))
spec["outdir"] = outdir
for server in spec["servers"]:
    server["url"] = url
if cases.strip():
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
json.dump(spec, open(dest, "w"), indent=2)
PY
    log "[$name] edge pid $EDGE_PID on $url: ${flags[*]}"
    log "[$name] wstest -m fuzzingclient -s ${out#"$ROOT"/}/spec.json (log: ${out#"$ROOT"/}/wstest.log) ..."
    local t0 rc=0 edge_alive=1
    t0=$(date +%s.%N)
    # In the background, so that a signal to this script is handled at once (the traps
    # stop wstest and the edge) rather than after wstest finishes.
    timeout --kill-after=10 "$RUN_TIMEOUT" "$PY" -E -s -c "$LOADER" "$SITE" \
        -m fuzzingclient -s "$out/spec.json" >"$out/wstest.log" 2>&1 &
    WSTEST_PID=$!
    wait "$WSTEST_PID" || rc=$?
    WSTEST_PID=
    python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" \
        "$t0" "$(date +%s.%N)" >"$out/wall_s"
    kill -0 "$EDGE_PID" 2>/dev/null || edge_alive=0
    stop_edge
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        tail -n 20 "$out/wstest.log" >&2
        die $EXIT_SETUP "[$name] wstest did not finish within ${RUN_TIMEOUT}s (AUTOBAHN_TIMEOUT)"
    fi
    if [ $rc -ne 0 ] || [ ! -f "$out/index.json" ]; then
        tail -n 30 "$out/wstest.log" >&2
        if [ $edge_alive = 0 ]; then
            tail -n 20 "$out/edge.log" >&2
            log "[$name] the edge exited during the run (log: $out/edge.log)" >&2
            exit $EXIT_FAIL
        fi
        die $EXIT_SETUP "[$name] wstest failed (status $rc) or wrote no index.json"
    fi
    log "[$name] done in $(cat "$out/wall_s") s"

    local verdict_rc=0
    python3 - "$name" "$out" "$max_msg" "$max_frags" "$edge_alive" <<'PY' || verdict_rc=$?
import ast, json, math, os, sys

name, out, max_msg, max_frags, edge_alive = sys.argv[1:6]
max_msg, max_frags, edge_alive = int(max_msg), int(max_frags), edge_alive == "1"

K, M = 1024, 1024 * 1024
# Message shapes of the cases in 1-10 whose messages can meet a limit:
# case -> (message bytes, fragment bytes; 0 = one frame). From the case sources.
SHAPES = {}
for c in ("1.1", "1.2"):
    SHAPES[c + ".6"] = (65535, 0)
    SHAPES[c + ".7"] = (65536, 0)
    SHAPES[c + ".8"] = (65536, 0)          # one frame, sent in TCP chops of 997
SHAPES["7.1.6"] = (256 * K, 0)
for c in ("9.1", "9.2"):
    for i, size in enumerate((64 * K, 256 * K, 1 * M, 4 * M, 8 * M, 16 * M), 1):
        SHAPES["%s.%d" % (c, i)] = (size, 0)
for c in ("9.3", "9.4"):
    for i, frag in enumerate((64, 256, 1 * K, 4 * K, 16 * K, 64 * K, 256 * K, 1 * M, 4 * M), 1):
        SHAPES["%s.%d" % (c, i)] = (4 * M, frag)
for c in ("9.5", "9.6"):
    for i in range(1, 7):
        SHAPES["%s.%d" % (c, i)] = (1 * M, 0)  # one frame, sent in TCP chops
SHAPES["10.1.1"] = (65536, 1300)


def expected_close(size, frag):
    """The edge's close code for this message, or None if it fits: frame by frame,
    more than max_msg bytes so far -> 1009, else more than max_frags frames -> 1008."""
    frag = frag or size
    frames = max(1, int(math.ceil(size / float(frag))))
    if size <= max_msg and frames <= max_frags:
        return None
    total = 0
    for k in range(1, frames + 1):
        total += min(frag, size - total)
        if total > max_msg:
            return 1009
        if k > max_frags:
            return 1008
    return None


BAD = ("FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT")
RANK = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "UNCLEAN", "WRONG CODE",
        "FAILED BY CLIENT", "FAILED"]


def rank(v):
    return RANK.index(v) if v in RANK else len(RANK)


index = json.load(open(os.path.join(out, "index.json")))
if len(index) != 1:
    sys.exit("[autobahn] expected one agent in index.json, got %s" % list(index))
cases = list(index.values())[0]

planned = None
for line in open(os.path.join(out, "wstest.log")):
    if line.startswith("Cases = "):
        planned = ast.literal_eval(line[len("Cases = "):].strip())
        break

counts, failures, rows = {}, [], {}
for cid, c in cases.items():
    exp = expected_close(*SHAPES[cid]) if cid in SHAPES else None
    remote = c.get("remoteCloseCode")
    detail = {}
    if c.get("reportfile") and os.path.exists(os.path.join(out, c["reportfile"])):
        detail = json.load(open(os.path.join(out, c["reportfile"])))
    if exp is not None:
        # Over a limit: the case's own verdict is moot (no echo comes back); what counts
        # is the close code the edge sent, in index.json and in the case's report.
        case_remote = detail.get("remoteCloseCode", "no case report")
        if remote == exp and case_remote == exp:
            verdict = "expected-%d" % exp
        else:
            verdict = "FAILED"
            failures.append((cid, "limit case: expected the edge to close with %d, got "
                             "remoteCloseCode=%s (case report: %s, reason %r; behavior %s, "
                             "close %s; %s)" % (exp, remote, case_remote,
                                                detail.get("remoteCloseReason"),
                                                c.get("behavior"), c.get("behaviorClose"),
                                                detail.get("wasNotCleanReason") or "clean")))
    else:
        verdict = max((c.get("behavior"), c.get("behaviorClose")), key=rank)
        if verdict in BAD:
            failures.append((cid, "behavior %s, close %s, remoteCloseCode=%s\n"
                             "          %s\n          expected: %s\n          result: %s\n"
                             "          close: %s" % (
                                 c.get("behavior"), c.get("behaviorClose"), remote,
                                 detail.get("description", ""),
                                 detail.get("expectation", ""),
                                 detail.get("result", ""), detail.get("resultClose", ""))))
    counts[verdict] = counts.get(verdict, 0) + 1
    rows[cid] = verdict

missing = sorted(set(planned or []) - set(cases),
                 key=lambda s: [int(x) for x in s.split(".")])
if planned is None:
    failures.append(("-", "could not read the planned case list from wstest.log"))
if missing:
    failures.append(("-", "%d planned cases have no report (the run broke off?): %s"
                     % (len(missing), " ".join(missing[:30]))))
if not edge_alive:
    failures.append(("-", "the edge process exited during the run (see edge.log)"))

summary = {"run": name, "cases": len(cases), "planned": len(planned or []),
           "missing": len(missing), "edge_alive": edge_alive, "counts": counts,
           "failures": [f[0] for f in failures], "wall_s": open(os.path.join(out, "wall_s")).read().strip(),
           "verdicts": rows}
json.dump(summary, open(os.path.join(out, "verdicts.json"), "w"), indent=1, sort_keys=True)

if failures:
    print("[autobahn] [%s] %d offending case(s):" % (name, len(failures)))
    key = lambda f: [int(x) for x in f[0].split(".")] if f[0] != "-" else [10 ** 6]
    for cid, why in sorted(failures, key=key):
        print("  %-8s %s" % (cid, why))
    sys.exit(1)
print("[autobahn] [%s] %d cases, all within the pass bar" % (name, len(cases)))
PY
    case $verdict_rc in
        0) ;;
        1) STATUS=$EXIT_FAIL ;;
        *) die $EXIT_SETUP "[$name] reading the reports failed (status $verdict_rc)" ;;
    esac
}

# ---------------------------------------------------------------------------- main
STATUS=0
for run in "${RUNS[@]}"; do
    run_one "$run"
done

python3 - "$WORK/reports" "${RUNS[@]}" <<'PY'
import json, os, sys
base, runs = sys.argv[1], sys.argv[2:]
data = [json.load(open(os.path.join(base, r, "verdicts.json"))) for r in runs]
rows = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE",
        "UNCLEAN", "FAILED BY CLIENT", "expected-1009", "expected-1008"]
extra = sorted({k for d in data for k in d["counts"]} - set(rows))
w = 10
print("")
print("Autobahn|Testsuite verdicts (per case; pass bar: 0 FAILED, 0 WRONG CODE, 0 UNCLEAN)")
print("%-20s" % "verdict" + "".join("%*s" % (w, r) for r in runs))
for row in rows + extra:
    print("%-20s" % row + "".join("%*d" % (w, d["counts"].get(row, 0)) for d in data))
print("%-20s" % "missing reports" + "".join("%*d" % (w, d["missing"]) for d in data))
print("%-20s" % "cases" + "".join("%*d" % (w, d["cases"]) for d in data))
print("%-20s" % "wall time (s)" + "".join("%*s" % (w, d["wall_s"]) for d in data))
print("%-20s" % "result" + "".join("%*s" % (w, "FAIL" if d["failures"] else "PASS") for d in data))
print("reports: %s/<run>/index.html" % os.path.relpath(base))
PY

if [ $STATUS -ne 0 ]; then
    log "FAILED: at least one case is outside the pass bar (listed above)"
fi
exit $STATUS
