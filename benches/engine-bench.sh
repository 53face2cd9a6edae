#!/usr/bin/env bash
# Socket-level measurements of a running engine, both I/O drivers in one run:
#   - user-space memory per idle connection at 1k, 10k and 18k connections;
#   - fan-out to N subscribers on one channel: closed loop (throughput) and
#     a fixed publication rate (latency without coordinated omission).
# Writes docs/bench-runs/<date>-<host>/{SETUP.md,raw.csv} and prints raw.csv.
#
# usage: benches/engine-bench.sh [subscribers=10000] [seconds=8] [rate=50]
# Loopback only; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=${1:-10000}
seconds=${2:-8}
rate=${3:-50}

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
out="docs/bench-runs/$(date +%F)-$(hostname -s)"
mkdir -p "$out"
tmp=$(mktemp -d)
engine_pid=""
cleanup() {
    # Never leave an engine behind, whatever failed.
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

config() { # driver shards
    cat > "$tmp/$1.toml" <<TOML
version = 1
[server]
shards = $2
pin_cores = false
driver = "$1"
[websocket]
listen = "127.0.0.1:18080"
backlog = 4096
[api]
listen = "127.0.0.1:18081"
key = "dev-only-api-key-change-me"
[auth]
jwt_secret = "dev-only-jwt-secret-change-me-0123456789"
[[namespace]]
name = "news"
[log]
level = "warn"
TOML
}

start_engine() {
    target/release/ringcast --config="$tmp/$1.toml" 2>>"$tmp/engine.log" &
    engine_pid=$!
    sleep 0.2
    kill -0 "$engine_pid" 2>/dev/null || { cat "$tmp/engine.log" >&2; exit 1; }
    for _ in $(seq 50); do
        curl -sf http://127.0.0.1:18081/health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "engine did not start" >&2
    exit 1
}
stop_engine() {
    kill -TERM "$engine_pid"
    wait "$engine_pid" || true
    engine_pid=""
}

shards=$(nproc)
echo "driver,measure,subscribers_or_connections,publications,publications_per_s,deliveries,deliveries_per_s,lost,p50_us,p99_us,p999_us,max_us,engine_cpu_s,client_cpu_s,seconds,bytes_received,bytes_per_delivery,engine_cpu_ns_per_delivery,rss_growth_bytes,bytes_per_connection" > "$out/raw.csv"
for driver in io_uring epoll; do
    config "$driver" "$shards"
    start_engine "$driver"
    target/release/idle_memory --ws=127.0.0.1:18080 --engine-pid="$engine_pid" --counts=1000,10000,18000 | grep -E '^[0-9]+,' |
        while IFS=, read -r conns _rss growth per; do
            echo "$driver,idle_memory,$conns,,,,,,,,,,,,,,,,$growth,$per" >> "$out/raw.csv"
        done
    stop_engine
    for mode in closed_loop "rate_$rate"; do
        start_engine "$driver"
        extra=()
        [ "$mode" = closed_loop ] || extra=(--rate="$rate")
        line=$(target/release/fanout --ws=127.0.0.1:18080 --api=127.0.0.1:18081 --engine-pid="$engine_pid" --subscribers="$subscribers" --seconds="$seconds" "${extra[@]}" | tail -1)
        echo "$driver,fanout_$mode,$line,," >> "$out/raw.csv"
        stop_engine
    done
done

cat > "$out/SETUP.md" <<MD
# Setup

- Host: $(hostname -s), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)
- Engine: $(git rev-parse --short HEAD), release build, $shards shards, unpinned
- Client: \`target/release/fanout\` and \`target/release/idle_memory\` on the same host (loopback)
- Command: \`benches/engine-bench.sh $subscribers $seconds $rate\`
- The client shares the cores with the engine; see client_cpu_s.
MD
cat "$out/raw.csv"
