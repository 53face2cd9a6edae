#!/usr/bin/env bash
# Durable IM direct messages end to end, next to the store's own ceilings
# measured in the same run: USERS users in pairs, each with DEVICES
# connections; every message a `msg_send` to the peer (a `sync` append to
# the conversation's stream), pushed to every device of both users; each
# user's first device sends `read` every READ_EVERY messages of its peer.
# Per rate: ack latency (intended send -> reply), push latency (intended
# send -> each device's push), deliveries/s, what was refused, lost,
# duplicated, out of order or missing by offset, reads and receipts.
# Before and after the engines: the store's group-commit ceiling for plain
# appends (store/examples/append_throughput.rs) and for DMs and group
# messages (store/examples/group_throughput.rs: DMs over 10 hot pairs and
# over 4,500 pairs both ways, as this run's users write; groups of 2 to
# 2,000 members). Then the conversation list for one user with 1,000 and 10,000
# conversations, first and deep page, p50/p99: end to end through the HTTP
# API (benches/im-conv-list.py) and on the store (benches/benches/im.rs).
#
# usage: benches/im-chat.sh
# env: RATES="5000 10000 20000 40000" (messages/s over all users)
#      USERS=9000 DEVICES=2 READ_EVERY=5 SECONDS_RUN=10 PROFILE=ringcast
#      PORT=18190 SHARDS=2 CONV_LIST=1 (0 skips the conv_list bench)
#      OUT=docs/bench-runs/<date>-im-chat
# 9,000 users x 2 devices = 18,000 sockets: under a 20,000 `ulimit -n` for
# the engine and, over 2 workers, for each load process.
# Loopback only; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${RATES:-5000 10000 20000 40000}
users=${USERS:-9000}
devices=${DEVICES:-2}
read_every=${READ_EVERY:-5}
seconds=${SECONDS_RUN:-10}
profile=${PROFILE:-ringcast}
port=${PORT:-18190}
shards=${SHARDS:-2}
out=${OUT:-docs/bench-runs/$(date +%F)-im-chat}
secret=dev-only-jwt-secret-change-me-0123456789
connections=$((users * devices))
release=${CARGO_TARGET_DIR:-target}/release

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
cargo build --release --locked -p ringcast-store --example append_throughput \
    --example group_throughput >&2
mkdir -p "$out"
tmp=$(mktemp -d)
engine_pid=""
cleanup() {
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

source benches/im-engine.sh
im_engine_config "$tmp/engine.toml" "$port" "$shards" "$tmp/data" "$secret" \
    dev-only-api-key-change-me

store_ceilings() { # label
    local appends dms group
    appends=$(timeout 120 "$release"/examples/append_throughput "$tmp/ceiling" 60000 \
        | grep -m1 "group commit" || true)
    rm -rf "$tmp/ceiling"
    mkdir -p "$tmp/ceiling"
    timeout 300 "$release"/examples/group_throughput "$tmp/ceiling" 20000 > "$tmp/groups.txt" || true
    rm -rf "$tmp/ceiling"
    dms=$(grep -m1 "^DMs (10 pairs)" "$tmp/groups.txt" || true)
    dms_many=$(grep -m1 "^DMs (4,500 pairs" "$tmp/groups.txt" || true)
    group=$(grep -m1 "group of   500" "$tmp/groups.txt" || true)
    echo "store_ceiling,$1,\"$appends\",\"$dms\",\"$dms_many\",\"$group\"" >> "$out/ceilings.csv"
    echo "store ceilings ($1): $appends | $dms | $dms_many | $group" >&2
}

echo "kind,label,appends,dms_10_pairs,dms_4500_pairs,group_500" > "$out/ceilings.csv"
echo "rate,users,devices,sent,acked,refused,expected,received,lost,duplicated,out_of_order,gaps,ack_p50_us,ack_p99_us,push_p50_us,push_p99_us,deliveries_per_s,reads_sent,reads_acked,receipts_expected,receipts,errors" > "$out/raw.csv"
store_ceilings before
for rate in $rates; do
    per_user=$(awk -v r="$rate" -v u="$users" 'BEGIN {printf "%g", r / u}')
    rm -rf "$tmp/data"
    "$release"/ringcast --config="$tmp/engine.toml" 2>>"$tmp/engine.log" &
    engine_pid=$!
    sleep 1
    timeout $((seconds + 90)) "$release"/ringcast-loadgen chat --im \
        --target="ws://127.0.0.1:$port/connection/websocket" --api="127.0.0.1:$((port + 1))" \
        --secret="$secret" --profile="$profile" --connections="$connections" --workers=2 \
        --pair-share=1.0 --devices-per-user="$devices" --read-every="$read_every" \
        --connect-rate=3000 --rate="$per_user" --seconds="$seconds" --drain-s=5 \
        --out="$tmp/chat" > "$tmp/chat.log" 2>&1 || true
    cp "$tmp/chat.log" "$out/chat-$rate.log"
    kill -TERM "$engine_pid"
    wait "$engine_pid" || true
    engine_pid=""
    python3 - "$tmp/chat.json" "$rate" "$users" "$devices" >> "$out/raw.csv" <<'PY'
import json, sys
path, rate, users, devices = sys.argv[1:]
r = json.load(open(path))
ack, push = r["ack_latency"], r["push_latency"]
print(",".join(str(v) for v in [
    rate, users, devices, r["sent"], ack["count"], r["publish_errors"], r["expected"],
    r["received"], r["lost"], r["duplicated"], r["out_of_order"], r["gaps"],
    ack["p50_us"], ack["p99_us"], push["p50_us"], push["p99_us"],
    f"{r['deliveries_per_s']:.0f}", r["reads_sent"], r["reads_acked"],
    r["receipts_expected"], r["receipts"], r["errors_total"]]))
PY
    tail -1 "$out/raw.csv" >&2
done
store_ceilings after
# conv_list end to end (the HTTP API: engine, store reader, JSON) for one
# user with 1,000 and 10,000 conversations.
rm -rf "$tmp/data"
"$release"/ringcast --config="$tmp/engine.toml" 2>>"$tmp/engine.log" &
engine_pid=$!
sleep 1
for n in 1000 10000; do
    timeout 300 python3 benches/im-conv-list.py "127.0.0.1:$((port + 1))" \
        dev-only-api-key-change-me "$n" | tee -a "$out/conv-list.txt" >&2 || true
done
kill -TERM "$engine_pid"
wait "$engine_pid" || true
engine_pid=""
if [ "${CONV_LIST:-1}" = 1 ]; then
    timeout 600 cargo bench --locked -p ringcast-benches --bench im 2>&1 \
        | grep "^conv_list .* p50" | tee -a "$out/conv-list.txt" >&2 || true
fi
wc -l < "$tmp/engine.log" | sed 's/^/engine log lines: /' > "$out/engine-log-tail.txt"
tail -n 50 "$tmp/engine.log" >> "$out/engine-log-tail.txt"
cat "$out/ceilings.csv" "$out/raw.csv"
