#!/usr/bin/env bash
# Cohort's row-by-row products against OpenBLAS's sgemm, one thread, at the workloads' shapes
# (Benchmarks/panel_products.c), built with the flags Package.swift gives Sources/CCohort.
# The CPU's own OpenBLAS kernels unless OPENBLAS_CORETYPE is set. Prints GFLOP/s, packing included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="$(mktemp /tmp/cohort-panel-products.XXXXXX)"
trap 'rm -f "$binary"' EXIT
clang -O3 -fno-math-errno -ffp-contract=off -fveclib=libmvec \
    -I"$root/Sources/CCohort" -I"$root/Sources/CCohort/include" \
    $(pkg-config --cflags ompi-c hdf5 2>/dev/null || echo -I/usr/lib/x86_64-linux-gnu/openmpi/include -I/usr/include/hdf5/serial) \
    -o "$binary" "$root/Benchmarks/panel_products.c" -lopenblas -lmvec -lm
"$binary"
