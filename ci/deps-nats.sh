#!/usr/bin/env bash
# nats-server for the cluster tests (docs/cluster.md): installs Debian's
# `nats-server` package when neither /usr/sbin/nats-server nor a
# `nats-server` on PATH exists, then prints the version the tests will run.
# The tests start their own servers on random loopback ports; the package's
# systemd unit is not used (and does not start in a container).
#
# Fails, rather than letting the cluster tests skip, when nats-server is
# missing and apt-get is not there to install it.
set -euo pipefail

nats_server=$(command -v nats-server || true)
[ -n "$nats_server" ] || [ ! -x /usr/sbin/nats-server ] || nats_server=/usr/sbin/nats-server
if [ -z "$nats_server" ]; then
    if ! command -v apt-get >/dev/null; then
        echo "error: the cluster tests need nats-server, and apt-get is not here to install it" >&2
        exit 1
    fi
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
    nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
fi
# Expect "nats-server: v2.9.10" on Debian bookworm.
"$nats_server" --version
