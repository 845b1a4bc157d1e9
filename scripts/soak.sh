#!/usr/bin/env bash
# The roomcast soak (issue 6): a long mixed workload — open-loop publishing, connect /
# join / close churn, idle clients, an edge SIGKILLed and restarted every round — then
# checks that the long-lived edge's memory and descriptors, Redis memory and the
# module's presence came back flat. See scripts/soak.py for what runs and the verdict.
#
#   bash scripts/soak.sh            # 30 minutes (rounds of 60 s)
#   bash scripts/soak.sh 5          # a 5-minute run
#   ROUND_S=30 bash scripts/soak.sh 3
#
# Results: target/soak/<stamp>/ (samples.jsonl, summary.json, logs). Exit 0 = pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps --run-only
cargo build --release -p roomcast-module -p roomcast-edge -p roomcast-benches
exec python3 scripts/soak.py "${1:-30}"
