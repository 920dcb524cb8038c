#!/usr/bin/env bash
# Checks that global-batch training gives the same weights, bit for bit, in one process and on any
# number of simulated nodes: trains each configuration and compares the SHA-256 of weights.safetensors.
# Usage: scripts/bit-identity.sh [pitrain train options...]   e.g. --model lenet5 --epochs 1
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/bit-identity}"
nodes="${NODES:-1 2 3 4 10}"
cargo build --release --bin pitrain >/dev/null
pitrain=target/release/pitrain
rm -rf "$out"
"$pitrain" train --local --quiet --out "$out/local" "$@" | grep '^epoch'
for n in $nodes; do
    "$pitrain" train --nodes "$n" --quiet --out "$out/nodes-$n" "$@" | grep '^epoch'
done
echo "SHA-256 of the final weights:"
sha256sum "$out"/*/weights.safetensors
if [[ "$(sha256sum "$out"/*/weights.safetensors | awk '{print $1}' | sort -u | wc -l)" == 1 ]]; then
    echo "identical"
else
    echo "DIFFERENT" >&2
    exit 1
fi
