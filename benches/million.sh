#!/usr/bin/env bash
# 1,000,000 WebSocket connections on one host as one cluster (issue 14): the
# whole procedure for a 16-core, 128 GiB host, on top of benches/cluster.sh.
#
#   1. Host check: tuning/check --connections=$CONNECTIONS (saved beside the
#      results); the kernel settings the run needs are set for the run by
#      cluster.sh and restored when it exits (SYSCTLS below).
#   2. Open files: one engine process holds CONNECTIONS / NODES connections
#      (~17,900 with 56), under a 20,000-file cap if the host has one; the
#      soft limit is raised to the hard one first.
#   3. NODES engine processes (default 56, `server.shards = 1`, node ids
#      0..NODES-1, `cluster.stores = NODES`: every node owns one partition;
#      stores may be at most 64) on ONE WebSocket port and ONE API port, one
#      nats-server on loopback.
#   4. The load generator: ceil(CONNECTIONS / PER_WORKER) worker processes
#      (18,000 sockets at most each: 56 for a million) over one source address
#      per 7,000 connections (144 addresses in 127.0.1.0/24 for a million).
#   5. The scenarios, one after another, each bounded by `timeout`:
#      connect+hold of every connection (held per node, memory per connection:
#      engine RSS, kernel slab, load generator), fan-out to every connection
#      (fixed rate and closed loop: deliveries/s, p99, bytes on NATS per
#      publication), chat over every connection (acks/s, p99), same-node
#      against cross-node latency.
#   6. Results: docs/bench-runs/<date>-million/ (README.md table, summary.json,
#      the load generator's JSON and logs, host.txt with tuning/check).
#
# No single-process baseline here (one process cannot hold a million; the
# 2-core box's benches/cluster.sh run has the cluster-against-one-process
# ratios). Any cluster.sh variable can be overridden, e.g.
#   NODES=28 CONNECTIONS=500000 benches/million.sh
#   SCENARIOS="connect" benches/million.sh
# Loopback only; needs root for the sysctls (without it they are reported
# and the run goes on with the host's values).
set -euo pipefail
cd "$(dirname "$0")/.."

export NODES=${NODES:-56}
export CONNECTIONS=${CONNECTIONS:-1000000}
export PER_WORKER=${PER_WORKER:-18000}
export CONNECT_RATE=${CONNECT_RATE:-25000}
# Each worker holds HOLD_S after its own last connection: at 25,000/s the
# workers finish within seconds of each other; 30 s leaves all held at once.
export HOLD_S=${HOLD_S:-30}
export FANOUT_CONNECTIONS=${FANOUT_CONNECTIONS:-$CONNECTIONS}
# One publication reaches every subscriber: 1/s is 1,000,000 deliveries/s.
export FANOUT_RATE=${FANOUT_RATE:-1}
export FANOUT_SECONDS=${FANOUT_SECONDS:-20}
export FANOUT_PUBLICATIONS=${FANOUT_PUBLICATIONS:-60}
export FANOUT_WINDOW=${FANOUT_WINDOW:-4}
export CHAT_CONNECTIONS=${CHAT_CONNECTIONS:-$CONNECTIONS}
# 0.02 messages/s per user: 20,000 messages/s over the cluster.
export CHAT_RATE=${CHAT_RATE:-0.02}
export CHAT_SECONDS=${CHAT_SECONDS:-20}
export LAT_SUBSCRIBERS=${LAT_SUBSCRIBERS:-200}
export BASELINE=${BASELINE:-0}
export OUT=${OUT:-docs/bench-runs/$(date +%F)-million}
# tuning/check's settings for a million (docs/tuning.md): the port range for
# the load generator's source addresses, the SYN backlog behind the listen
# backlog, TCP memory for a million sockets at minimum buffers, conntrack.
export SYSCTLS=${SYSCTLS-net.ipv4.ip_local_port_range=1024 65535,net.ipv4.tcp_max_syn_backlog=4096,net.core.somaxconn=4096,net.ipv4.tcp_mem=2000000 3000000 4000000,net.netfilter.nf_conntrack_max=2000000,net.ipv4.tcp_tw_reuse=1}

hard=$(ulimit -Hn)
export NOFILE=${NOFILE:-$([ "$hard" = unlimited ] && echo 65536 || echo "$hard")}

per_node=$(( (CONNECTIONS + NODES - 1) / NODES ))
echo "million: $NODES nodes x ~$per_node connections, $(( (CONNECTIONS + PER_WORKER - 1) / PER_WORKER )) loadgen workers, open files $NOFILE, results in $OUT" >&2
if [ "$per_node" -gt $(( NOFILE - 500 )) ]; then
    echo "million: ~$per_node connections per node does not fit $NOFILE open files: raise NODES" >&2
    exit 2
fi
if [ "$NODES" -gt 64 ]; then
    echo "million: cluster.stores is at most 64: NODES <= 64 (or give the extra nodes no partition)" >&2
    exit 2
fi
exec benches/cluster.sh
