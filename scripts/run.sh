#!/usr/bin/env bash
# Starts roomcast locally: builds the module and the edge, then runs the edge with its
# embedded redis-server (module loaded) on 127.0.0.1:${ROOMCAST_PORT:-8080}, one worker
# per core, anonymous connections allowed (local development). Ctrl-C drains and stops.
# Extra arguments are passed to roomcast-edge (see `roomcast-edge --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps

cargo build --release -p roomcast-module -p roomcast-edge
port=${ROOMCAST_PORT:-8080}
cat <<MSG
roomcast: starting the edge on 127.0.0.1:$port with an embedded Redis.
  connect:  ws://127.0.0.1:$port/ws?user=ann   (anonymous, local development)
  then send {"op":"join","room":"lobby"} and {"op":"publish","room":"lobby","data":{"text":"hi"}}
  metrics:  http://127.0.0.1:$port/metrics
MSG
exec target/release/roomcast-edge --listen "127.0.0.1:$port" --allow-anonymous \
  --module target/release/libroomcast.so "$@"
