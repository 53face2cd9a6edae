#!/usr/bin/env bash
# Durable IM group messages end to end, next to the store's group-commit
# ceiling for group messages measured in the same run
# (store/examples/group_throughput.rs, before and after the engine runs).
#
# 1. Groups only, at each rate of RATES (group messages/s): one group of
#    GROUP_SIZE members made through the API, ONLINE_SHARE of them online
#    with DEVICES devices each (500 members, 10%: 50 users, 100 devices);
#    every online member sends `msg_send {conv: grp:...}` on a fixed
#    schedule, each message a `sync` append pushed to every device of every
#    online member (the sender's included). Ack latency (intended send ->
#    reply) and push latency (intended send -> each online device's push),
#    deliveries/s, lost, duplicated, out of order and gaps by offset per
#    device.
# 2. Mixed, at MIXED_RATE messages/s: MIXED_GROUPS such groups plus as many
#    DM-only users as online group members, all in pairs; group members
#    send MIXED_GROUP_SHARE of their messages to their group, the rest
#    (and all of the DM-only users') are DMs to every device of the pair.
# 3. conv_list for one user with each of CONV_LIST_N conversations: end to
#    end through the HTTP API (benches/im-conv-list.py) on this build, then
#    on the store (`cargo bench --bench im`, benches/benches/im.rs: 1,000
#    and 10,000) unless STORE_CONV_LIST=0.
#
# usage: benches/im-group.sh
# env: RATES="10 100 500" GROUP_SIZE=500 ONLINE_SHARE=0.1 DEVICES=2
#      SECONDS_RUN=10 MIXED_RATE=1000 (0 skips it) MIXED_GROUPS=4
#      MIXED_GROUP_SHARE=0.5
#      CONV_LIST_N="1000 10000" ("" skips it) STORE_CONV_LIST=1
#      CEILING_N=20000 PROFILE=ringcast
#      PORT=18290 SHARDS=2 OUT=docs/bench-runs/<date>-im-group
# Loopback only; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${RATES:-10 100 500}
group_size=${GROUP_SIZE:-500}
online_share=${ONLINE_SHARE:-0.1}
devices=${DEVICES:-2}
seconds=${SECONDS_RUN:-10}
mixed_rate=${MIXED_RATE:-1000}
mixed_groups=${MIXED_GROUPS:-4}
mixed_share=${MIXED_GROUP_SHARE:-0.5}
conv_list_n=${CONV_LIST_N-1000 10000}
ceiling_n=${CEILING_N:-20000}
profile=${PROFILE:-ringcast}
port=${PORT:-18290}
shards=${SHARDS:-2}
out=${OUT:-docs/bench-runs/$(date +%F)-im-group}
secret=dev-only-jwt-secret-change-me-0123456789
api_key=dev-only-api-key-change-me
release=${CARGO_TARGET_DIR:-target}/release
online=$(awk -v s="$group_size" -v o="$online_share" 'BEGIN {n = int(s * o + 0.5); print (n < 1 ? 1 : n)}')

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
cargo build --release --locked -p ringcast-store --example group_throughput >&2
mkdir -p "$out"
tmp=$(mktemp -d)
engine_pid=""
stop_engine() {
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
    fi
    engine_pid=""
}
cleanup() {
    stop_engine
    rm -rf "$tmp"
}
trap cleanup EXIT

source benches/im-engine.sh
im_engine_config "$tmp/engine.toml" "$port" "$shards" "$tmp/data" "$secret" "$api_key"

start_engine() {
    rm -rf "$tmp/data"
    "$release"/ringcast --config="$tmp/engine.toml" 2>>"$tmp/engine.log" &
    engine_pid=$!
    sleep 1
}

store_ceiling() { # label
    rm -rf "$tmp/ceiling"
    mkdir -p "$tmp/ceiling"
    timeout 300 "$release"/examples/group_throughput "$tmp/ceiling" "$ceiling_n" \
        > "$tmp/groups.txt" || true
    rm -rf "$tmp/ceiling"
    local dms group
    dms=$(grep -m1 "^DMs" "$tmp/groups.txt" | grep -o '[0-9]* messages/s' | cut -d' ' -f1 || true)
    group=$(grep -m1 "group of *$group_size " "$tmp/groups.txt" \
        | grep -o '[0-9]* messages/s' | cut -d' ' -f1 || true)
    echo "$1,${dms:-},${group:-}" >> "$out/ceilings.csv"
    echo "store ceiling ($1): DMs ${dms:-?}/s, group of $group_size ${group:-?}/s" >&2
}

# run LABEL RATE(total msgs/s) CONNECTIONS GROUPS GROUP_SHARE
run() {
    local label=$1 rate=$2 connections=$3 groups=$4 share=$5
    local users=$((connections / devices))
    local per_user
    per_user=$(awk -v r="$rate" -v u="$users" 'BEGIN {printf "%g", r / u}')
    echo "$label $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    start_engine
    timeout $((seconds + 120)) "$release"/ringcast-loadgen chat --im \
        --target="ws://127.0.0.1:$port/connection/websocket" --api="127.0.0.1:$((port + 1))" \
        --secret="$secret" --api-key="$api_key" --profile="$profile" \
        --connections="$connections" --workers=1 --pair-share=1.0 \
        --devices-per-user="$devices" --groups="$groups" --group-size="$group_size" \
        --online-share="$online_share" --group-share="$share" \
        --connect-rate=2000 --rate="$per_user" --seconds="$seconds" --drain-s=5 \
        --out="$tmp/chat" > "$tmp/chat.log" 2>&1 || true
    cp "$tmp/chat.log" "$out/chat-$label.log"
    stop_engine
    python3 - "$tmp/chat.json" "$label" "$rate" "$connections" "$groups" >> "$out/raw.csv" <<'PY'
import json, sys
path, label, rate, connections, groups = sys.argv[1:]
r = json.load(open(path))
row = [label, rate, connections, groups]
for kind in ("im_group", "im_dm"):
    k = r.get(kind) or {}
    ack, push = k.get("ack_latency", {}), k.get("push_latency", {})
    row += [k.get("sent", 0), k.get("acked", 0), k.get("ack_errors", 0), k.get("expected", 0),
            k.get("received", 0), k.get("lost", 0), k.get("duplicated", 0),
            k.get("out_of_order", 0), k.get("gaps", 0), ack.get("p50_us", 0),
            ack.get("p99_us", 0), push.get("p50_us", 0), push.get("p99_us", 0),
            f"{k.get('deliveries_per_s', 0):.0f}"]
row.append(r["errors_total"])
print(",".join(str(v) for v in row))
PY
    tail -1 "$out/raw.csv" >&2
}

echo "label load_1m load_5m load_15m (before each run)" > "$out/loadavg.txt"
echo "label,store_dms_per_s,store_group_${group_size}_per_s" > "$out/ceilings.csv"
cols="sent,acked,refused,expected,received,lost,duplicated,out_of_order,gaps"
cols="$cols,ack_p50_us,ack_p99_us,push_p50_us,push_p99_us,deliveries_per_s"
echo "label,rate,connections,groups,$(echo "$cols" | sed 's/[^,]*/group_&/g'),$(echo "$cols" | sed 's/[^,]*/dm_&/g'),errors" \
    > "$out/raw.csv"
store_ceiling before
# One group: its online members, in pairs (connections: a multiple of
# 2 x devices).
group_connections=$(( (online + 1) / 2 * 2 * devices ))
for rate in $rates; do
    run "group-$rate" "$rate" "$group_connections" 1 1.0
done
# Mixed: the groups' online members plus as many DM-only users.
mixed_connections=$((mixed_groups * online * devices * 2))
if [ "$mixed_rate" != 0 ]; then
    run "mixed-$mixed_rate" "$mixed_rate" "$mixed_connections" "$mixed_groups" "$mixed_share"
fi
store_ceiling after
rm -f "$out/conv-list.txt"
if [ -n "$conv_list_n" ]; then
    start_engine
    for n in $conv_list_n; do
        timeout 300 python3 benches/im-conv-list.py "127.0.0.1:$((port + 1))" "$api_key" \
            "$n" | tee -a "$out/conv-list.txt" >&2 || true
    done
    stop_engine
fi
if [ "${STORE_CONV_LIST:-1}" = 1 ]; then
    timeout 900 cargo bench --locked -p ringcast-benches --bench im 2>&1 \
        | grep "^conv_list .* p50" | tee -a "$out/conv-list.txt" >&2 || true
fi
wc -l < "$tmp/engine.log" | sed 's/^/engine log lines: /' > "$out/engine-log-tail.txt"
tail -n 50 "$tmp/engine.log" >> "$out/engine-log-tail.txt"
cat "$out/ceilings.csv" "$out/raw.csv"
