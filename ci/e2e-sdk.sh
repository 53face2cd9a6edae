#!/usr/bin/env bash
# Builds the TypeScript client SDK (sdk/typescript), runs its unit tests and
# its integration tests against the real engine binary (started by the tests
# on loopback ports), and prints the size of the SDK as a browser gets it:
# dist/index.js bundled, minified and gzipped.
#
# RINGCAST_BIN names the engine binary; when unset, target/release/ringcast,
# built here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${RINGCAST_BIN:-}" ]; then
    RINGCAST_BIN=target/release/ringcast
    if [ ! -x "$RINGCAST_BIN" ]; then
        cargo release-bins
    fi
fi
RINGCAST_BIN=$(realpath "$RINGCAST_BIN")
export RINGCAST_BIN

cd sdk/typescript
npm ci --no-audit --no-fund
npm test
bytes=$(npx esbuild dist/index.js --bundle --minify --format=esm --log-level=warning | gzip -9 | wc -c)
echo "sdk size: dist/index.js bundled + minified + gzip -9 = ${bytes} bytes"
