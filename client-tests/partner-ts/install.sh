#!/usr/bin/env bash
# Installs what the partner integration runs on: Node.js 20 or newer and npm (Debian's packages
# when missing, Node.js 20 from the npm registry when the machine's is older; see
# scripts/toolchain.sh), then the exact tool versions of package-lock.json with
# `npm ci`, unless node_modules already holds them (a stamp of the lock file's sha256).
# Idempotent: a second run changes nothing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/toolchain.sh
. "$HERE/../../scripts/toolchain.sh"
require_node
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "Node.js $(node --version) is too old for the partner integration's tools: 20 or newer is needed" >&2
  exit 1
fi
cd "$HERE"
stamp="node_modules/.gospelib-lock.sha256"
wanted="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$wanted" > "$stamp"
