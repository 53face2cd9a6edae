#!/usr/bin/env bash
# The cluster on one host (issue 14, docs/cluster.md): a nats-server and
# NODES engine processes sharing ONE WebSocket port and ONE API port
# (SO_REUSEPORT), measured against ONE engine process under the same load in
# the same run:
#   connect  CONNECTIONS connections opened and held over the cluster:
#            connections per node (/api/stats `nodes`), RSS per process
#            (/proc), kernel TCP memory (/proc/net/sockstat), memory per
#            connection; the single process holds CONNECTIONS / NODES (its
#            share: one process cannot hold more than its open-files cap).
#   fanout   FANOUT_CONNECTIONS subscribers of one live channel, spread over
#            the nodes by the shared port, publications through the shared
#            API port: a fixed rate, then closed loop; deliveries/s, p99.
#   chat     CHAT_CONNECTIONS users, half in pairs (`send` to the peer's
#            inbox: a durable stream in its owner's partition) and half in
#            groups (client `publish` on a live channel): acks/s, p99.
#   imchat   IMCHAT_USERS users in pairs, each pair's DMs (`msg_send`, the IM
#            layer: every call to the IM partition's owner, node 0) and a
#            `read` every 5 messages: acks/s, ack and push p99, with the IM
#            layer on every node (not in the default SCENARIOS).
#   latency  same-node against cross-node delivery: LAT_SUBSCRIBERS
#            subscribers all on node 0 (each node on its own ports for this
#            one), published through node 0's API, then node 1's.
# Around every cluster scenario it reads the nodes' `cluster` counters and
# nats-server's /varz: bytes on NATS per publication.
#
# usage: benches/cluster.sh            (env below; defaults: this 2-core box)
# env: NODES=4 CONNECTIONS=70000 SCENARIOS="connect fanout chat latency"
#      PER_WORKER=17500 (<= 18000: the loadgen's cap) SOURCE_IPS=<auto>
#      CONNECT_RATE=5000 HOLD_S=20 (each worker holds this long after its own
#      last connect: long enough that all are held at once)
#      FANOUT_CONNECTIONS=16000 FANOUT_RATE=5 FANOUT_SECONDS=20
#      FANOUT_PUBLICATIONS=400 FANOUT_WINDOW=32
#      CHAT_CONNECTIONS=10000 CHAT_RATE=0.5 CHAT_SECONDS=20
#      IMCHAT_USERS=4000 IMCHAT_RATE=0.5 (messages/s per user) IMCHAT_SECONDS=20
#      LAT_SUBSCRIBERS=200 LAT_RATE=100 LAT_SECONDS=20
#      SHARDS=1 BASELINE=1 (0: cluster only) BUILD=1 (0: use the binaries as built)
#      PORT=19080 (WS; API = PORT+1; per-node ports from PORT+20)
#      SYSCTLS="net.ipv4.tcp_max_syn_backlog=4096" (comma-separated key=value,
#      set for the run, restored on exit; "" sets nothing)
#      LOADGEN_DRIVER=uring (or epoll) LAT_ROUNDS=2
#      NOFILE=<raise the soft open-files limit to this first, when given>
#      OUT=docs/bench-runs/<date>-cluster
# Loopback only. Every process it starts is stopped by PID on exit, every
# load run is bounded by `timeout`, and each scenario stays under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${NODES:-4}
connections=${CONNECTIONS:-70000}
per_worker=${PER_WORKER:-17500}
scenarios=${SCENARIOS:-connect fanout chat latency}
connect_rate=${CONNECT_RATE:-5000}
hold_s=${HOLD_S:-20}
fanout_connections=${FANOUT_CONNECTIONS:-16000}
fanout_rate=${FANOUT_RATE:-5}
fanout_seconds=${FANOUT_SECONDS:-20}
fanout_publications=${FANOUT_PUBLICATIONS:-400}
fanout_window=${FANOUT_WINDOW:-32}
chat_connections=${CHAT_CONNECTIONS:-10000}
chat_rate=${CHAT_RATE:-0.5}
chat_seconds=${CHAT_SECONDS:-20}
imchat_users=${IMCHAT_USERS:-4000}
imchat_rate=${IMCHAT_RATE:-0.5}
imchat_seconds=${IMCHAT_SECONDS:-20}
lat_subscribers=${LAT_SUBSCRIBERS:-200}
lat_rate=${LAT_RATE:-100}
lat_seconds=${LAT_SECONDS:-20}
lat_rounds=${LAT_ROUNDS:-2}
loadgen_driver=${LOADGEN_DRIVER:-uring}
shards=${SHARDS:-1}
baseline=${BASELINE:-1}
build=${BUILD:-1}
port=${PORT:-19080}
out=${OUT:-docs/bench-runs/$(date +%F)-cluster}
target_dir=${CARGO_TARGET_DIR:-target}
engine_bin=${ENGINE:-$target_dir/release/ringcast}
loadgen_bin=${LOADGEN:-$target_dir/release/ringcast-loadgen}
nats_bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
secret=dev-only-jwt-secret-change-me-0123456789
api_key=dev-only-api-key-change-me
# One loadgen worker holds at most 18,000 sockets (its SOCKETS_PER_WORKER_MAX).
[ "$per_worker" -le 18000 ] || { echo "PER_WORKER must be <= 18000" >&2; exit 2; }
workers_for() { echo $(( ($1 + per_worker - 1) / per_worker )); }
# One source address per 7,000 connections: connect() looks for a free port
# of its (source, destination) pair from a random point, and the search slows
# down as the range fills (connect times of seconds past ~11,000 per address
# with 28,232 ports on this box).
n_sources=$(( connections / 7000 + 2 ))
[ "$n_sources" -le 250 ] || { echo "more than 250 source addresses: set SOURCE_IPS" >&2; exit 2; }
sources=${SOURCE_IPS:-127.0.1.1-127.0.1.$n_sources}

# Kernel settings for the run (tuning/check names them), restored on exit.
sysctls=${SYSCTLS-net.ipv4.tcp_max_syn_backlog=4096}
sysctl_restore=()
apply_sysctls() {
    local kv key old list
    IFS=, read -ra list <<< "$sysctls"
    for kv in "${list[@]}"; do
        key=${kv%%=*}
        old=$(sysctl -n "$key" 2>/dev/null | tr '\t' ' ') || continue
        if sysctl -qw "$key=${kv#*=}" 2>/dev/null; then
            sysctl_restore+=("$key=$old")
        else
            echo "could not set $kv (not root?): going on with $key = $old" >&2
        fi
    done
}
restore_sysctls() {
    local kv
    for kv in "${sysctl_restore[@]}"; do
        sysctl -qw "$kv" 2>/dev/null || echo "could not restore $kv" >&2
    done
    sysctl_restore=()
}

if [ -n "${NOFILE:-}" ]; then
    ulimit -n "$NOFILE"
fi
if [ "$build" = 1 ]; then
    cargo release-bins >&2 # the shared crate set (.cargo/config.toml)
fi
[ -x "$nats_bin" ] || { echo "nats-server not found (apt-get install nats-server, or NATS_SERVER=...)" >&2; exit 2; }
mkdir -p "$out"
tmp=$(mktemp -d)
nats_pid=""
tap_pid=""
engine_pids=()
loadgen_pid=""

stop_pid() { # pid: TERM, then KILL after 10 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_engines() {
    for pid in "${engine_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${engine_pids[@]}"; do
        stop_pid "$pid"
    done
    engine_pids=()
}
cleanup() {
    [ -n "$loadgen_pid" ] && stop_pid "$loadgen_pid"
    stop_engines
    [ -n "$tap_pid" ] && stop_pid "$tap_pid"
    [ -n "$nats_pid" ] && stop_pid "$nats_pid"
    # The processes' logs end up in the results (their ends: warnings only).
    local f
    for f in "$tmp"/*/*.log; do
        [ -f "$f" ] || continue
        echo "== ${f#"$tmp"/} ($(wc -l < "$f") lines)"
        tail -n 20 "$f"
    done > "$out/logs-tail.txt" 2>/dev/null || true
    rm -rf "$tmp"
    restore_sysctls
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%T) load $(cut -d" " -f1-3 /proc/loadavg)] $*" | tee -a "$out/run.log" >&2; }

# --- host ---------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "open files (soft/hard): $(ulimit -Sn)/$(ulimit -Hn)"
    sysctl net.ipv4.ip_local_port_range net.core.somaxconn net.ipv4.tcp_max_syn_backlog \
        net.ipv4.tcp_mem net.ipv4.tcp_migrate_req 2>/dev/null || true
    echo "nats-server: $("$nats_bin" --version 2>&1)"
    echo "engine: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "nodes=$nodes connections=$connections per_worker=$per_worker source_ips=$sources shards=$shards"
    echo
    tuning/check --connections="$connections" || true
} > "$out/host.txt" 2>&1
# The host as found is in host.txt; the run's own settings follow it.
apply_sysctls 2>> "$out/host.txt"
for kv in "${sysctl_restore[@]}"; do
    echo "set for the run: ${kv%%=*} = $(sysctl -n "${kv%%=*}" | tr '\t' ' ') (was ${kv#*=})"
done >> "$out/host.txt"

cat > "$out/params.json" <<JSON
{"nodes": $nodes, "connections": $connections, "per_worker": $per_worker, "source_ips": "$sources",
 "shards": $shards, "connect_rate": $connect_rate, "hold_s": $hold_s,
 "fanout_connections": $fanout_connections, "fanout_rate": $fanout_rate,
 "fanout_seconds": $fanout_seconds, "fanout_publications": $fanout_publications,
 "fanout_window": $fanout_window, "chat_connections": $chat_connections, "chat_rate": $chat_rate,
 "chat_seconds": $chat_seconds, "imchat_users": $imchat_users, "imchat_rate": $imchat_rate,
 "imchat_seconds": $imchat_seconds, "lat_subscribers": $lat_subscribers, "lat_rate": $lat_rate,
 "lat_seconds": $lat_seconds, "lat_rounds": $lat_rounds, "loadgen_driver": "$loadgen_driver",
 "scenarios": "$scenarios", "baseline": $baseline,
 "host_cores": $(nproc), "date": "$(date -u +%FT%TZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null)"}
JSON

# --- nats-server --------------------------------------------------------
start_nats() {
    mkdir -p "$tmp/nats"
    cat > "$tmp/nats/nats.conf" <<CONF
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
ports_file_dir: "$tmp/nats"
max_payload: 1048576
ping_interval: "2s"
ping_max: 3
CONF
    "$nats_bin" -c "$tmp/nats/nats.conf" > "$tmp/nats/nats.log" 2>&1 &
    nats_pid=$!
    local ports=$tmp/nats/nats-server_$nats_pid.ports
    for _ in $(seq 100); do
        [ -s "$ports" ] && break
        sleep 0.1
    done
    [ -s "$ports" ] || { cat "$tmp/nats/nats.log" >&2; exit 1; }
    nats_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nats"][0])' "$ports")
    nats_http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["monitoring"][0])' "$ports")
    log "nats-server $nats_pid at $nats_url, monitoring $nats_http"
    python3 benches/nats-tap.py "$nats_url" "$tmp/nats/tap.json" 2> "$tmp/nats/tap.log" &
    tap_pid=$!
}

# --- engines ------------------------------------------------------------
# start_engines LABEL N MODE: MODE "shared" (one WS and one API port for all),
# "own" (node i on PORT+20+2i / PORT+21+2i) or "single" (one process, no
# cluster, on the shared ports).
start_engines() {
    local label=$1 n=$2 mode=$3 i ws api cluster
    for i in $(seq 0 $((n - 1))); do
        if [ "$mode" = own ]; then
            ws=$((port + 20 + 2 * i)) api=$((port + 21 + 2 * i))
        else
            ws=$port api=$((port + 1))
        fi
        cluster=""
        im=false
        [[ " $scenarios " == *" imchat "* ]] && im=true
        if [ "$mode" != single ]; then
            cluster="[cluster]
nats_url = \"$nats_url\"
stores = $n"
        fi
        mkdir -p "$tmp/$label"
        cat > "$tmp/$label/node-$i.toml" <<TOML
version = 1
[server]
shards = $shards
pin_cores = false
node_id = $i
data_dir = "$tmp/$label/data-$i"
[websocket]
listen = "127.0.0.1:$ws"
backlog = 4096
connections_max_per_shard = 20000
[api]
listen = "127.0.0.1:$api"
key = "$api_key"
[auth]
jwt_secret = "$secret"
$cluster
[[namespace]]
name = "news"
subscribe = "public"
publish = "none"
[[namespace]]
name = "room"
subscribe = "public"
publish = "any"
[im]
enabled = $im
[log]
level = "warn"
TOML
        "$engine_bin" --config="$tmp/$label/node-$i.toml" > "$tmp/$label/node-$i.log" 2>&1 &
        engine_pids+=($!)
    done
    # Ready when every node answers on its API and, in a cluster, the
    # shared API's /api/stats lists every node.
    local want=$n
    [ "$mode" = single ] && want=1
    for _ in $(seq $((200 + 20 * n))); do
        local seen
        seen=$(curl -s -m 2 -H "Authorization: Bearer $api_key" "http://127.0.0.1:$(api_port 0 "$mode")/api/stats" |
            python3 -c 'import json,sys
try: s = json.load(sys.stdin)
except Exception: print(0); sys.exit()
print(len(s.get("nodes", [s])) if not s.get("missing_nodes") else 0)' 2>/dev/null || true)
        [ -n "$seen" ] || seen=0
        [ "$seen" -ge "$want" ] && { log "$label: $n engine(s) up ($mode): ${engine_pids[*]}"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$tmp/$label"/node-*.log >&2
    exit 1
}
api_port() { # node mode
    if [ "$2" = own ]; then echo $((port + 21 + 2 * $1)); else echo $((port + 1)); fi
}
ws_url() { # node mode
    local ws=$port
    [ "$2" = own ] && ws=$((port + 20 + 2 * $1))
    echo "ws://127.0.0.1:$ws/connection/websocket"
}

# --- readings -----------------------------------------------------------
# The cluster's own view (/api/stats through the given API port) plus
# nats-server's /varz, in one JSON file.
# The tap's totals and /varz first (the tap rewrites its file every 0.1 s),
# then the nodes' counters: the three within a few tens of milliseconds.
snapshot() { # file api_port
    local stats varz='{}' tap='{}'
    if [ -n "$nats_pid" ]; then
        [ -s "$tmp/nats/tap.json" ] && tap=$(cat "$tmp/nats/tap.json")
        varz=$(curl -s -m 5 "$nats_http/varz" || echo '{}')
    fi
    stats=$(curl -s -m 5 -H "Authorization: Bearer $api_key" "http://127.0.0.1:$2/api/stats" || echo '{}')
    printf '{"stats": %s, "varz": %s, "tap": %s}\n' "${stats:-{\}}" "${varz:-{\}}" "$tap" > "$1"
}
# RSS (kB) of the engines, nats-server and the load generator's processes,
# and the kernel's TCP memory (pages) and socket count, as JSON.
memory() { # file
    local pids="" pid
    for pid in "${engine_pids[@]}"; do pids+="engine:$pid "; done
    [ -n "$nats_pid" ] && pids+="nats:$nats_pid "
    # The load generator: `timeout`, its parent process and the workers.
    local level=$loadgen_pid
    while [ -n "$level" ]; do
        for pid in $level; do pids+="loadgen:$pid "; done
        level=$(ps -o pid= --ppid "$(echo $level | tr ' ' ',')" 2>/dev/null | tr -s ' \n' ' ' | xargs || true)
    done
    python3 - "$1" $pids <<'PY'
import json, sys
out = {"processes": []}
for item in sys.argv[2:]:
    kind, pid = item.split(":")
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        continue
    rss = next((int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:")), 0)
    out["processes"].append({"kind": kind, "pid": int(pid), "rss_kb": rss})
for line in open("/proc/net/sockstat"):
    if line.startswith("TCP:"):
        f = line.split()
        out["tcp"] = {f[i]: int(f[i + 1]) for i in range(1, len(f) - 1, 2)}
meminfo = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
out["meminfo_kb"] = {k: meminfo[k] for k in ("MemAvailable", "Slab", "SUnreclaim")}
json.dump(out, open(sys.argv[1], "w"))
PY
}

connections_now() { # mode: connections the cluster (or the process) holds
    local n
    n=$(curl -s -m 5 -H "Authorization: Bearer $api_key" "http://127.0.0.1:$(api_port 0 "$1")/api/stats" |
        python3 -c 'import json,sys; s = json.load(sys.stdin); print(s.get("cluster_connections", s["connections"]))' 2>/dev/null || true)
    echo "${n:-0}"
}
# loadgen SCENARIO OUT_PREFIX TIMEOUT_S ARGS...: runs the load generator in
# the background (so memory() can see it), waits for it.
loadgen() {
    local scenario=$1 prefix=$2 limit=$3
    shift 3
    timeout "$limit" "$loadgen_bin" "$scenario" --secret="$secret" --driver="$loadgen_driver" \
        "$@" --out="$prefix" \
        > "$prefix.log" 2>&1 &
    loadgen_pid=$!
}
loadgen_wait() {
    local rc=0
    wait "$loadgen_pid" || rc=$?
    loadgen_pid=""
    sleep 0.3 # the last batches reach the tap
    [ "$rc" -le 1 ] || log "loadgen exited $rc (see its log)"
}

# --- scenarios ----------------------------------------------------------
# connect: open COUNT connections, and while they are held read the stats
# (once the count stops growing) and the memory.
run_connect() { # label count mode
    local label=$1 count=$2 mode=$3 workers held=0 last=-1
    workers=$(workers_for "$count")
    memory "$out/$label-connect-idle-mem.json"
    loadgen connect "$out/$label-connect" $((count / connect_rate + hold_s + 60)) \
        --target="$(ws_url 0 "$mode")" --connections="$count" --workers="$workers" \
        --rate="$connect_rate" --hold-s="$hold_s" --source-ips="$sources"
    # Held: every connection, or the count has stopped growing (three equal
    # readings 1 s apart).
    local stable=0
    nstat -n >/dev/null 2>&1 || true
    while kill -0 "$loadgen_pid" 2>/dev/null; do
        sleep 1
        held=$(connections_now "$mode")
        [ "$held" -ge "$count" ] && break
        if [ "$held" -gt 0 ] && [ "$held" -eq "$last" ]; then
            stable=$((stable + 1))
            [ "$stable" -ge 2 ] && break
        else
            stable=0
        fi
        last=$held
    done
    # The kernel's view of the connect storm (listen queue overflows, SYN
    # retransmits, port search failures) since the start.
    nstat -z 2>/dev/null | grep -E 'ListenOverflows|ListenDrops|TCPReqQFullDrop|TcpRetransSegs|TCPSynRetrans|TcpAttemptFails|TcpActiveOpens|TcpPassiveOpens' \
        > "$out/$label-connect-nstat.txt" || true
    snapshot "$out/$label-connect-held.json" "$(api_port 0 "$mode")"
    memory "$out/$label-connect-held-mem.json"
    log "$label connect: $held held"
    loadgen_wait
}

run_fanout() { # label mode
    local label=$1 mode=$2 workers
    workers=$(workers_for "$fanout_connections")
    snapshot "$out/$label-fanout-before.json" "$(api_port 0 "$mode")"
    local connect_s=$((fanout_connections / connect_rate))
    loadgen fanout "$out/$label-fanout-fixed" $((connect_s + fanout_seconds + 60)) \
        --target="$(ws_url 0 "$mode")" --api="127.0.0.1:$(api_port 0 "$mode")" --api-key="$api_key" \
        --connections="$fanout_connections" --workers="$workers" --connect-rate="$connect_rate" \
        --channel=news:load --rate="$fanout_rate" --seconds="$fanout_seconds" --source-ips="$sources"
    loadgen_wait
    snapshot "$out/$label-fanout-fixed-after.json" "$(api_port 0 "$mode")"
    loadgen fanout "$out/$label-fanout-closed" $((connect_s + 90)) \
        --target="$(ws_url 0 "$mode")" --api="127.0.0.1:$(api_port 0 "$mode")" --api-key="$api_key" \
        --connections="$fanout_connections" --workers="$workers" --connect-rate="$connect_rate" \
        --channel=news:load --rate=0 --publications="$fanout_publications" \
        --window="$fanout_window" --seconds=30 --source-ips="$sources"
    loadgen_wait
    snapshot "$out/$label-fanout-closed-after.json" "$(api_port 0 "$mode")"
    log "$label fanout done"
}

run_chat() { # label mode
    local label=$1 mode=$2 workers
    workers=$(workers_for "$chat_connections")
    # A worker holds whole pairs and groups: at least 2 workers keep the
    # chat's local bookkeeping the same in both runs.
    [ "$workers" -ge 2 ] || workers=2
    snapshot "$out/$label-chat-before.json" "$(api_port 0 "$mode")"
    loadgen chat "$out/$label-chat" $((chat_connections / connect_rate + chat_seconds + 60)) \
        --target="$(ws_url 0 "$mode")" --api="127.0.0.1:$(api_port 0 "$mode")" \
        --connections="$chat_connections" --workers="$workers" --connect-rate="$connect_rate" \
        --pair-share=0.5 --group-size=8 --group-namespace=room \
        --rate="$chat_rate" --seconds="$chat_seconds" --source-ips="$sources"
    loadgen_wait
    snapshot "$out/$label-chat-after.json" "$(api_port 0 "$mode")"
    log "$label chat done"
}

run_imchat() { # label mode
    local label=$1 mode=$2 workers
    workers=$(workers_for "$imchat_users")
    [ "$workers" -ge 2 ] || workers=2
    snapshot "$out/$label-imchat-before.json" "$(api_port 0 "$mode")"
    loadgen chat "$out/$label-imchat" $((imchat_users / connect_rate + imchat_seconds + 60)) --im \
        --target="$(ws_url 0 "$mode")" --api="127.0.0.1:$(api_port 0 "$mode")" \
        --connections="$imchat_users" --workers="$workers" --connect-rate="$connect_rate" \
        --pair-share=1.0 --devices-per-user=1 --read-every=5 --drain-s=5 \
        --rate="$imchat_rate" --seconds="$imchat_seconds" --source-ips="$sources"
    loadgen_wait
    snapshot "$out/$label-imchat-after.json" "$(api_port 0 "$mode")"
    log "$label imchat done"
}

# latency: subscribers all on node 0; publications through node 0's API
# (same node) and node 1's (cross node), LAT_ROUNDS times each, alternating.
run_latency() {
    local round via
    for round in $(seq "$lat_rounds"); do
        for via in 0 1; do
            local name=same
            [ "$via" = 1 ] && name=cross
            snapshot "$out/latency-$name-$round-before.json" "$(api_port 0 own)"
            loadgen fanout "$out/latency-$name-$round" $((lat_seconds + 60)) \
                --target="$(ws_url 0 own)" --api="127.0.0.1:$(api_port "$via" own)" --api-key="$api_key" \
                --connections="$lat_subscribers" --workers=1 \
                --channel=news:lat --rate="$lat_rate" --seconds="$lat_seconds"
            loadgen_wait
            snapshot "$out/latency-$name-$round-after.json" "$(api_port 0 own)"
            log "latency $name round $round done"
        done
    done
}

has() { [[ " $scenarios " == *" $1 "* ]]; }

# The cluster on one port.
start_nats
if has connect || has fanout || has chat || has imchat; then
    start_engines cluster "$nodes" shared
    has connect && run_connect cluster "$connections" shared
    has fanout && run_fanout cluster shared
    has chat && run_chat cluster shared
    has imchat && run_imchat cluster shared
    stop_engines
fi
# The same load on one process (connect: one node's share).
if [ "$baseline" = 1 ] && { has connect || has fanout || has chat || has imchat; }; then
    start_engines single 1 single
    has connect && run_connect single $(( (connections + nodes - 1) / nodes )) single
    has fanout && run_fanout single single
    has chat && run_chat single single
    has imchat && run_imchat single single
    stop_engines
fi
if has latency; then
    [ "$nodes" -ge 2 ] || { log "latency needs NODES >= 2"; exit 2; }
    start_engines latency "$nodes" own
    run_latency
    stop_engines
fi
stop_pid "$tap_pid"
tap_pid=""
stop_pid "$nats_pid"
nats_pid=""

python3 benches/cluster-summary.py "$out"
log "results in $out (README.md, summary.json)"
