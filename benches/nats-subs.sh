#!/usr/bin/env bash
# What a NATS subscription costs, client side (async-nats) and server side
# (nats-server), against one wildcard subscription: the measurement behind
# the cluster's hashed channel buckets (docs/cluster.md, docs/benchmarks.md
# "NATS subscription cost").
#
# Starts its own nats-server on loopback with random ports (never 4222),
# runs benches/src/bin/nats_subs.rs against it, stops the server by its pid,
# and writes results.json, summary.md and SETUP.md under OUT.
#
# usage: benches/nats-subs.sh
# env: COUNTS=1000,10000,100000 SETTLE_MS=1500 NATS_SERVER=/usr/sbin/nats-server
#      SUBSCRIPTION_CAPACITY= (async-nats messages per subscriber; its default if empty)
#      OUT=docs/bench-runs/<date>-nats-subs
# Loopback only; bounded: it subscribes at most max(COUNTS) subjects once.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${COUNTS:-1000,10000,100000}
settle_ms=${SETTLE_MS:-1500}
capacity=${SUBSCRIPTION_CAPACITY:-}
out=${OUT:-docs/bench-runs/$(date +%F)-nats-subs}
nats_server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[ -x "$nats_server" ] || {
    echo "nats-server not found (apt-get install nats-server, or set NATS_SERVER)" >&2
    exit 1
}

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
tool=${CARGO_TARGET_DIR:-target}/release/nats_subs

mkdir -p "$out"
tmp=$(mktemp -d)
nats_pid=""
cleanup() {
    if [ -n "$nats_pid" ] && kill -0 "$nats_pid" 2>/dev/null; then
        kill -TERM "$nats_pid"
        wait "$nats_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# -1: a random port for clients and for monitoring; the server writes both
# to nats-server_<pid>.ports in ports_file_dir.
cat >"$tmp/nats.conf" <<EOF
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
ports_file_dir: "$tmp"
EOF
"$nats_server" -c "$tmp/nats.conf" -l "$tmp/nats.log" &
nats_pid=$!
ports="$tmp/nats-server_$nats_pid.ports"
for _ in $(seq 200); do
    [ -s "$ports" ] && break
    kill -0 "$nats_pid" 2>/dev/null || {
        cat "$tmp/nats.log" >&2
        exit 1
    }
    sleep 0.05
done
[ -s "$ports" ] || {
    echo "nats-server wrote no ports file in 10 s" >&2
    exit 1
}
# {"nats":["nats://127.0.0.1:PORT"],"monitoring":["http://127.0.0.1:MPORT"]}
read -r url monitor < <(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(p["nats"][0], p["monitoring"][0])' "$ports")
echo "nats-server pid $nats_pid at $url, monitoring $monitor" >&2

capacity_flag=()
[ -z "$capacity" ] || capacity_flag=(--subscription-capacity "$capacity")
"$tool" --url "$url" --monitor "$monitor" --counts "$counts" --settle-ms "$settle_ms" \
    "${capacity_flag[@]}" --json "$out/results.json" | tee "$out/summary.md"

cat >"$out/SETUP.md" <<EOF
# Setup

- Date: $(date -u +%FT%TZ)
- Host: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)
- Server: $("$nats_server" --version), loopback, random ports, no other config (no JetStream, default sublist cache)
- Client: \`target/release/nats_subs\` (async-nats 0.52, default features off, \`ring\`; mimalloc), one connection
- Command: \`COUNTS=$counts SETTLE_MS=$settle_ms SUBSCRIPTION_CAPACITY=$capacity benches/nats-subs.sh\`
- Method: one wildcard subscription \`bench.w.>\`, then distinct subjects \`bench.s.<i>\` added on the same
  connection up to each count; after each step the tool waits until \`/varz\` counts them, waits
  $settle_ms ms, and reads its own RSS (/proc) and the server's \`/varz\` \`mem\` (the server's RSS).
  Deltas are against the sample before the step series (after the wildcard).
EOF
echo "wrote $out/results.json, $out/summary.md, $out/SETUP.md" >&2
