#!/usr/bin/env bash
# Starts the release binary on loopback with a throwaway config and drives it
# with the Python `websockets` library (an independent client
# implementation), and over TLS with Python's `ssl` (OpenSSL). Installs what
# it needs into a venv under target/. The connect proxy test runs its own
# backend (a stdlib HTTP server) and checks that a denial's close code and
# reason are readable by this independent client.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
venv=$target_dir/py-e2e
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'websockets>=13,<16' 'pyjwt>=2.8,<3' 'cryptography>=42,<47'

cargo release-bins
"$venv/bin/python" engine/tests/e2e/test_python_client.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_python_deflate.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_readme_demo.py "$target_dir/release"
"$venv/bin/python" engine/tests/e2e/test_tls.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_integration_guide.py "$target_dir/release"
"$venv/bin/python" engine/tests/e2e/test_connect_proxy.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_im_dm.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_im_signals.py "$target_dir/release/ringcast"
"$venv/bin/python" engine/tests/e2e/test_im_groups.py "$target_dir/release/ringcast"
