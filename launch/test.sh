#!/usr/bin/env bash
# Set-up plus the full test suite: unit tests of the math, real HDF5 files, real OpenBLAS, and
# multi-rank runs under mpirun. Works from any directory; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh" debug
cd "$root"
# Swift Testing is not used here; XCTest reports the count.
swift test --disable-swift-testing 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]|^Test Case .* (started|passed)'
status="${PIPESTATUS[0]}"
[ "$status" = 0 ] || exit "$status"
# Every clone of the C kernels (AVX-512, AVX2, baseline) rounds alike.
"$root/launch/check-clones.sh"
# Every shipped model exported to ONNX and run in onnxruntime against cohort itself.
"$root/launch/check-export.sh"
