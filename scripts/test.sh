#!/usr/bin/env bash
# Runs every test of the workspace:
#   1. the host crates (kernels, protocol, pitrain), with MNIST from $MNIST_DIR or the `pitrain data fetch`
#      cache; this includes booting the firmware in QEMU raspi3b (qemu-system-aarch64 10);
#   2. the kernels' and the protocol's tests again on aarch64 under qemu-user, when the cross linker and
#      qemu-aarch64 are installed (.ci/run installs them): NEON paths and bit-identical weights on the
#      Pi's CPU;
#   3. the firmware build for the board (aarch64-unknown-none), with the protocol crate it will use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${MNIST_DIR:-}" && -d ../shared/data/mnist ]]; then
    export MNIST_DIR="$PWD/../shared/data/mnist"
fi

# Every cargo test's output is kept to add up the results at the end.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_tests() {
    cargo test "$@" 2>&1 | tee -a "$log"
}

echo "== host tests"
run_tests --workspace --exclude firmware

echo "== kernels and protocol on aarch64 (qemu-user)"
if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
    run_tests -p kernels -p protocol --target aarch64-unknown-linux-gnu
elif [[ "${CI:-}" == "true" ]]; then
    echo "CI must run the aarch64 tests: qemu-aarch64 or aarch64-linux-gnu-gcc missing" >&2
    exit 1
else
    echo "skipped: install qemu-user and gcc-aarch64-linux-gnu to run them (.ci/run does)"
fi

echo "== kernels' profile counters (feature profile, which the firmware benchmark builds)"
run_tests -p kernels --features profile --lib profile

echo "== benchmarks compile (they measure, so they are run by hand: see README)"
cargo check -p kernels -p host-tools --benches

echo "== firmware build (aarch64-unknown-none), with the no_std crates it uses"
cargo build -p firmware -p protocol -p usb -p netstack --target aarch64-unknown-none --release
cargo check -p firmware --target aarch64-unknown-none --release --features profile

# One closing line for the whole run.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
