# Sourced by scripts/run.sh and scripts/test.sh: makes sure the system packages
# roomcast needs are present, installing them with apt when possible, and otherwise
# stopping with a message that says how.

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

ensure_deps() {
  command -v cargo >/dev/null || {
    echo "roomcast: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
  }
  command -v redis-server >/dev/null || need_package "redis-server" redis-server
  # bindgen (used by the redis-module crate) needs libclang.
  if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 \
     && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
     && ! ls /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    need_package "libclang (needed to build the module)" libclang-dev
  fi
}
