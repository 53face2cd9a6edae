# Shared bash for the benchmark harnesses that run servers one after the
# other on loopback: benches/compare/run (Ringcast and peers) and
# benches/shard-compare.sh (two engine builds, the kernel floor and Nchan),
# and benches/deflate-bench.sh (compressed against plain fan-out).
# Sourced, not run. What the caller must set before using a function:
#
#   PY           "python3 <repo>/benches/compare/compare.py" (process trees, CPU)
#   LG           the ringcast-loadgen binary
#   tmp          the run's private temporary directory
#   server_pid   the PID wait_port watches (the server being started)
#   INSTALL      1: apt_install may install packages
#   SERVER_THREADS, NCHAN_PORT                      (nginx_config)
#   SERVER_THREADS, RC_WS, RC_API, RINGCAST_API_KEY,
#   RINGCAST_AUTH_JWT_SECRET                             (ringcast_config)
#   sampler_pid  set by start_sampler (stop_sampler stops it)
#   run_warn     an array finish_loadgen appends a run's name to when the
#                load generator reported errors or losses (exit 1)

say() { printf '\n=== %s\n' "$*" >&2; }
loud() { printf '\n!!! %s\n' "$*" >&2; }

stop_pid() { # pid: TERM it, wait up to 10 s, then KILL what is left of its tree
    local pid=$1 left
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    left=$($PY tree "$pid" | python3 -c 'import json,sys; print(" ".join(p.split(":")[1] for p in json.load(sys.stdin)["procs"]))')
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    for p in $left; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "$pid" 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port log
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    loud "server on port $1 did not come up; its log:"
    tail -20 "$2" >&2
    return 1
}

# ---------------------------------------------------------------- install
nchan_installed() { command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; }
nchan_version() { echo "$(nginx -v 2>&1 | sed 's/.*: //'), libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"; }

apt_install() { # packages...: apt-get install them when INSTALL=1 (failure is loud, not fatal)
    [ $# -gt 0 ] || return 0
    [ "$INSTALL" = 1 ] || return 0
    say "apt-get install $*"
    if ! { timeout 600 apt-get update >&2 &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends "$@" >&2; }; then
        loud "apt-get install $* failed"
    fi
}

# ---------------------------------------------------------------- configs
ringcast_config() { # driver [lines for [websocket]] [more TOML at the end] -> $tmp/ringcast.toml
    local websocket_extra=${2:-} extra=${3:-}
    {
        cat <<TOML
version = 1
[server]
shards = $SERVER_THREADS
pin_cores = false
driver = "$1"
data_dir = "$tmp/ringcast-data"
[websocket]
listen = "127.0.0.1:$RC_WS"
backlog = 4096
TOML
        [ -z "$websocket_extra" ] || printf '%s\n' "$websocket_extra"
        cat <<TOML
[api]
listen = "127.0.0.1:$RC_API"
key = "$RINGCAST_API_KEY"
[auth]
jwt_secret = "$RINGCAST_AUTH_JWT_SECRET"
[[namespace]]
name = "news"
[log]
level = "warn"
TOML
        [ -z "$extra" ] || printf '%s\n' "$extra"
    } >"$tmp/ringcast.toml"
}

nginx_config() {
    mkdir -p "$tmp/nginx/logs"
    cat >"$tmp/nginx/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
master_process on;
worker_processes $SERVER_THREADS;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    nchan_shared_memory_size 128M;
    server {
        listen 127.0.0.1:$NCHAN_PORT backlog=4096;
        location ~ ^/sub/(.+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
        }
        location ~ ^/pub/(.+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
            nchan_message_buffer_length 16;
        }
    }
}
NGINX
}

# ---------------------------------------------------------------- load generator
# Runs the load generator in the background, its CPU accounted by
# compare.py (all worker processes); sets lg_pid.
start_loadgen() { # out_prefix timeout_s args...
    local prefix=$1 limit=$2
    shift 2
    $PY loadgen "$prefix.run.json" -- timeout "$limit" "$LG" "$@" --out="$prefix" >"$prefix.log" 2>&1 &
    lg_pid=$!
}
finish_loadgen() { # out_prefix -> 0 ok/usable, 1 unusable
    local prefix=$1 rc=0
    wait "$lg_pid" || rc=$?
    lg_pid=""
    if [ "$rc" = 2 ] || [ "$rc" = 124 ] || [ ! -f "$prefix.json" ]; then
        loud "load generator failed (exit $rc) for $prefix; last lines of its output:"
        tail -15 "$prefix.log" >&2
        if grep -qE "unexpected argument|invalid value|unrecognized" "$prefix.log"; then
            loud "the load generator REJECTED A FLAG: the invocation in ${BASH_SOURCE[1]:-the script} needs updating to its current CLI"
        fi
        return 1
    fi
    if [ "$rc" = 1 ]; then
        loud "load generator reported errors or losses for $prefix (exit 1): see the table"
        run_warn+=("$(basename "$prefix")")
    fi
    return 0
}

# ---------------------------------------------------------------- timelines
# Samples a server's process tree (/proc/<pid>/stat and status of the server
# and every child: nginx workers, Pushpin's processes) every 0.5 s into a CSV
# while it runs, for the report's CPU and RSS timelines; the sampler stops by
# itself when the server exits, stop_sampler stops it by PID in any case.
# Sets sampler_pid.
start_sampler() { # pid out.csv phase
    $PY sample "$1" "$2" "$3" 0.5 </dev/null &
    sampler_pid=$!
}
stop_sampler() {
    stop_pid "${sampler_pid:-}"
    sampler_pid=""
}
