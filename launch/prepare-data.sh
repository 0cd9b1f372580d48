#!/usr/bin/env bash
# Prepares every dataset the configs under configs/ use (skips what is already there):
# Fashion-MNIST from Debian's dataset-fashion-mnist, its sneaker-vs-ankle-boot subset and its
# other eight classes, and the
# King James Bible character corpus from Debian's bible-kjv (data/kjv/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cohort="${COHORT_BIN:-.build/release/cohort}"
if [ ! -f data/fashion-mnist/train.h5 ] || [ ! -f data/fashion-mnist/test.h5 ]; then
    "$cohort" prepare fashion-mnist --out data/fashion-mnist
fi
for split in train test; do
    [ -f "data/sneaker-boot/$split.h5" ] || "$cohort" prepare subset --source "data/fashion-mnist/$split.h5" --classes 7,9 --out "data/sneaker-boot/$split.h5"
    # The eight other classes, for the pre-training half of the fine-tuning pair.
    [ -f "data/fashion-mnist-8/$split.h5" ] || "$cohort" prepare subset --source "data/fashion-mnist/$split.h5" --classes 0,1,2,3,4,5,6,8 --out "data/fashion-mnist-8/$split.h5"
done
# Every verse, one per line, with its leading reference ("Ge1:1 ") removed: 4,137,850
# characters, 63 distinct (../WORKLOADS: W5, W6).
if command -v bible >/dev/null && { [ ! -f data/kjv/train.h5 ] || [ ! -f data/kjv/val.h5 ]; }; then
    mkdir -p data/kjv
    bible -f gen1:1-rev22:21 | sed -E 's/^[^ ]+ //' > data/kjv/kjv.txt.tmp
    mv data/kjv/kjv.txt.tmp data/kjv/kjv.txt
    "$cohort" prepare text --input data/kjv/kjv.txt --out data/kjv --tokenizer chars --validation 0.1
fi
# Byte tokens of the same text, for configs/gpt-100m.yaml.
if [ -f data/kjv/kjv.txt ] && { [ ! -f data/kjv-bytes/train.h5 ] || [ ! -f data/kjv-bytes/val.h5 ]; }; then
    "$cohort" prepare text --input data/kjv/kjv.txt --out data/kjv-bytes --tokenizer bytes --validation 0.1
fi
