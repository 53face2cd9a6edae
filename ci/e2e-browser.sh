#!/usr/bin/env bash
# A real browser against the release binary: headless Chromium connects with
# its default permessage-deflate offer, sends compressed, and receives a
# compressed push (engine/tests/e2e/test_browser_deflate.py). Installs
# Debian's `chromium` when it is missing; skips, loudly, only where apt-get
# is not there to install it. Run after ci/e2e-python.sh (its venv and
# release build).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
venv=$target_dir/py-e2e

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    if ! command -v apt-get >/dev/null; then
        printf '\n!!!!!!!! SKIPPED: the browser test needs chromium and apt-get is not here to install it !!!!!!!!\n\n'
        exit 0
    fi
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    chromium=$(command -v chromium)
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'websockets>=13,<16' 'pyjwt>=2.8,<3'
fi
cargo release-bins
"$venv/bin/python" engine/tests/e2e/test_browser_deflate.py "$target_dir/release/ringcast" "$chromium"
