#!/usr/bin/env bash
# Builds the socketioxide benchmark peer (R3, benches/socketioxide/) in release, from its
# own lock file (--locked), into <workspace>/target/socketioxide/ (TARGET_DIR to change),
# so that nothing lands in the source tree. Re-running it is cheap when nothing changed.
#
#   bash benches/socketioxide/build.sh        # -> target/socketioxide/release/roomcast-bench-socketioxide
#
# Prints the path of the binary on stdout (everything else on stderr).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${TARGET_DIR:-"$ROOT/target/socketioxide"}

command -v cargo >/dev/null || { echo "build.sh: cargo not found" >&2; exit 1; }
echo "build.sh: cargo build --release in $TARGET_DIR" >&2
cargo build --release --locked -q --manifest-path "$HERE/Cargo.toml" --target-dir "$TARGET_DIR" >&2
bin="$TARGET_DIR/release/roomcast-bench-socketioxide"
[ -x "$bin" ] || { echo "build.sh: $bin missing after the build" >&2; exit 1; }
echo "$bin"
