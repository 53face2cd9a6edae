#!/usr/bin/env bash
# The demo web chat (examples/web-chat) end to end: the release engine with
# IM on, the demo server, and headless Chromium driven by puppeteer-core,
# two users chatting through the UI (examples/web-chat/test/). Installs
# what is missing: Debian's chromium (fails where apt-get is not there to
# install it), the npm packages of the demo and of the SDK; builds the SDK,
# and the engine when RINGCAST_BIN is unset and no release binary exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
    if ! command -v apt-get >/dev/null; then
        echo "the web chat test needs chromium (Debian's package), and apt-get is not here to install it" >&2
        exit 1
    fi
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    chromium=$(command -v chromium)
fi

# npm ci when node_modules is missing or older than the lockfile, so that a
# developer's repeated runs do not reinstall every time.
npm_ci() {
    if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
        (cd "$1" && npm ci --no-audit --no-fund)
    fi
}
npm_ci sdk/typescript
(cd sdk/typescript && npm run build)
npm_ci examples/web-chat

if [ -n "${RINGCAST_BIN:-}" ]; then
    bin=$RINGCAST_BIN
else
    bin=${CARGO_TARGET_DIR:-target}/release/ringcast
    [ -x "$bin" ] || cargo release-bins
fi
case $bin in /*) ;; *) bin=$root/$bin ;; esac

cd examples/web-chat
# The test bounds each step itself; this bounds the whole run, browser
# start included, should something hang outside a step.
RINGCAST_BIN=$bin CHROMIUM=$chromium timeout --kill-after=10 300 node --test --test-reporter=spec test/web-chat.test.mjs
