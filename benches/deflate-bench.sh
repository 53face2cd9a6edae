#!/usr/bin/env bash
# permessage-deflate against no compression, in the same run: one engine
# with `websocket.compression = true`, fan-out of chat JSON to N
# subscribers at a fixed publication rate, once with subscribers that do not
# offer deflate (plain frames) and once with subscribers that do (each
# publication compressed once, the frame shared), alternating, for each
# payload size. Reports engine CPU per delivery (from /proc/<pid>/stat) and
# bytes received per delivery (frame headers included), and the ratios.
#
# usage: benches/deflate-bench.sh [subscribers=1000] [seconds=5] [rate=200] [sizes="200 500 1000"] [rounds=2]
# Loopback only; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=${1:-1000}
seconds=${2:-5}
rate=${3:-200}
sizes=${4:-200 500 1000}
rounds=${5:-2}

target_dir=${CARGO_TARGET_DIR:-target}
cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
# shellcheck source=compare/lib.sh
. benches/compare/lib.sh
PY="python3 benches/compare/compare.py"
SERVER_THREADS=$(nproc) RC_WS=18180 RC_API=18181
RINGCAST_API_KEY=dev-only-api-key-change-me RINGCAST_AUTH_JWT_SECRET=dev-only-jwt-secret-change-me-0123456789
tmp=$(mktemp -d)
server_pid=""
trap 'stop_pid "$server_pid"; rm -rf "$tmp"' EXIT

ringcast_config io_uring "compression = true
compression_min_bytes = 0"
"$target_dir/release/ringcast" --config="$tmp/ringcast.toml" 2>>"$tmp/engine.log" &
server_pid=$!
wait_port "$RC_API" "$tmp/engine.log"
engine_pid=$server_pid

echo "payload_bytes,deflate,round,subscribers,publications,publications_per_s,deliveries,deliveries_per_s,lost,p50_us,p99_us,p999_us,max_us,engine_cpu_s,client_cpu_s,seconds,bytes_received,bytes_per_delivery,engine_cpu_ns_per_delivery" > "$tmp/raw.csv"
for size in $sizes; do
    for round in $(seq "$rounds"); do
        for deflate in false true; do
            line=$("$target_dir/release/fanout" --ws=127.0.0.1:18180 --api=127.0.0.1:18181 \
                --engine-pid="$engine_pid" --subscribers="$subscribers" --seconds="$seconds" \
                --rate="$rate" --chat=true --payload-bytes="$size" --deflate="$deflate" | tail -1)
            echo "$size,$deflate,$round,$line" >> "$tmp/raw.csv"
        done
    done
done
cat "$tmp/raw.csv"
echo
# Ratios per payload size, summed over rounds: compressed / plain.
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { key = $1 SUBSEP $2
      cpu[key] += $col["engine_cpu_s"]; bytes[key] += $col["bytes_received"]; n[key] += $col["deliveries"]; sizes[$1] = 1 }
    END {
      print "payload_bytes,plain_bytes_per_delivery,deflate_bytes_per_delivery,bytes_ratio,plain_engine_ns_per_delivery,deflate_engine_ns_per_delivery,cpu_ratio"
      for (s in sizes) {
        p = s SUBSEP "false"; d = s SUBSEP "true"
        pb = bytes[p] / n[p]; db = bytes[d] / n[d]; pc = cpu[p] * 1e9 / n[p]; dc = cpu[d] * 1e9 / n[d]
        printf "%s,%.1f,%.1f,%.3f,%.0f,%.0f,%.3f\n", s, pb, db, db / pb, pc, dc, dc / pc
      }
    }' "$tmp/raw.csv" | sort -t, -k1,1n
