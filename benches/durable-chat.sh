#!/usr/bin/env bash
# The durable private-message path, several engine builds side by side in
# one run: 10,000 users in pairs, every message a `send` to the peer's inbox
# (a `sync` append), at each offered rate. Per rate and build it records the
# client's ack and push latencies, what was refused or lost, and the
# engine's CPU per message per thread kind (store writer, shards, the rest),
# read from /proc/<pid>/task/*/stat over the steady middle of the run. The
# store's own ceiling (store/examples/append_throughput.rs) is measured in
# the same run, before and after the engines.
#
# usage: benches/durable-chat.sh ['LABEL=ENGINE_BINARY [ENGINE_FLAG ...]' ...]
#   default: after=target/release/ringcast
#   e.g. 'paced=target/release/ringcast --server-store-sync-interval-us=1000' 
# env: RATES="10000 20000 30000 40000 50000" SECONDS_RUN=15 CONNECTIONS=10000
#      PORT=18090 SHARDS=2 DRIVER=io_uring OUT=docs/bench-runs/<date>-durable-chat
# Loopback only; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${RATES:-10000 20000 30000 40000 50000}
seconds=${SECONDS_RUN:-15}
connections=${CONNECTIONS:-10000}
port=${PORT:-18090}
shards=${SHARDS:-2}
driver=${DRIVER:-io_uring}
out=${OUT:-docs/bench-runs/$(date +%F)-durable-chat}
secret=dev-only-jwt-secret-change-me-0123456789
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(after=target/release/ringcast)

cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
cargo build --release --locked -p ringcast-store --example append_throughput >&2
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

cat > "$tmp/engine.toml" <<TOML
version = 1
[server]
shards = $shards
pin_cores = false
driver = "$driver"
data_dir = "$tmp/data"
[websocket]
listen = "127.0.0.1:$port"
backlog = 4096
connections_max_per_shard = 20000
[api]
listen = "127.0.0.1:$((port + 1))"
key = "dev-only-api-key-change-me"
[auth]
jwt_secret = "$secret"
[log]
level = "warn"
TOML

store_ceiling() { # label
    local line
    line=$(target/release/examples/append_throughput "$tmp/ceiling" 60000 | grep -m1 "group commit" || true)
    rm -rf "$tmp/ceiling"
    echo "store_ceiling,$1,\"$line\"" >> "$out/raw.csv"
    echo "store ceiling ($1): $line" >&2
}

# Sum of utime+stime (clock ticks) per thread kind.
cpu_snapshot() { # pid
    for task in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(cat "$task/comm")" "$(awk '{print $14 + $15}' "$task/stat")"
    done | awk '{kind = "other"}
        # Threads names are cut to 15 bytes: builds before 2026-12-05 named
        # the writer and the readers "ringcast-store-"; readers are idle here.
        $1 == "ringcast-writer" || $1 == "ringcast-store-" {kind = "writer"}
        /^ringcast-shard/ {kind = "shards"}
        {ticks[kind] += $NF}
        END {printf "%d %d %d\n", ticks["writer"], ticks["shards"], ticks["other"]}'
}

# The store's counters from /metrics (builds before 2026-12-05 have none: 0 0).
store_counters() {
    curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk '
        $1 == "ringcast_store_commits_total" {c = $2}
        $1 == "ringcast_store_syncs_total" {s = $2}
        END {printf "%d %d\n", c, s}'
}

echo "kind,build,rate,sent,acked,refused,lost,duplicated,ack_p50_us,ack_p99_us,ack_p999_us,push_p99_us,writer_us_per_msg,shards_us_per_msg,other_us_per_msg,client_cores,batch_mean,fsyncs_per_s" > "$out/raw.csv"
store_ceiling before
tick_us=$((1000000 / $(getconf CLK_TCK)))
for rate in $rates; do
    per_conn=$(awk -v r="$rate" -v c="$connections" 'BEGIN {printf "%g", r / c}')
    for build in "${builds[@]}"; do
        label=${build%%=*}
        read -r binary flags <<< "${build#*=}"
        rm -rf "$tmp/data"
        # shellcheck disable=SC2086 # flags are words on purpose
        "$binary" --config="$tmp/engine.toml" ${flags:-} 2>>"$tmp/engine.log" &
        engine_pid=$!
        sleep 1
        timeout $((seconds + 60)) target/release/ringcast-loadgen chat \
            --target="ws://127.0.0.1:$port/connection/websocket" --api="127.0.0.1:$((port + 1))" \
            --secret="$secret" --connections="$connections" --workers=2 --pair-share=1.0 \
            --rate="$per_conn" --seconds="$seconds" --out="$tmp/chat" > "$tmp/chat.log" 2>&1 &
        loadgen_pid=$!
        # Connections open in the first few seconds; measure the middle.
        window=$((seconds / 2))
        sleep $((seconds / 2))
        read -r w0 s0 o0 < <(cpu_snapshot "$engine_pid")
        read -r c0 f0 < <(store_counters)
        sleep "$window"
        read -r w1 s1 o1 < <(cpu_snapshot "$engine_pid")
        read -r c1 f1 < <(store_counters)
        wait "$loadgen_pid" || true
        # The per-second lines show whether latency rises through a run.
        cp "$tmp/chat.log" "$out/chat-$label-$rate.log"
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
        engine_pid=""
        python3 - "$tmp/chat.json" "$label" "$rate" "$window" "$tick_us" \
            "$((w1 - w0))" "$((s1 - s0))" "$((o1 - o0))" "$((c1 - c0))" "$((f1 - f0))" >> "$out/raw.csv" <<'PY'
import json, sys
path, label, rate, window, tick_us, w, s, o, commits, fsyncs = sys.argv[1:]
r = json.load(open(path))
msgs = float(rate) * float(window)
per = lambda ticks: f"{int(ticks) * int(tick_us) / msgs:.1f}"
ack = r["ack_latency"]
print(",".join(str(v) for v in [
    "chat", label, rate, r["sent"], ack["count"], r.get("publish_errors", 0), r["lost"],
    r["duplicated"], ack["p50_us"], ack["p99_us"], ack["p999_us"], r["push_latency"]["p99_us"],
    per(w), per(s), per(o), f"{r['client']['cores_busy']:.2f}",
    f"{msgs / int(commits):.1f}" if int(commits) else "n/a",
    f"{int(fsyncs) / float(window):.0f}" if int(commits) else "n/a"]))
PY
        tail -1 "$out/raw.csv" >&2
    done
done
store_ceiling after
# The engines' log can be large (an overloaded store logs every refusal):
# keep its size and its end.
wc -l < "$tmp/engine.log" | sed 's/^/engine log lines: /' > "$out/engine-log-tail.txt"
tail -n 100 "$tmp/engine.log" >> "$out/engine-log-tail.txt"
cat "$out/raw.csv"
