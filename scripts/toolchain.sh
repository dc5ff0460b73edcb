# Sourced by the project's scripts: checks for the Rust toolchain and the C tools some crates
# build with, installing the Debian packages that are missing.

# Installs Debian packages ($2...) for what $1 says, as root (apt-get), or says which to install.
install_debian_packages() {
  local what="$1"
  shift
  if [ "$(id -u)" -ne 0 ]; then
    echo "$what needs these Debian packages, and installing them needs root: $*" >&2
    exit 1
  fi
  echo "installing $what: $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

require_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo is not installed: GospeLib builds with the machine's Rust toolchain (rustup, rustc 1.95 or newer)" >&2
    exit 1
  }
  local missing=()
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  # OpenSSL's headers, for the svix crate (Clerk webhook signatures) built with native TLS.
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  # jemalloc's build script (tikv-jemalloc-sys) runs make.
  command -v make >/dev/null 2>&1 || missing+=(make)
  if [ ${#missing[@]} -gt 0 ]; then
    install_debian_packages "the build tools" "${missing[@]}"
  fi
}

# `cargo fmt`, which scripts/test checks the formatting with (rustup's minimal profile leaves it
# out).
require_rustfmt() {
  if ! cargo fmt --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 && rustup component add rustfmt >&2 ||
      { echo "cargo fmt is missing: rustup component add rustfmt" >&2; exit 1; }
  fi
}

# What `gospelib corpus import` runs: mod2imp (libsword-utils), npm, pip, apt-get download and
# dpkg-deb. Installs the Debian packages that are missing.
require_import_tools() {
  local missing=()
  command -v mod2imp >/dev/null 2>&1 || missing+=(libsword-utils)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  if [ ${#missing[@]} -gt 0 ]; then
    install_debian_packages "the corpus import tools" "${missing[@]}"
  fi
}

# Node.js 20 or newer and npm, for the partner integration (client-tests/partner-ts, run by a
# test of the launcher). Installs Debian's packages when either is missing. Where the machine's
# Node.js is older than 20 (Debian 12's is 18), installs Node.js 20 from the npm registry (the
# `node` package, with Debian's npm) under .stack/tools and puts it first on PATH, for this
# script and what it runs.
require_node() {
  local missing=()
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    install_debian_packages "Node.js" "${missing[@]}"
  fi
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    local tools
    tools="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.stack/tools/node20"
    if [ ! -x "$tools/node_modules/node/bin/node" ]; then
      echo "Node.js $(node --version) is older than 20: installing Node.js 20 (npm package node@20) under $tools" >&2
      npm install --prefix "$tools" --no-audit --no-fund --loglevel=error node@20 >&2
    fi
    export PATH="$tools/node_modules/node/bin:$PATH"
  fi
}
