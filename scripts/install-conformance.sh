#!/usr/bin/env bash
# Install the official MCP conformance suite (@modelcontextprotocol/conformance) into
# <repo>/.cache: 0.2.0-alpha.12 into .cache/conf-alpha (has the `authorization` mode and
# the larger server suite) and the stable 0.1.16 into .cache/conf. Installs Node 22
# first (scripts/install-node22.sh). Idempotent: a fast no-op when already installed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODE_BIN="$("$ROOT/scripts/install-node22.sh" | tail -n 1)"
export PATH="$NODE_BIN:$PATH"

install_suite() {
  local dir="$1" version="$2"
  local pkg="$ROOT/.cache/$dir/node_modules/@modelcontextprotocol/conformance/package.json"
  if [[ -f "$pkg" ]] && grep -q "\"version\": \"$version\"" "$pkg"; then
    return 0
  fi
  npm install --no-audit --no-fund --loglevel=error --prefix "$ROOT/.cache/$dir" \
    "@modelcontextprotocol/conformance@$version" >&2
}

install_suite conf-alpha 0.2.0-alpha.12
install_suite conf 0.1.16

echo "node: $NODE_BIN/node"
echo "alpha: $ROOT/.cache/conf-alpha/node_modules/.bin/conformance"
echo "stable: $ROOT/.cache/conf/node_modules/.bin/conformance"
