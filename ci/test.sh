#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it and CI runs it:
# formatting, lints, every Rust test (unit + end-to-end over real sockets,
# both I/O drivers; the cluster tests against a real nats-server, which
# ci/deps-nats.sh installs when missing), the end-to-end test with an
# independent Python WebSocket client and with headless Chromium against the
# release binary, the TypeScript SDK's tests (Node) and the web chat demo in
# headless Chromium, and a fuzz smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "nats-server for the cluster tests (installed from apt when missing)"
ci/deps-nats.sh

step "cargo test (unit and end-to-end)"
cargo test --workspace --locked

step "end-to-end with Python websockets against the release binary"
ci/e2e-python.sh

step "end-to-end with headless Chromium (permessage-deflate) against the release binary"
ci/e2e-browser.sh

step "TypeScript SDK: unit tests, and integration tests against the release binary"
ci/e2e-sdk.sh

step "the web chat demo in headless Chromium, on the SDK, against the release binary"
ci/e2e-web-chat.sh

step "tuning/test: check, apply and revert against a throwaway tree (the host is not touched)"
tuning/test

step "benches/compare: the report, the diff between runs, saturation and the exit status, on fixtures"
python3 benches/compare/test.py

step "fuzz smoke: every parser target for a few seconds (ci/fuzz.sh runs longer)"
ci/fuzz.sh 5
