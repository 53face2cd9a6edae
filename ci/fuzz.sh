#!/usr/bin/env bash
# Fuzzes every parser that takes bytes from the network or the disk with
# libFuzzer (cargo-fuzz), on the stable toolchain: `RUSTC_BOOTSTRAP=1` lets
# it accept the sanitizer flags cargo-fuzz passes (no nightly toolchain can
# be downloaded on these machines).
#
# usage: ci/fuzz.sh [seconds-per-target=60] [target ...]
#
# Each target starts from its committed seed corpus (engine/fuzz/corpus/T);
# what it discovers goes to a scratch copy, so a run never rewrites the
# seeds. A crash stops the script with the input in
# engine/fuzz/artifacts/T/: turn it into a regression test, fix, and add
# the input to the seeds. Prints the executions per target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cd engine
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=""
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    cp -r "fuzz/corpus/$target/." "$scratch/$target/"
    log="$scratch/$target.log"
    if ! cargo fuzz run -O "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -artifact_prefix="fuzz/artifacts/$target/" \
        -print_final_stats=1 > "$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $target FAILED; the input is in engine/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    summary+="$target $runs"$'\n'
done
printf 'target executions\n%s' "$summary"
