#!/usr/bin/env bash
# Runs the whole roomcast test suite — the README's test command and what CI runs.
# Installs what is missing (redis-server, libclang-dev), builds the module, checks
# formatting and lints, then runs every unit and end-to-end test. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps

echo "== build the module and the edge (release) =="
cargo build --release -p roomcast-module -p roomcast-edge
echo "== format and lints =="
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests =="
cargo test --workspace --no-fail-fast
echo "== JavaScript client tests (Node's test runner, real edges) =="
(cd clients/js && node --experimental-websocket --test test/)
