#!/usr/bin/env bash
# The fixed-point MxLenet training step against PyTorch f32, both on one thread, in one run.
#
#   scripts/bench-vs-pytorch.sh [ROUNDS]      (default 3 rounds)
#
# Installs PyTorch (CPU use; PyPI's wheel) into a virtual environment outside the repository
# ($PITRAIN_TORCH_VENV, default ~/.cache/pitrain/torch-venv; about 5.5 GB with its CUDA
# dependencies), then alternates: the PyTorch step (scripts/pytorch_step.py: batch 64, SGD with
# momentum 0.9, weight decay 1e-4, Xavier init, torch.set_num_threads(1)) and
# `cargo bench -p kernels` (train_step/mxlenet/fixed, one thread) at every vector level this CPU
# has, forced with PITRAIN_SIMD. Prints every rate, and per level the median ratio to PyTorch.
# Run by hand; CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
venv="${PITRAIN_TORCH_VENV:-$HOME/.cache/pitrain/torch-venv}"

if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy
fi

levels=(scalar sse2)
grep -qw avx2 /proc/cpuinfo && levels+=(avx2)
grep -qw avx512bw /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo && levels+=(avx512)
[[ "$(uname -m)" == aarch64 ]] && levels=(scalar neon)

cargo bench -p kernels --bench train_step --no-run --quiet 2>/dev/null

# Images per second of the fixed-point step: the middle of criterion's throughput line.
fixed_rate() {
    PITRAIN_SIMD="$1" cargo bench -p kernels --bench train_step --quiet -- 'train_step/mxlenet/fixed' 2>/dev/null |
        awk '/thrpt:/ { v = $(NF-3); u = $(NF-2); gsub(/\[/, "", v);
                        f = (u ~ /^K/) ? 1000 : (u ~ /^M/) ? 1e6 : 1; printf "%.0f\n", v * f; exit }'
}

declare -A ratios
torch_rates=()
for round in $(seq "$rounds"); do
    torch=$("$venv/bin/python" scripts/pytorch_step.py | awk '{ print $2 }')
    torch_rates+=("$torch")
    line="round $round: pytorch f32 $torch img/s"
    for level in "${levels[@]}"; do
        rate=$(fixed_rate "$level")
        ratio=$(awk -v a="$rate" -v b="$torch" 'BEGIN { printf "%.2f", a / b }')
        ratios[$level]+="$ratio "
        line+=", fixed $level $rate img/s (${ratio}x)"
    done
    echo "$line"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "pytorch f32 median: $(printf '%s ' "${torch_rates[@]}" | median) img/s"
for level in "${levels[@]}"; do
    echo "fixed point at $level: median ratio to pytorch $(echo "${ratios[$level]}" | median)x"
done
