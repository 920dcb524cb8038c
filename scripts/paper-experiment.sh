#!/usr/bin/env bash
# The 2017 study's experiment on full MNIST, and the fault runs of issue #3, with the settings whose
# results are kept in results/: MxLenet, 10 epochs, --batch-per-node 64 (MXNet dist_sync), seed 1.
# Every part continues where an interrupted run stopped: the sweep reuses node counts finished with
# the same settings, and a fault run that finished is not run again. Run it on a machine with
# nothing else to do: the epoch times are wall-clock figures.
# Usage: scripts/paper-experiment.sh [sweep|faults|all]   (default all; MNIST from --data or $MNIST_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${MNIST_DIR:-../shared/data/mnist}"
what="${1:-all}"
cargo build --release --bin pitrain >/dev/null
pitrain=target/release/pitrain
common=(--data "$data" --quiet)
# A starved but healthy simulated node must not be dropped on a small machine.
patient=(--step-deadline 600)

if [[ "$what" == sweep || "$what" == all ]]; then
    "$pitrain" experiment --nodes 1..10 "${common[@]}" "${patient[@]}" --out results/paper-sweep
fi
if [[ "$what" == faults || "$what" == all ]]; then
    fault_run() {
        local name="$1"
        shift
        if [[ -f "results/faults/$name/results.json" ]]; then
            echo "$name: finished earlier (delete results/faults/$name to run it again)"
            return
        fi
        "$pitrain" train --nodes 3 --batch-per-node 64 "${common[@]}" --out "results/faults/$name" "$@"
    }
    # Against the sweep's fault-free 3-node run (results/paper-sweep/nodes-3).
    fault_run drop5-reorder5 --drop 5 --reorder 5 "${patient[@]}"
    # Killed in epoch 5 of 10 (312 steps per epoch) and never back; a shorter deadline drops it.
    fault_run kill-node1-at-step1500 --kill 1@1500 --step-deadline 60
fi
