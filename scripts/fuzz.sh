#!/usr/bin/env bash
# Fuzzes roomcast's decoders with cargo-fuzz (libFuzzer + AddressSanitizer, debug
# assertions on): every target under fuzz/ runs for the given time, one after the other,
# and the script fails if any of them finds a crash, a panic, a leak, a timeout or an
# out-of-memory. RELIABILITY row 1 asks for 10 min per target per PR and 1 h nightly.
#
#   bash scripts/fuzz.sh [seconds per target] [target …]
#
# Defaults: 600 s, every target (`cargo fuzz list`):
#   frame_reader    the edge's client frame reader (edge/src/ws/read.rs)
#   client_message  the client protocol decoder (ClientMessage, edge/src/protocol.rs)
#   inbox_entry     the inbox entry decoder (roomcast_common::entry::decode)
#   push_payload    the live push decoder (roomcast_common::push::decode)
#   module_args     every module command's argument parser (roomcast_common::command)
#   json_validator  the JSON scanner (roomcast_common::json) against serde_json
#
# Installs cargo-fuzz (`cargo install cargo-fuzz`) when it is missing. cargo-fuzz needs
# nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them.
# Each target's corpus grows in fuzz/corpus/<target>/ (seeded from the committed
# fuzz/seeds/<target>/), crashes land in fuzz/artifacts/<target>/ (replay one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <file>`), and each run's
# output is kept in fuzz/logs/<target>.log. Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 …".
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: bash scripts/fuzz.sh [seconds per target] [target …]" >&2
    exit 2
fi
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz =="
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== building ${#targets[@]} fuzz targets (release, ASan, debug assertions) =="
cargo fuzz build --fuzz-dir fuzz --debug-assertions

mkdir -p fuzz/logs
failed=()
summary=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds} s =="
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    flags=(-max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10)
    if [ -f "fuzz/dicts/$target.dict" ]; then
        flags+=(-dict="fuzz/dicts/$target.dict")
    fi
    # shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags on purpose
    flags+=(${FUZZ_ARGS:-})
    log="fuzz/logs/$target.log"
    if cargo fuzz run --fuzz-dir fuzz --debug-assertions "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" -- "${flags[@]}" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
        tail -n 40 "$log"
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    line="$target: $status, ${execs:-?} execs in ${seconds} s, corpus $corpus inputs"
    echo "$line"
    summary+=("$line")
done

echo "== summary =="
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)" >&2
    exit 1
fi
echo "no crashes"
