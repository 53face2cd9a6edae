#!/usr/bin/env bash
# Two engine builds side by side, in one run on one machine: the numbers
# the shard redesign reports (docs/benchmarks.md, "Before and after").
#
# usage: benches/shard-compare.sh [BEFORE_BINARY [AFTER_BINARY]]
#
#   BEFORE=/work/before/ringcast     the engine before the change (arg 1)
#   AFTER=<target>/release/ringcast  the engine after it (arg 2; built here
#                                    with BUILD=1, the default)
#   SERVERS="before after floor nchan"
#   PASSES=3                         every measure this many times (median
#                                    reported, each pass's ratios too)
#   IDLE_COUNTS=1000,10000,18000     1. idle memory (idle_memory), engines only
#   LATENCY_SIZES="5000 18000"       2./3. fixed-rate fan-out: subscribers
#   LATENCY_DELIVERIES_PER_S=100000  offered deliveries/s at every size
#                                    (publications/s = this / subscribers)
#   LATENCY_SECONDS=10
#   THROUGHPUT_CONNECTIONS=5000      4. closed loop, engines only
#   THROUGHPUT_PUBLICATIONS=2000 THROUGHPUT_SECONDS=8 WINDOW=32
#   CHAT_CONNECTIONS=10000 CHAT_RATE=4 CHAT_SECONDS=10   5. chat, engines only
#   CHAT_PAIR_SHARE=0.5 CHAT_GROUP_SIZE=8
#   CONNECT_RATE=2000                new connections/s in every run
#   DRAIN_S=5 WORKERS=2 SOURCE_IPS=127.0.2.1-127.0.2.8
#   SERVER_THREADS=$(nproc)          engine shards, nginx workers
#   DRIVER=io_uring                  the engines' [server] driver
#   CONNECTIONS_MAX_PER_SHARD=20000  so one shard may hold every connection
#                                    (empty: leave the key out of the config)
#   FLOOR_FRAME_BYTES=64             the kernel floor's frame size
#   OUT_DIR=<target>/shard-compare/<date>-<time>
#   INSTALL=1 (apt-get nginx + libnginx-mod-nchan if missing) BUILD=1
#   SERVER_MAX_S=600                 hard bound on one server instance
#
# Each measure runs every server in turn (before, after, floor, nchan), a
# fresh server per run, so slow drift on a shared box (a compile on the
# other core) spreads over all of them; even passes take the servers in
# the reverse order. About 4 minutes per pass on the 2-core development
# host with the defaults. Every step runs under `timeout`;
# every process started here is stopped here, by PID. Loopback only.
# Writes OUT_DIR/{summary.md,summary.json,meta.json} and per pass
# OUT_DIR/pass-<k>/{summary.md,runs.tsv,<server>/...}: the load generator's
# raw JSON/CSV/logs, idle_memory's CSV, kernel_floor's round statistics and
# each server's log per run. Exit 0 when every run completed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/benches/compare
PY="python3 $HERE/compare.py"
# shellcheck source=benches/compare/lib.sh
source "$HERE/lib.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BEFORE=${1:-${BEFORE:-/work/before/ringcast}}
AFTER=${2:-${AFTER:-$TARGET_DIR/release/ringcast}}
SERVERS=${SERVERS:-"before after floor nchan"}
PASSES=${PASSES:-3}
IDLE_COUNTS=${IDLE_COUNTS:-1000,10000,18000}
LATENCY_SIZES=${LATENCY_SIZES:-"5000 18000"}
LATENCY_DELIVERIES_PER_S=${LATENCY_DELIVERIES_PER_S:-100000}
LATENCY_SECONDS=${LATENCY_SECONDS:-10}
THROUGHPUT_CONNECTIONS=${THROUGHPUT_CONNECTIONS:-5000}
THROUGHPUT_PUBLICATIONS=${THROUGHPUT_PUBLICATIONS:-2000}
THROUGHPUT_SECONDS=${THROUGHPUT_SECONDS:-8}
WINDOW=${WINDOW:-32}
CHAT_CONNECTIONS=${CHAT_CONNECTIONS:-10000}
CHAT_RATE=${CHAT_RATE:-4}
CHAT_SECONDS=${CHAT_SECONDS:-10}
CHAT_PAIR_SHARE=${CHAT_PAIR_SHARE:-0.5}
CHAT_GROUP_SIZE=${CHAT_GROUP_SIZE:-8}
CONNECT_RATE=${CONNECT_RATE:-2000}
DRAIN_S=${DRAIN_S:-5}
WORKERS=${WORKERS:-2}
SOURCE_IPS=${SOURCE_IPS:-127.0.2.1-127.0.2.8}
SERVER_THREADS=${SERVER_THREADS:-$(nproc)}
DRIVER=${DRIVER:-io_uring}
CONNECTIONS_MAX_PER_SHARD=${CONNECTIONS_MAX_PER_SHARD-20000}
FLOOR_FRAME_BYTES=${FLOOR_FRAME_BYTES:-64}
OUT_DIR=${OUT_DIR:-$TARGET_DIR/shard-compare/$(date +%F-%H%M%S)}
INSTALL=${INSTALL:-1}
BUILD=${BUILD:-1}
SERVER_MAX_S=${SERVER_MAX_S:-600}

# Ports: loopback, away from compare/run (191xx-195xx) and engine-bench.sh.
RC_WS=19710 RC_API=19711 FLOOR_PORT=19720 NCHAN_PORT=19730
export RINGCAST_AUTH_JWT_SECRET=dev-only-jwt-secret-change-me-0123456789
export RINGCAST_API_KEY=dev-only-api-key-change-me
LG=$TARGET_DIR/release/ringcast-loadgen
IDLE=$TARGET_DIR/release/idle_memory
FLOOR=$TARGET_DIR/release/kernel_floor

tmp=$(mktemp -d /tmp/ringcast-shard-compare.XXXXXX)
: >"$tmp/server.log"
server_pid="" engine_pid="" lg_pid="" failures=0 run_warn=()
started_s=$(date +%s)
stop_server() { stop_pid "$server_pid"; server_pid=""; engine_pid=""; }
cleanup() { stop_pid "$lg_pid"; stop_server; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build/install
if [ "$BUILD" = 1 ]; then
    say "building (release): engine, load generator, bench tools"
    timeout 3000 cargo release-bins >&2
fi
for tool in "$LG" "$IDLE" "$FLOOR"; do
    [ -x "$tool" ] || { loud "no $tool; build it first (cargo release-bins)"; exit 2; }
done
BEFORE=$(realpath "$BEFORE") AFTER=$(realpath "$AFTER")
for bin in "$BEFORE" "$AFTER"; do
    [ -x "$bin" ] || { loud "engine binary $bin is missing (BEFORE=..., AFTER=... or arguments 1 and 2)"; exit 2; }
done
declare -A skip
if [[ " $SERVERS " == *" nchan "* ]]; then
    nchan_installed || apt_install nginx libnginx-mod-nchan
    nchan_installed || skip[nchan]="nginx or libnginx-mod-nchan is not installed (apt-get install nginx libnginx-mod-nchan)"
fi
mkdir -p "$OUT_DIR"
say "results in $OUT_DIR"

# ---------------------------------------------------------------- servers
engine_binary() { case $1 in before) echo "$BEFORE" ;; after) echo "$AFTER" ;; esac; }

start_server() { # name floor_stats_path log
    local log=$3 port
    case $1 in
    before | after) port=$RC_WS ;;
    floor) port=$FLOOR_PORT ;;
    nchan) port=$NCHAN_PORT ;;
    esac
    port_free "$port" || { loud "port $port is already in use by someone else"; return 1; }
    case $1 in
    before | after)
        rm -rf "$tmp/ringcast-data"
        ringcast_config "$DRIVER" "${CONNECTIONS_MAX_PER_SHARD:+connections_max_per_shard = $CONNECTIONS_MAX_PER_SHARD}" \
            "$(printf '[[namespace]]\nname = "room"\nsubscribe = "public"\npublish = "any"')"
        timeout "$SERVER_MAX_S" "$(engine_binary "$1")" --config="$tmp/ringcast.toml" >>"$log" 2>&1 &
        server_pid=$!
        wait_port "$RC_API" "$log" && wait_port "$RC_WS" "$log" || return 1
        # The engine is timeout's child: idle_memory reads its RSS.
        engine_pid=$(ps -o pid= --ppid "$server_pid" | tr -d ' ')
        ;;
    floor)
        timeout "$SERVER_MAX_S" "$FLOOR" --listen="127.0.0.1:$FLOOR_PORT" \
            --frame-bytes="$FLOOR_FRAME_BYTES" --stats-out="$2" >>"$log" 2>&1 &
        server_pid=$!
        wait_port "$FLOOR_PORT" "$log" || return 1
        ;;
    nchan)
        nginx_config
        timeout "$SERVER_MAX_S" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >>"$log" 2>&1 &
        server_pid=$!
        wait_port "$NCHAN_PORT" "$log" || return 1
        ;;
    esac
    sleep 1 # let it finish starting (allocator arenas, worker processes)
}

lg_target() { # server scenario -> the load generator's profile and addresses
    local a=()
    case $1 in
    before | after)
        a+=(--profile=ringcast "--target=ws://127.0.0.1:$RC_WS/connection/websocket" "--api=127.0.0.1:$RC_API")
        [ "$2" = fanout ] && a+=(--channel=news:load)
        ;;
    floor | nchan)
        local port=$FLOOR_PORT
        [ "$1" = nchan ] && port=$NCHAN_PORT
        a+=(--profile=nchan "--target=ws://127.0.0.1:$port/sub/{channel}"
            "--publish-url=http://127.0.0.1:$port/pub/{channel}" --channel=load)
        ;;
    esac
    printf '%s\n' "${a[@]}"
}

# A server's log for one run: its size and the last 200 lines (an
# overloaded engine logs a line per refused request).
keep_log() { # destination
    { echo "# $(wc -l <"$tmp/server.log") lines in all; the last 200:"; tail -n 200 "$tmp/server.log"; } >"$1"
    : >"$tmp/server.log"
}

cpu_of() { $PY tree "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_s"])'; }

record() { # server run status
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$PASS_DIR/runs.tsv"
    [ "$3" = ok ] || [ "$3" = "ok; errors or losses" ] || failures=$((failures + 1))
}

# One load-generator run against a fresh server: run name, then the
# load generator's scenario and its arguments.
loadgen_run() { # server run limit_s scenario args...
    local s=$1 run=$2 limit=$3 scenario=$4 d=$PASS_DIR/$1 cpu0 cpu1 t0 t1 state=ok
    shift 4
    if ! start_server "$s" "$d/$run.floor.json" "$tmp/server.log"; then
        stop_server
        keep_log "$d/$run.server.log"
        record "$s" "$run" "failed: server did not start"
        return 0
    fi
    mapfile -t target < <(lg_target "$s" "$scenario")
    cpu0=$(cpu_of "$server_pid") t0=$(date +%s.%N)
    run_warn=()
    start_loadgen "$d/$run" "$limit" "$scenario" "${target[@]}" --workers="$WORKERS" \
        --source-ips="$SOURCE_IPS" --drain-s="$DRAIN_S" "$@"
    finish_loadgen "$d/$run" || state="failed: load generator (see $run.log)"
    cpu1=$(cpu_of "$server_pid") t1=$(date +%s.%N)
    python3 -c 'import json,sys; c0,c1,t0,t1=map(float,sys.argv[1:5]); json.dump({"server_cpu_s": round(c1-c0,2), "wall_s": round(t1-t0,3), "server_cores_busy": round((c1-c0)/max(t1-t0,1e-3),3)}, open(sys.argv[5],"w"), indent=1)' \
        "$cpu0" "$cpu1" "$t0" "$t1" "$d/$run.server.json"
    stop_server
    keep_log "$d/$run.server.log"
    [ "$state" = ok ] && [ ${#run_warn[@]} -gt 0 ] && state="ok; errors or losses"
    record "$s" "$run" "$state"
}

idle_run() { # server
    local s=$1 d=$PASS_DIR/$1 max rc=0
    max=$(tr ',' '\n' <<<"$IDLE_COUNTS" | sort -n | tail -1)
    if ! start_server "$s" "" "$tmp/server.log"; then
        stop_server
        keep_log "$d/idle.server.log"
        record "$s" idle "failed: server did not start"
        return 0
    fi
    timeout $((max / 500 + 60)) "$IDLE" --ws="127.0.0.1:$RC_WS" --engine-pid="$engine_pid" \
        --counts="$IDLE_COUNTS" >"$d/idle-memory.csv" 2>"$d/idle-memory.log" || rc=$?
    stop_server
    keep_log "$d/idle.server.log"
    if [ "$rc" = 0 ]; then record "$s" idle ok; else
        loud "idle_memory failed (exit $rc) against $s: $(tail -3 "$d/idle-memory.log")"
        record "$s" idle "failed: idle_memory exit $rc"
    fi
}

# ---------------------------------------------------------------- meta
binary_meta() { # name path
    printf '"%s": {"path": "%s", "sha256": "%s", "bytes": %s, "mtime": "%s"}' "$1" "$2" \
        "$(sha256sum "$2" | cut -c1-16)" "$(stat -c %s "$2")" "$(date -r "$2" +%FT%T)"
}
{
    echo "{"
    echo "\"date\": \"$(date +%FT%T)\","
    echo "\"command\": \"benches/shard-compare.sh $*\","
    echo "\"tree\": \"$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)')\","
    echo "\"host\": \"$(hostname -s), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); client and servers share the cores (loopback)\","
    echo "\"nchan\": \"$(nchan_installed && nchan_version)\","
    echo "\"binaries\": {$(binary_meta before "$BEFORE"), $(binary_meta after "$AFTER"), $(binary_meta loadgen "$LG"), $(binary_meta kernel_floor "$FLOOR")},"
    echo "\"params\": {"
    for v in SERVERS PASSES IDLE_COUNTS LATENCY_SIZES LATENCY_DELIVERIES_PER_S LATENCY_SECONDS THROUGHPUT_CONNECTIONS \
        THROUGHPUT_PUBLICATIONS THROUGHPUT_SECONDS WINDOW CHAT_CONNECTIONS CHAT_RATE CHAT_SECONDS CHAT_PAIR_SHARE \
        CHAT_GROUP_SIZE CONNECT_RATE DRAIN_S WORKERS SOURCE_IPS SERVER_THREADS DRIVER CONNECTIONS_MAX_PER_SHARD; do
        echo "  \"$v\": \"${!v}\","
    done
    echo "  \"FLOOR_FRAME_BYTES\": \"$FLOOR_FRAME_BYTES\""
    echo "}}"
} >"$OUT_DIR/meta.json"
skipped=()
for s in $SERVERS; do
    [ -z "${skip[$s]:-}" ] || { loud "SKIPPING $s: ${skip[$s]}"; skipped+=("$s"); }
done
runs() { # servers that take part in a measure, in this pass's order, minus skipped ones
    local s
    for s in $ORDER; do
        [[ " $* " == *" $s "* ]] && [[ " ${skipped[*]} " != *" $s "* ]] && echo "$s"
    done
    return 0
}

one_pass() { # pass number
    PASS_DIR=$OUT_DIR/pass-$1
    ORDER=$SERVERS
    [ $(($1 % 2)) = 1 ] || ORDER=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' ')
    mkdir -p "$PASS_DIR"
    : >"$PASS_DIR/runs.tsv"
    for s in $SERVERS; do
        mkdir -p "$PASS_DIR/$s"
        [ -z "${skip[$s]:-}" ] || record "$s" all "skipped: ${skip[$s]}"
    done

    # 1. Idle memory.
    for s in $(runs before after); do
        say "pass $1/$PASSES, $s: idle memory at $IDLE_COUNTS connections"
        idle_run "$s"
    done

    # 2. and 3. Fixed rate, with the kernel floor.
    for n in $LATENCY_SIZES; do
        rate=$(python3 -c "print(round($LATENCY_DELIVERIES_PER_S / $n, 3))")
        for s in $(runs before after floor nchan); do
            say "pass $1/$PASSES, $s: fan-out to $n subscribers, $rate publications/s for $LATENCY_SECONDS s"
            loadgen_run "$s" "fanout-latency-$n" $((n / CONNECT_RATE + LATENCY_SECONDS + DRAIN_S + 60)) fanout \
                --connections="$n" --connect-rate="$CONNECT_RATE" --rate="$rate" --seconds="$LATENCY_SECONDS"
        done
    done

    # 4. Closed loop.
    for s in $(runs before after); do
        say "pass $1/$PASSES, $s: fan-out to $THROUGHPUT_CONNECTIONS subscribers, closed loop (window $WINDOW)"
        loadgen_run "$s" fanout-throughput $((THROUGHPUT_CONNECTIONS / CONNECT_RATE + THROUGHPUT_SECONDS + DRAIN_S + 60)) fanout \
            --connections="$THROUGHPUT_CONNECTIONS" --connect-rate="$CONNECT_RATE" --rate=0 \
            --publications="$THROUGHPUT_PUBLICATIONS" --window="$WINDOW" --seconds="$THROUGHPUT_SECONDS"
    done

    # 5. Chat.
    for s in $(runs before after); do
        say "pass $1/$PASSES, $s: chat, $CHAT_CONNECTIONS users at $CHAT_RATE messages/s each for $CHAT_SECONDS s"
        loadgen_run "$s" chat $((CHAT_CONNECTIONS / CONNECT_RATE + CHAT_SECONDS + DRAIN_S + 60)) chat \
            --connections="$CHAT_CONNECTIONS" --connect-rate="$CONNECT_RATE" --rate="$CHAT_RATE" \
            --seconds="$CHAT_SECONDS" --pair-share="$CHAT_PAIR_SHARE" --group-size="$CHAT_GROUP_SIZE" \
            --group-namespace=room
    done
}

for pass in $(seq "$PASSES"); do
    one_pass "$pass"
done

elapsed=$(($(date +%s) - started_s))
say "done in ${elapsed} s; results in $OUT_DIR"
python3 "$ROOT/benches/shard-compare-summary.py" "$OUT_DIR" "$elapsed"
[ "$failures" = 0 ]
