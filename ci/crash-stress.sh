#!/usr/bin/env bash
# Longer crash-recovery stress than the test suite runs: many SIGKILL rounds
# of the real binary, restarted on the same data directory, then a check that
# every acknowledged message is present exactly once, at its offset, with
# offsets contiguous from 1 and the same epoch (engine/tests/it/crash.rs).
# Two writers: `acknowledged_messages_survive_kill_9_exactly_once_in_order`
# publishes to one inbox through the HTTP API, one request at a time;
# `acknowledged_dms_survive_kill_9_under_load` has 16 WebSocket clients send
# each other DMs with 8 `send` commands in flight each (new users every 4
# rounds, so no inbox reaches the retention count);
# `acknowledged_im_messages_survive_kill_9_with_exact_unread_counts` has 6
# pairs of users send each other IM `msg_send`s and `read`s (8 in flight
# each) and checks each conversation gap-free and each unread count against
# the stream and the read position. Plus the store's own kill -9 test. Bounded: each test runs ROUNDS rounds of at most 0.5 s of load.
#
# usage: ci/crash-stress.sh [rounds=200] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGCAST_CRASH_ROUNDS=${1:-200}
[ -n "${2:-}" ] && export RINGCAST_CRASH_SEED=$2
# Both engine tests: their names share the prefix `acknowledged_`.
cargo test --release -p ringcast-engine --test it -- --nocapture --test-threads=1 crash::acknowledged_
cargo test --release -p ringcast-engine --test it -- --nocapture --test-threads=1 crash_im::acknowledged_
cargo test --release -p ringcast-store -- --nocapture kill
