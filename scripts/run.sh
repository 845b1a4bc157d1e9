#!/usr/bin/env bash
# Starts roomcast locally: builds the module and the edge, then runs the edge with its
# embedded redis-server (module loaded, room history on) on 127.0.0.1:${ROOMCAST_PORT:-8080},
# one worker per core, anonymous connections allowed (local development) and the demo
# chat page at /demo. Ctrl-C drains and stops.
# Extra arguments are passed to roomcast-edge (see `roomcast-edge --help`); module
# arguments given with --embedded-module-args are added after `history-len 1000`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps --run-only

cargo build --release -p roomcast-module -p roomcast-edge
port=${ROOMCAST_PORT:-8080}

# The edge takes --embedded-module-args once: merge ours with the caller's.
module_args="history-len 1000 ${ROOMCAST_EMBEDDED_MODULE_ARGS:-}"
edge_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --embedded-module-args)
      module_args="$module_args ${2:-}"
      shift $(($# > 1 ? 2 : 1))
      ;;
    --embedded-module-args=*)
      module_args="$module_args ${1#*=}"
      shift
      ;;
    *)
      edge_args+=("$1")
      shift
      ;;
  esac
done

cat <<MSG
roomcast: starting the edge on 127.0.0.1:$port with an embedded Redis.
  demo:     http://127.0.0.1:$port/demo   (open it in two browser windows)
  connect:  ws://127.0.0.1:$port/ws?user=ann   (anonymous, local development)
  then send {"op":"join","room":"lobby"} and {"op":"publish","room":"lobby","data":{"text":"hi"}}
  metrics:  http://127.0.0.1:$port/metrics
MSG
exec target/release/roomcast-edge --listen "127.0.0.1:$port" --allow-anonymous --demo \
  --module target/release/libroomcast.so --embedded-module-args "${module_args% }" \
  "${edge_args[@]}"
