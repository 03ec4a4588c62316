#!/usr/bin/env bash
# The demo: a paid API on the embedded defaults (SQLite, a local Tempo node started here),
# a 402, a real payment on the local chain, a 200 with its receipt; then a session: a payment
# channel opened, three paid requests, a 20-token stream paid by vouchers mid-stream, and the
# close settled on chain.
#
#   scripts/demo.sh                 # everything local
#   TEMPO_RPC_URL=http://... scripts/demo.sh   # use an existing node instead
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

local_node=0
if [[ -z "${TEMPO_RPC_URL:-}" ]]; then
    local_node=1
    say "Installing the local Tempo node (npm, pinned; first time only)"
    scripts/devnet-install.sh
    anvil="tools/devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
    say "Starting anvil --network tempo on a free loopback port"
    "$anvil" --network tempo --hardfork T4 --block-time 1 --mixed-mining \
        --host 127.0.0.1 --port 0 > "$work/anvil.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do
        port="$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/anvil.log" | head -n 1)"
        [[ -n "$port" ]] && break
        sleep 0.05
    done
    [[ -n "${port:-}" ]] || { cat "$work/anvil.log"; echo "anvil did not start" >&2; exit 1; }
    export TEMPO_RPC_URL="http://127.0.0.1:$port"
    echo "Tempo node: $TEMPO_RPC_URL (chain id 31337, funded dev accounts)"
fi

say "Building the examples (the first build takes a few minutes)"
cargo build -q -p mpp-example-paid-api -p mpp-example-pay -p mpp-example-pay-session \
    -p mpp-example-devnet-escrow

# Sessions need an escrow: a local node has none, so deploy the canonical one (its bytecode
# comes from the official `mpp` crate in cargo's registry). Dev account 1 is the payee: it
# settles and closes channels (on a v1 escrow only the payee may) and receives the charges.
if [[ -z "${MPP_ESCROW:-}" && "$local_node" == 1 ]]; then
    say "Deploying the session escrow (TempoStreamChannel) on the local node"
    cargo fetch -q
    MPP_ESCROW="$(target/debug/devnet-escrow "$TEMPO_RPC_URL")"
    echo "escrow: $MPP_ESCROW"
fi
if [[ -n "${MPP_ESCROW:-}" ]]; then
    export MPP_ESCROW
    export MPP_PAYEE_KEY="${MPP_PAYEE_KEY:-0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d}"
fi

api_port="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
export PORT="$api_port" DATABASE_URL="${DATABASE_URL:-sqlite://$work/mpp-demo.db}"
say "Starting paid-api on http://127.0.0.1:$api_port (GET /fortune costs 0.01 pathUSD)"
MPP_DEMO=1 RUST_LOG="${RUST_LOG:-info}" target/debug/paid-api > "$work/paid-api.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$api_port/health" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$api_port/health" >/dev/null || { cat "$work/paid-api.log"; exit 1; }

say "GET /fortune without paying"
curl -s -D - -o "$work/402.json" "http://127.0.0.1:$api_port/fortune" | tr -d '\r' \
    | sed -E 's/(request="[^"]{24})[^"]*"/\1..."/'
cat "$work/402.json"; echo

say "Paying with the client example (dev account 0 signs a pathUSD transfer)"
target/debug/pay "http://127.0.0.1:$api_port/fortune"

if [[ -n "${MPP_ESCROW:-}" ]]; then
    say "A session: open a channel, pay per request, stream tokens paid by vouchers, close"
    target/debug/pay-session "http://127.0.0.1:$api_port"
fi

say "Server log"
tail -n 8 "$work/paid-api.log"
