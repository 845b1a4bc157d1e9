# Sourced by scripts/run.sh and scripts/test.sh: makes sure the system packages
# roomcast needs are present, installing them with apt when possible (and the browser
# test's npm packages with npm ci), and otherwise stopping with the exact command to run.
#
# Every Debian package is checked BY PACKAGE NAME (dpkg-query), never by a file that
# another package may also ship: a fresh machine once looked as if it had libclang
# because its base image carries libclang-cpp14, which is not libclang.
#
# What a fresh Debian machine with the Rust toolchain gets installed, by need:
#   building the module   libclang-dev (bindgen), gcc and libc6-dev (the clock shim)
#   running               redis-server (with redis-tools)
#   the load-balancer test nginx, haproxy
#   the browser test      chromium, nodejs with npm, playwright-core (npm ci)
# Autobahn|Testsuite needs CPython 2.7 (tests/autobahn/run.sh finds it or says loudly).

# The packages each use needs, in install order (the README's quick start lists them).
ROOMCAST_BUILD_PACKAGES="libclang-dev gcc libc6-dev"
ROOMCAST_RUN_PACKAGES="redis-server redis-tools"
ROOMCAST_LB_PACKAGES="nginx haproxy"
ROOMCAST_BROWSER_PACKAGES="chromium nodejs npm"

# package_installed <package>: true when dpkg has the package installed, or an
# installed package provides it (nodejs from NodeSource provides npm, for example).
package_installed() {
  local package=$1
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null)" = "ii " ] && return 0
  dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null | awk -F'|' -v want="$package" '
    $1 == "ii " { n = split($2, provided, /, */)
                  for (i = 1; i <= n; i++) { split(provided[i], name, / /)
                                             if (name[1] == want) found = 1 } }
    END { exit !found }'
}

# ensure_packages <why> <package>...: installs the packages that are not installed (as
# root, with apt-get), or stops with the exact command to run.
ensure_packages() {
  local why=$1 package missing=()
  shift
  if ! command -v dpkg-query >/dev/null; then
    echo "roomcast: this is not a Debian-based system (no dpkg-query); install the" \
      "equivalents of these Debian packages for $why, then re-run: $*" >&2
    exit 1
  fi
  for package in "$@"; do
    package_installed "$package" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "roomcast: $why needs the Debian packages: ${missing[*]}" >&2
    echo "roomcast: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "roomcast: $why needs ${missing[*]}: installing with apt-get" >&2
  if [ -z "${ROOMCAST_APT_UPDATED:-}" ]; then
    apt-get update -qq >&2 || { echo "roomcast: apt-get update failed" >&2; exit 1; }
    export ROOMCAST_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
    || { echo "roomcast: could not install ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1; }
  for package in "${missing[@]}"; do
    package_installed "$package" || {
      echo "roomcast: $package is still not installed after apt-get install" >&2
      exit 1
    }
  done
}

# The browser test (tests/tests/demo_browser.rs) drives Debian's Chromium with
# playwright-core from tests/browser/node_modules (never a downloaded browser).
ensure_browser_deps() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  # shellcheck disable=SC2086  # a word list
  ensure_packages "the browser test" $ROOMCAST_BROWSER_PACKAGES
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

# ensure_deps [--no-browser | --run-only]: what building and testing need.
#   --no-browser  skips the browser test's Chromium, Node.js and npm packages;
#   --run-only    only what building and running need (scripts/run.sh, soak.sh): no
#                 browser packages and no nginx or HAProxy either.
# The load-balancer test (tests/tests/lb_balancers.rs) runs the configurations in
# deploy/ with Debian's nginx and HAProxy; it starts its own processes on loopback (on a
# machine with systemd the packages also enable their services, which it does not need).
ensure_deps() {
  command -v cargo >/dev/null || {
    echo "roomcast: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
  }
  # shellcheck disable=SC2086  # word lists
  {
    ensure_packages "building the module" $ROOMCAST_BUILD_PACKAGES
    ensure_packages "running roomcast" $ROOMCAST_RUN_PACKAGES
    case "${1:-}" in
      --run-only) ;;
      --no-browser) ensure_packages "the load-balancer test" $ROOMCAST_LB_PACKAGES ;;
      *)
        ensure_packages "the load-balancer test" $ROOMCAST_LB_PACKAGES
        ensure_browser_deps
        ;;
    esac
  }
}
