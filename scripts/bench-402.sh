#!/usr/bin/env bash
# The 402 path against a free route of the same server, over real HTTP: a release `paid-api`
# (on a local Tempo node and SQLite, RUST_LOG=info) under `wrk -t1 -c32 -d10s`, the free
# route and the 402 route alternating, three rounds; prints each round and the medians.
#
#   scripts/bench-402.sh                      # builds and measures target/release/paid-api
#   PAID_API_BIN=/path/to/paid-api scripts/bench-402.sh   # measures another build
#
# Installs wrk from Debian's packages when missing. The load generator and the server share
# the machine, so the ratio is the figure to compare, not the absolute rates.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${ROUNDS:-3}"; secs="${SECS:-10}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/devnet-install.sh >/dev/null
if [[ -z "${PAID_API_BIN:-}" ]]; then
    cargo build -q --release -p mpp-example-paid-api
    PAID_API_BIN="$root/target/release/paid-api"
fi
work="$(mktemp -d)"; pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

node_port="$(free_port)"
tools/devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil --network tempo --hardfork T4 \
    --block-time 1 --mixed-mining --host 127.0.0.1 --port "$node_port" > "$work/anvil.log" 2>&1 &
pids+=($!)
api_port="$(free_port)"
for _ in $(seq 1 200); do grep -q "Listening on" "$work/anvil.log" && break; sleep 0.05; done
PORT="$api_port" TEMPO_RPC_URL="http://127.0.0.1:$node_port" DATABASE_URL="sqlite://$work/bench.db" \
    MPP_SECRET_KEY="bench-secret-0123456789abcdef0123456789" RUST_LOG=info \
    "$PAID_API_BIN" > "$work/paid-api.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$api_port"
for _ in $(seq 1 200); do curl -sf "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/fortune")" == 402 ]] || { cat "$work/paid-api.log"; exit 1; }

rate() { wrk -t1 -c32 -d"${secs}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
free=(); paid=()
for round in $(seq 1 "$rounds"); do
    f="$(rate "$base/health")"; p="$(rate "$base/fortune")"
    free+=("$f"); paid+=("$p")
    echo "round $round: free $f req/s, 402 $p req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mf="$(median "${free[@]}")"; mp="$(median "${paid[@]}")"
echo "median: free $mf req/s, 402 $mp req/s, ratio $(python3 -c "print(f'{$mp/$mf:.2f}')")"
echo "server log lines during the run: $(wc -l < "$work/paid-api.log")"
