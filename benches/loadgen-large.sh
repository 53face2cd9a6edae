#!/usr/bin/env bash
# The largest load-generator runs this host allows, reproducibly:
#   1. connect: 2 x per-engine connections, spread over two engine processes
#      (each process is capped at 20,000 open files here) from 2 worker
#      processes and 4 source addresses;
#   2. fanout: one engine, N subscribers, a fixed publication rate.
# Writes <out>/{connect,fanout}.json and SVG charts under <out>/plots.
#
# usage: benches/loadgen-large.sh [per_engine=17000] [rate=40] [seconds=10] [out=docs/bench-runs/<date>-loadgen]
# Loopback only; every process is bounded by `timeout` and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
per_engine=${1:-17000}
rate=${2:-40}
seconds=${3:-10}
out=${4:-docs/bench-runs/$(date +%F)-loadgen}

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
mkdir -p "$out/plots"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait || true
    rm -rf "$tmp"
}
trap cleanup EXIT

export RINGCAST_AUTH_JWT_SECRET=dev-only-jwt-secret-change-me-0123456789
export RINGCAST_API_KEY=dev-only-api-key-change-me
engine() { # idx shards
    RINGCAST_SERVER_DATA_DIR="$tmp/data$1" timeout 300 target/release/ringcast \
        --config=ringcast.toml --websocket-listen="127.0.0.1:1808$1" \
        --api-listen="127.0.0.1:1809$1" --server-shards="$2" --server-pin-cores=false \
        >"$tmp/engine$1.log" 2>&1 &
    pids+=($!)
}
wait_ready() { # idx
    for _ in $(seq 100); do
        grep -q "ringcast is ready" "$tmp/engine$1.log" && return 0
        sleep 0.1
    done
    cat "$tmp/engine$1.log" >&2
    return 1
}
stop_engines() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait || true
    pids=()
}

engine 1 1
engine 2 1
wait_ready 1
wait_ready 2
timeout 200 target/release/ringcast-loadgen connect \
    --target=ws://127.0.0.1:18081/connection/websocket,ws://127.0.0.1:18082/connection/websocket \
    --connections=$((2 * per_engine)) --workers=2 --rate=5000 --hold-s=5 \
    --source-ips=127.0.1.1-127.0.1.4 --out="$out/connect" || true
stop_engines

engine 3 0
wait_ready 3
timeout 200 target/release/ringcast-loadgen fanout \
    --target=ws://127.0.0.1:18083/connection/websocket --api=127.0.0.1:18093 \
    --connections="$per_engine" --workers=2 --connect-rate=5000 \
    --rate="$rate" --seconds="$seconds" --source-ips=127.0.1.1-127.0.1.4 \
    --out="$out/fanout" || true
stop_engines

target/release/ringcast-loadgen plot "$out/connect.json" "$out/fanout.json" --out-dir="$out/plots"
