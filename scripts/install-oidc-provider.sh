#!/usr/bin/env bash
# Install the OpenID Provider used as a test fixture (panva's `oidc-provider`, OpenID-certified,
# an exact pinned version) into <repo>/.cache/oidc-provider with npm. Installs Node 22 first
# (scripts/install-node22.sh). tests/support/oidc_op.py runs tests/support/oidc_provider/op.mjs
# with that Node against this install. Idempotent: a fast no-op when the pinned version is present.
# Prints the package directory as the last line of output.
set -euo pipefail

VERSION="9.13.3"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODE_BIN="$("$ROOT/scripts/install-node22.sh" | tail -n 1)"
export PATH="$NODE_BIN:$PATH"

PREFIX="$ROOT/.cache/oidc-provider"
PKG="$PREFIX/node_modules/oidc-provider/package.json"
if ! { [[ -f "$PKG" ]] && grep -q "\"version\": \"$VERSION\"" "$PKG"; }; then
  mkdir -p "$PREFIX"
  # --save-exact keeps package.json at the pin, so a later plain `npm install` there changes nothing.
  npm install --no-audit --no-fund --loglevel=error --save-exact --prefix "$PREFIX" "oidc-provider@$VERSION" >&2
fi

echo "$PREFIX/node_modules/oidc-provider"
