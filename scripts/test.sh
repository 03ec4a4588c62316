#!/usr/bin/env bash
# Runs every test of the workspace against real parts: a local Tempo node (anvil, installed
# from npm), SQLite files, and a throwaway PostgreSQL on loopback (installed from Debian's
# packages when missing), started here and stopped on exit. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p mpp-core`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/devnet-install.sh
export ANVIL_BIN="$root/tools/devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
export CAST_BIN="$root/tools/devnet/node_modules/@foundry-rs/cast-linux-amd64/bin/cast"

pg_state="$(mktemp -d)"
export MPP_PG_STATE_DIR="$pg_state/pg"
stop_postgres() { tools/postgres/stop.sh >/dev/null 2>&1 || true; rm -rf "$pg_state"; }
trap stop_postgres EXIT
tools/postgres/start.sh >/dev/null
# shellcheck disable=SC1091
source "$MPP_PG_STATE_DIR/env"

cargo test --workspace --all-features "$@"
