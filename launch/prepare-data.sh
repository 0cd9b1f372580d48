#!/usr/bin/env bash
# Prepares every dataset the configs under configs/ use (skips what is already there):
# Fashion-MNIST from Debian's dataset-fashion-mnist, and its sneaker-vs-ankle-boot subset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cohort="${COHORT_BIN:-.build/release/cohort}"
if [ ! -f data/fashion-mnist/train.h5 ] || [ ! -f data/fashion-mnist/test.h5 ]; then
    "$cohort" prepare fashion-mnist --out data/fashion-mnist
fi
for split in train test; do
    [ -f "data/sneaker-boot/$split.h5" ] || "$cohort" prepare subset --source "data/fashion-mnist/$split.h5" --classes 7,9 --out "data/sneaker-boot/$split.h5"
done
