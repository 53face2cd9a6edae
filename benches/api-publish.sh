#!/usr/bin/env bash
# API publish throughput of two engine binaries, alternated in one run:
# `fanout` posts to /api/publish over one keep-alive connection as fast as
# the engine answers (closed loop), with one subscriber on the channel.
# Prints one CSV line per run and the mean publications/s of each binary.
#
# usage: benches/api-publish.sh OLD_BINARY NEW_BINARY [rounds=3] [seconds=8]
# Loopback only; every run is bounded in time and stops by itself. Needs
# `cargo release-bins` (.cargo/config.toml) first.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
new=$2
rounds=${3:-3}
seconds=${4:-8}
fanout=${FANOUT:-target/release/fanout}
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

cat > "$tmp/engine.toml" <<TOML
version = 1
[server]
shards = 2
pin_cores = false
driver = "epoll"
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

run() { # label binary
    "$2" --config="$tmp/engine.toml" 2>>"$tmp/engine.log" &
    engine_pid=$!
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/18081) 2>/dev/null && break
        sleep 0.1
    done
    line=$(timeout $((seconds + 30)) "$fanout" --ws=127.0.0.1:18080 --api=127.0.0.1:18081 \
        --engine-pid="$engine_pid" --subscribers=1 --seconds="$seconds" | tail -1)
    echo "$1,$line"
    kill -TERM "$engine_pid"
    wait "$engine_pid" || true
    engine_pid=""
}

echo "binary,subscribers,publications,publications_per_s,deliveries,deliveries_per_s,lost,p50_us,p99_us,p999_us,max_us,engine_cpu_s,client_cpu_s,seconds" | tee "$tmp/runs.csv"
for _ in $(seq "$rounds"); do
    run old "$old" | tee -a "$tmp/runs.csv"
    run new "$new" | tee -a "$tmp/runs.csv"
done
awk -F, 'NR > 1 { sum[$1] += $4; n[$1]++ }
    END { printf "mean publications/s: old %.0f, new %.0f, new/old %.3f\n",
          sum["old"] / n["old"], sum["new"] / n["new"],
          (sum["new"] / n["new"]) / (sum["old"] / n["old"]) }' "$tmp/runs.csv"
