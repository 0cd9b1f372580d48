#!/usr/bin/env bash
# Two cohort binaries on one workload, alternating, so both see the same machine noise.
#
#   Benchmarks/compare.sh [--rounds N] BINARY_A BINARY_B CONFIG STEPS
#
# Each round trains CONFIG for STEPS steps with 1 rank × 1 BLAS thread under each binary in turn
# and prints samples/s (over those steps) and peak memory. Build the older binary from a
# worktree, e.g. `git worktree add /tmp/old COMMIT && (cd /tmp/old && swift build -c release)`.
set -euo pipefail
rounds=3
if [ "${1:-}" = "--rounds" ]; then rounds="$2"; shift 2; fi
[ $# -eq 4 ] || { echo "usage: $0 [--rounds N] BINARY_A BINARY_B CONFIG STEPS" >&2; exit 64; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
a="$1"; b="$2"; config="$3"; steps="$4"
cd "$root"
for round in $(seq "$rounds"); do
    for binary in "$a" "$b"; do
        out=$(OPENBLAS_NUM_THREADS=1 COHORT_PROGRESS=lines "$binary" train "$config" --set training.epochs=1 \
              --set training.max_steps="$steps" --set data.test=null --set run_dir=/tmp/cohort-compare \
              --set tensorboard=false --set checkpoint.every_epochs=0 --log-every "$steps" 2>&1)
        rate=$(echo "$out" | grep -o 'samples/s [0-9]*' | tail -1)
        memory=$(echo "$out" | grep -o 'memory per rank: [0-9]* MB' || true)
        echo "round $round  $binary  ${rate:-failed}  $memory"
    done
done
