#!/usr/bin/env bash
# Installs the pinned local Tempo node (anvil), cast, the mppx and MCP SDK interop peers and
# an OpenAPI schema validator into tools/devnet/node_modules (npm registry only; the platform
# binary ships inside the package). Idempotent: skips npm when all of them are there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
anvil="$root/tools/devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
modules="$root/tools/devnet/node_modules"
if [[ -x "$anvil" && -d "$modules/mppx" && -d "$modules/@modelcontextprotocol/sdk" \
    && -d "$modules/@seriousme/openapi-schema-validator" ]]; then
    exit 0
fi
command -v npm >/dev/null || { echo "devnet-install: npm is required (Node.js 20+)" >&2; exit 1; }
# `npm ci` fails on registries without the other platforms' optional packages: install the
# exact pinned versions instead. Scripts are not needed (the binary is in the package).
npm install --prefix "$root/tools/devnet" --no-audit --no-fund --ignore-scripts --loglevel=error >&2
[[ -x "$anvil" ]] || { echo "devnet-install: anvil binary missing after npm install: $anvil" >&2; exit 1; }
