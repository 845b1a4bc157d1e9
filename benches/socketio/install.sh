#!/usr/bin/env bash
# Installs the Socket.IO benchmark peer (benches/socketio/server.js) outside the repo:
# copies package.json, package-lock.json and .npmrc to DEST (default
# <workspace>/target/socketio/) and runs `npm ci` there, so node_modules never lands in
# the source tree. Re-running it is cheap when the lock file has not changed.
#
#   bash benches/socketio/install.sh            # -> target/socketio/{server.js,node_modules}
#   DEST=/tmp/sio bash benches/socketio/install.sh
#
# Prints the path of the installed server.js on stdout (everything else on stderr).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEST=${DEST:-"$ROOT/target/socketio"}

command -v node >/dev/null || { echo "install.sh: node not found (Node >= 20 needed)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm not found" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "install.sh: Node $(node --version) is too old (>= 20 needed)" >&2; exit 1; }

mkdir -p "$DEST"
stamp="$DEST/.lock.sha256"
want=$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)
cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/.npmrc" "$DEST/"
if [ -d "$DEST/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "install.sh: $DEST/node_modules is up to date" >&2
else
    echo "install.sh: npm ci in $DEST" >&2
    rm -f "$stamp"
    (cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
fi
# server.js is copied on every run (it resolves its modules from DEST/node_modules).
cp "$HERE/server.js" "$DEST/server.js"
echo "$DEST/server.js"
