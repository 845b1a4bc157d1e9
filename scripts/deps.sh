# Sourced by scripts/run.sh and scripts/test.sh: makes sure the system packages
# roomcast needs are present, installing them with apt when possible (and the browser
# test's npm packages with npm ci), and otherwise stopping with a message that says how.

need_package() { # need_package <what is missing> <debian package>
  local what=$1 package=$2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "roomcast: $what is missing; installing the Debian package $package" >&2
    if [ -z "${ROOMCAST_APT_UPDATED:-}" ]; then
      apt-get update -qq >&2 || { echo "roomcast: apt-get update failed" >&2; exit 1; }
      export ROOMCAST_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 \
      || { echo "roomcast: could not install $package" >&2; exit 1; }
  else
    echo "roomcast: $what is missing. Install it with: sudo apt-get install -y $package" >&2
    exit 1
  fi
}

# The browser test (tests/tests/demo_browser.rs) drives Debian's Chromium with
# playwright-core from tests/browser/node_modules (never a downloaded browser).
ensure_browser_deps() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  command -v node >/dev/null || need_package "Node.js (browser tests)" nodejs
  command -v npm >/dev/null || need_package "npm (browser tests)" npm
  [ -x "${ROOMCAST_CHROMIUM:-/usr/bin/chromium}" ] \
    || need_package "Chromium (browser tests)" chromium
  local modules="$root/tests/browser/node_modules"
  if [ ! -f "$modules/playwright-core/package.json" ] \
     || [ "$root/tests/browser/package-lock.json" -nt "$modules/.package-lock.json" ]; then
    echo "roomcast: installing the browser test's npm packages into tests/browser" >&2
    local install=install
    [ -f "$root/tests/browser/package-lock.json" ] && install=ci
    npm "$install" --prefix "$root/tests/browser" --no-audit --no-fund >&2 || {
      echo "roomcast: npm $install --prefix tests/browser failed" >&2
      exit 1
    }
  fi
}

# The load-balancer test (tests/tests/lb_balancers.rs) runs the configurations in
# deploy/ with Debian's real nginx and HAProxy (/usr/sbin/nginx, /usr/sbin/haproxy;
# ROOMCAST_NGINX / ROOMCAST_HAPROXY point elsewhere). The test starts its own
# processes on loopback; on a machine with systemd, installing the packages also
# enables their services (nginx on port 80), which the test does not need.
ensure_lb_deps() {
  [ -x "${ROOMCAST_NGINX:-/usr/sbin/nginx}" ] || need_package "nginx (load-balancer test)" nginx
  [ -x "${ROOMCAST_HAPROXY:-/usr/sbin/haproxy}" ] \
    || need_package "HAProxy (load-balancer test)" haproxy
}

# ensure_deps [--no-browser | --run-only]: what building and testing need.
#   --no-browser  skips the browser test's Chromium, Node.js and npm packages;
#   --run-only    only what building and running need (scripts/run.sh, soak.sh): no
#                 browser packages and no nginx or HAProxy either.
ensure_deps() {
  command -v cargo >/dev/null || {
    echo "roomcast: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
  }
  command -v redis-server >/dev/null || need_package "redis-server" redis-server
  # The clock tests (tests/tests/module_reliability.rs) build a small LD_PRELOAD shim
  # (tests/src/clockshift.c) with cc; libfaketime cannot run Redis (jemalloc recursion).
  command -v cc >/dev/null || need_package "a C compiler (cc)" gcc
  # bindgen (used by the redis-module crate) needs libclang.
  if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 \
     && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
     && ! ls /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    need_package "libclang (needed to build the module)" libclang-dev
  fi
  case "${1:-}" in
    --run-only) ;;
    --no-browser) ensure_lb_deps ;;
    *)
      ensure_lb_deps
      ensure_browser_deps
      ;;
  esac
}
