#!/usr/bin/env bash
# Starts roomcast locally: builds the module and runs redis-server with it loaded on
# 127.0.0.1:${ROOMCAST_REDIS_PORT:-6380} in the foreground (Ctrl-C stops it).
# Extra arguments are passed to the module (e.g. `publish-rate 20 ban-after 5`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps

port=${ROOMCAST_REDIS_PORT:-6380}
cargo build --release -p roomcast-module
module="$PWD/target/release/libroomcast.so"
data=$(mktemp -d -t roomcast.XXXXXX)
trap 'rm -rf "$data"' EXIT

cat <<MSG
roomcast: Redis with the roomcast module on 127.0.0.1:$port (data in $data)
  try:  redis-cli -p $port RC.INFO
        redis-cli -p $port RC.NODE.LEASE lobby n1 60000
        redis-cli -p $port RC.JOIN lobby n1 c1 ann
        redis-cli -p $port RC.PUBLISH lobby '{"text":"hi"}'
MSG
exec redis-server --port "$port" --bind 127.0.0.1 --dir "$data" --save '' \
  --loadmodule "$module" "$@"
