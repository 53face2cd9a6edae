#!/usr/bin/env bash
# The web chat demo in one command, from anywhere in the repository:
# builds what is missing (the engine's release binary, the SDK), starts the
# engine on the quick-start config (ringcast.toml) with the IM layer on,
# then the demo server on http://127.0.0.1:3000/; Ctrl-C stops both (by
# PID). Environment: as server.mjs reads it (PORT, HOST, ...), plus
# RINGCAST_BIN for an engine binary built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${RINGCAST_BIN:-${CARGO_TARGET_DIR:-target}/release/ringcast}
[ -x "$bin" ] || cargo release-bins
if [ ! -f sdk/typescript/dist/index.js ]; then
    (cd sdk/typescript && npm ci --no-audit --no-fund && npm run build)
fi

engine_pid=""
cleanup() {
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" --config=ringcast.toml --im-enabled=true &
engine_pid=$!
# The API answers once the engine listens (the quick-start's 127.0.0.1:8081).
for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then
        break
    fi
    kill -0 "$engine_pid" 2>/dev/null || { echo "the engine exited; see its log above" >&2; exit 1; }
    sleep 0.1
done
node examples/web-chat/server.mjs
