#!/usr/bin/env bash
# Longer crash-recovery stress than the test suite runs: many SIGKILL rounds
# of the real binary while a publisher writes durable messages, then a check
# that every acknowledged message is present exactly once, in order, with
# contiguous offsets and the same epoch (engine/tests/it/crash.rs), plus the
# store's own kill -9 test. Bounded: ROUNDS rounds of at most 0.5 s each.
#
# usage: ci/crash-stress.sh [rounds=200] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGCAST_CRASH_ROUNDS=${1:-200}
[ -n "${2:-}" ] && export RINGCAST_CRASH_SEED=$2
cargo test --release -p ringcast-engine --test it -- --nocapture acknowledged_messages_survive_kill_9
cargo test --release -p ringcast-store -- --nocapture kill
