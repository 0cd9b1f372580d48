#!/usr/bin/env bash
# Cohort beside PyTorch on the reference workloads, in one run: each round's figures are appended to
# Benchmarks/results/records.jsonl, Benchmarks/RESULTS.md is generated from them (results.py), and
# the round's full reading goes to Benchmarks/results/DATE-COMMIT-{W1-W3,sequence}.md.
#
#   Benchmarks/run.sh [--kernels cpu|environment|both] [--runs N] [--workloads W1,W2,W3,W5,W6,W7,W9] [--w3-steps S]
#                     [--sequence-steps S] [--full] [--no-pytorch]
#
# --kernels: which OpenBLAS kernels Cohort runs (PyTorch's oneDNN picks its own either way).
#   cpu (default): the CPU's own, as on a user's machine: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
#     unset for the run.
#   environment: as this environment sets them (some pin the Haswell kernels); when it pins a
#     family, the round's reports end in -pinned.md; the records name the kernels either way.
#   both: the two, one after the other. Every table names the kernel family and the CPU.
#
# W5 and W6 (the sequence workloads) are measured by Benchmarks/collect_sequence.py into
# Benchmarks/results/DATE-COMMIT-sequence.md: tokens/s over steps 11 to S (default 200) per layout, MFU,
# start-up, memory, generation tokens/s; --full adds the whole 2-rank recipes' validation losses.
#
# W9 (fine-tuning all-MiniLM-L6-v2, launch/prepare-data.sh fortunes) is measured by
# Benchmarks/collect_w9.py: test accuracy, training samples/s, peak memory per rank and start-up
# of Cohort and of PyTorch + transformers on 2 ranks, the recipe's 3 epochs (COHORT_BENCH_W9_EPOCHS
# for fewer), as records appended to Benchmarks/results/records.jsonl and Benchmarks/W9.md.
#
# Measures, for W1, W2, W3 at 1 rank × 1 thread, 1 rank × 2 threads and 2 ranks × 1 thread:
# training samples/s over a full epoch (median of --runs runs; W3 over its first S steps when
# --w3-steps is given, said in the table), process start to first step, peak resident memory;
# the GEMM peak of this machine (model-FLOP utilisation is taken against it); the gradient
# all-reduce per step against a raw MPI_Allreduce of the same bytes; the loader's wait; time
# to 0.89 test accuracy on W2 with 2 ranks; for W2 and W3, two unsynchronised 1-rank processes
# pinned one to each core, which split the 1 → 2 rank scaling into the cost of sharing the
# machine and the cost of running in step. PyTorch runs from a virtual environment under
# Benchmarks/.venv, created from PyPI when missing; without it the peer columns say so.
# Benchmarks are not tests: run them on an otherwise idle machine.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
runs=3; workloads="W1,W2,W3"; w3_steps=0; pytorch=1; sequence_steps=200; full=0; kernels=cpu
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --kernels) kernels="$2"; shift 2 ;;
        --workloads) workloads="$2"; shift 2 ;;
        --w3-steps) w3_steps="$2"; shift 2 ;;
        --sequence-steps) sequence_steps="$2"; shift 2 ;;
        --full) full=1; shift ;;
        --no-pytorch) pytorch=0; shift ;;
        *) echo "usage: $0 [--kernels cpu|environment|both] [--runs N] [--workloads W1,W2,W3,W5,W6,W7,W9] [--w3-steps S] [--sequence-steps S] [--full] [--no-pytorch]" >&2; exit 64 ;;
    esac
done
case "$kernels" in cpu|environment|both) ;; *) echo "benchmarks: --kernels takes cpu, environment or both, not '$kernels'" >&2; exit 64 ;; esac
"$root/launch/setup.sh" release >/dev/null || exit 1
"$root/launch/prepare-data.sh" >/dev/null || exit 1

python=""
if [ "$pytorch" -eq 1 ]; then
    if [ ! -x "$here/.venv/bin/python" ] || ! "$here/.venv/bin/python" -c "import torch, h5py" 2>/dev/null; then
        echo "benchmarks: installing PyTorch from PyPI into Benchmarks/.venv (once)"
        python3 -m venv "$here/.venv" && "$here/.venv/bin/pip" install -q torch h5py numpy pyyaml || true
    fi
    if "$here/.venv/bin/python" -c "import torch, h5py" 2>/dev/null; then
        python="$here/.venv/bin/python"
    else
        echo "benchmarks: PyTorch could not be installed; the peer columns are skipped"
    fi
fi
export COHORT_BENCH_ROOT="$root" COHORT_BENCH_PYTHON="$python" COHORT_BENCH_RUNS="$runs" \
       COHORT_BENCH_WORKLOADS="$workloads" COHORT_BENCH_W3_STEPS="$w3_steps" \
       COHORT_BENCH_SEQUENCE_STEPS="$sequence_steps" COHORT_BENCH_FULL="$full"
collectors() {
    local status=0
    if echo ",$workloads," | grep -qE ",W[123],"; then
        COHORT_BENCH_WORKLOADS="$(echo "$workloads" | tr ',' '\n' | grep -E '^W[123]$' | paste -sd,)" python3 "$here/collect.py" || status=$?
    fi
    if echo ",$workloads," | grep -qE ",W[567],"; then
        python3 "$here/collect_sequence.py" || status=$?
    fi
    if echo ",$workloads," | grep -qE ",W9,"; then
        [ -d "$root/data/models/all-MiniLM-L6-v2" ] || "$root/launch/prepare-data.sh" fortunes >/dev/null || return 1
        python3 "$here/collect_w9.py" || status=$?
    fi
    return $status
}
status=0
if [ "$kernels" = cpu ] || [ "$kernels" = both ]; then
    echo "benchmarks: the CPU's own OpenBLAS kernels (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)"
    (unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; COHORT_BENCH_OUTPUT_SUFFIX="" collectors) || status=$?
fi
if [ "$kernels" = environment ] || [ "$kernels" = both ]; then
    if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -z "${OPENBLAS_L2_SIZE:-}" ]; then
        echo "benchmarks: this environment pins no OpenBLAS kernels: its run is the CPU's own"
        [ "$kernels" = environment ] && { COHORT_BENCH_OUTPUT_SUFFIX="" collectors || status=$?; }
    else
        echo "benchmarks: the environment's OpenBLAS kernels (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
        COHORT_BENCH_OUTPUT_SUFFIX="-pinned" collectors || status=$?
    fi
fi
exit $status
