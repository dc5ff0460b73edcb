# Sourced by the project's scripts: checks for the Rust toolchain and the C tools some crates
# build with, installing the Debian packages that are missing.

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
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing build tools: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
    echo "installing the corpus import tools: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# Node.js and npm, for the partner integration (client-tests/partner-ts, run by a test of the
# launcher). Installs Debian's packages when either is missing.
require_node() {
  local missing=()
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Node.js: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}
