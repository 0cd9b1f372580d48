#!/usr/bin/env bash
# The export check: every shipped model config, trained a few steps on generated data of its
# shapes, exported to ONNX, run in onnxruntime and compared with cohort itself: image, vector
# and binary models against `cohort predict` (probabilities within 1e-5), language models
# against `cohort evaluate`'s validation loss (within 1e-5). Where PyTorch is installed
# (COHORT_TORCH_PYTHON, or Benchmarks/.venv), the safetensors export of each is loaded with
# load_state_dict(strict=True) and checked the same way. onnxruntime, numpy and h5py come
# from a throw-away virtual environment under /tmp (installed from PyPI when missing; said so);
# without Python or PyPI the check says it was skipped. Run by launch/test.sh after the tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cohort="${COHORT_BIN:-$root/.build/debug/cohort}"
work="$(mktemp -d /tmp/cohort-export-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT

python="${COHORT_CHECK_PYTHON:-}"
if [ -z "$python" ]; then
    if ! command -v python3 >/dev/null || ! python3 -m venv "$work/venv" >/dev/null 2>&1; then
        echo "export check: SKIPPED (no python3 with venv)"; exit 0
    fi
    python="$work/venv/bin/python"
    echo "export check: installing numpy, h5py and onnxruntime from PyPI into a throw-away venv ($work/venv)"
    if ! "$python" -m pip install -q numpy h5py onnxruntime >"$work/pip.log" 2>&1; then
        echo "export check: SKIPPED (pip could not install onnxruntime: $(tail -1 "$work/pip.log"))"; exit 0
    fi
fi

mpirun_args=(-np 1 --mca odls_base_sigkill_timeout 0)
[ "$(id -u)" = 0 ] && mpirun_args+=(--allow-run-as-root)
train() { OPENBLAS_NUM_THREADS=1 mpirun "${mpirun_args[@]}" "$cohort" train "$@" --quiet >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }; }

# Data of the shipped configs' shapes: 28×28 images (10 and 2 classes), 30- and 10-column
# tables, and text over 63 characters.
"$cohort" prepare synthetic --rows 256 --classes 10 --out "$work/images.h5" >/dev/null
"$cohort" prepare synthetic --rows 256 --classes 2 --seed 1 --out "$work/binary.h5" >/dev/null
"$python" - "$work" <<'PY'
import random, sys
work = sys.argv[1]
random.seed(0)
for name, columns, regression in [("table30", 30, False), ("table10", 10, True)]:
    with open(f"{work}/{name}.csv", "w") as f:
        f.write(",".join(f"c{i}" for i in range(columns)) + ",y\n")
        for _ in range(200):
            x = [random.gauss(0, 1) for _ in range(columns)]
            y = sum(x[:3]) * 10 + 100 if regression else int(x[0] + x[1] > 0)
            f.write(",".join(f"{v:.5f}" for v in x) + f",{y}\n")
alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
with open(f"{work}/text.txt", "w") as f:
    f.write(alphabet + "".join(random.choice(alphabet) for _ in range(40000)))
PY
"$cohort" prepare csv --input "$work/table30.csv" --label y --out "$work/table30" >/dev/null
"$cohort" prepare csv --input "$work/table10.csv" --label y --regression --out "$work/table10" >/dev/null
"$cohort" prepare text --input "$work/text.txt" --out "$work/text" >/dev/null

torch="${COHORT_TORCH_PYTHON:-$root/Benchmarks/.venv/bin/python}"
if [ -x "$torch" ] && "$torch" -c "import torch, yaml, h5py" 2>/dev/null; then
    echo "export check: PyTorch found ($torch): safetensors files are loaded strictly and compared too"
else
    torch=""
    echo "export check: no PyTorch (COHORT_TORCH_PYTHON or Benchmarks/.venv): the safetensors strict-load check is skipped"
fi

failures=0
check_rows() {  # config, train file, test file
    local name; name="$(basename "$1" .yaml)"
    train "$root/configs/$1" --set "data.train=$2" --set "data.test=$3" --set training.max_steps=3 --set training.epochs=1 \
        --set "run_dir=$work/runs/$name" --set tensorboard=false
    local checkpoint; checkpoint="$(ls "$work/runs/$name/checkpoints/"*.h5 | tail -1)"
    "$cohort" export "$checkpoint" --format onnx --out "$work/$name.onnx" >/dev/null
    "$cohort" predict "$checkpoint" --data "$3" --out "$work/$name-predictions.h5" >/dev/null
    local loss; loss="$(sed -n 's/^loss: *\([a-z_]*\).*/\1/p' "$root/configs/$1")"
    "$python" "$root/Benchmarks/check_onnx.py" "$work/$name.onnx" "$3" "$work/$name-predictions.h5" "${loss:-softmax_cross_entropy}" || failures=$((failures + 1))
    if [ -n "$torch" ] && [ "$loss" != mean_squared_error ]; then
        "$cohort" export "$checkpoint" --format safetensors --out "$work/$name.safetensors" >/dev/null
        "$torch" "$root/Examples/pytorch/check_export.py" "$work/$name.safetensors" "$3" "$work/$name-predictions.h5" | tail -1 || failures=$((failures + 1))
    fi
}
check_tokens() {  # config
    local name; name="$(basename "$1" .yaml)"
    train "$root/configs/$1" --set "data.train=$work/text/train.h5" --set "data.test=$work/text/val.h5" --set training.max_steps=3 \
        --set "run_dir=$work/runs/$name" --set tensorboard=false
    local checkpoint; checkpoint="$(ls "$work/runs/$name/checkpoints/"*.h5 | tail -1)"
    "$cohort" export "$checkpoint" --format onnx --out "$work/$name.onnx" >/dev/null
    local expected; expected="$("$cohort" evaluate "$checkpoint" | sed -n 's/^loss \([0-9.]*\) nats.*/\1/p')"
    "$python" "$root/Benchmarks/check_onnx_lm.py" "$work/$name.onnx" "$work/text/val.h5" "$expected" || failures=$((failures + 1))
    if [ -n "$torch" ]; then
        "$cohort" export "$checkpoint" --format safetensors --out "$work/$name.safetensors" >/dev/null
        "$torch" "$root/Examples/pytorch/check_export.py" "$work/$name.safetensors" "$work/text/val.h5" "$expected" || failures=$((failures + 1))
    fi
}
for config in fashion-mnist-mlp.yaml fashion-mnist-cnn.yaml fashion-mnist-convnet.yaml fashion-mnist-resnet.yaml; do
    check_rows "$config" "$work/images.h5" "$work/images.h5"
done
check_rows fashion-mnist-binary.yaml "$work/binary.h5" "$work/binary.h5"
check_rows breast-cancer.yaml "$work/table30/train.h5" "$work/table30/val.h5"
check_rows diabetes-regression.yaml "$work/table10/train.h5" "$work/table10/val.h5"
check_tokens kjv-char-lstm.yaml
check_tokens kjv-char-gpt.yaml
# A published GPT-2 (the test fixture transformers wrote) fine-tuned 20 steps on byte tokens:
# its ONNX graph in onnxruntime, and where transformers is installed its --format huggingface
# directory loaded by from_pretrained with no missing or unexpected key and the same loss.
"$cohort" prepare text --input "$work/text.txt" --out "$work/bytes" --tokenizer bytes >/dev/null
cat > "$work/gpt2.yaml" <<YAML
name: gpt2-tiny-finetune
seed: 1
run_dir: $work/runs/gpt2
tensorboard: false
data: {train: $work/bytes/train.h5, test: $work/bytes/val.h5, window: 16}
model:
  init_from: {huggingface: $root/Tests/Fixtures/huggingface/gpt2-tiny}
optimizer: {type: adamw, learning_rate: 0.001}
training: {epochs: 1, batch_size: 4, max_steps: 20}
YAML
train "$work/gpt2.yaml"
gpt2_checkpoint="$(ls "$work/runs/gpt2/checkpoints/"*.h5 | tail -1)"
gpt2_loss="$("$cohort" evaluate "$gpt2_checkpoint" | sed -n 's/^loss \([0-9.]*\) nats.*/\1/p')"
"$cohort" export "$gpt2_checkpoint" --format onnx --out "$work/gpt2.onnx" >/dev/null
"$python" "$root/Benchmarks/check_onnx_lm.py" "$work/gpt2.onnx" "$work/bytes/val.h5" "$gpt2_loss" || failures=$((failures + 1))
if [ -n "$torch" ] && "$torch" -c "import transformers" 2>/dev/null; then
    "$cohort" export "$gpt2_checkpoint" --format huggingface --out "$work/gpt2-hf" >/dev/null
    "$torch" "$root/Benchmarks/check_huggingface_lm.py" "$work/gpt2-hf" "$work/bytes/val.h5" 16 "$gpt2_loss" || failures=$((failures + 1))
else
    echo "export check: no transformers beside PyTorch: the --format huggingface load is skipped"
fi
# A published BERT encoder (the test fixture) with a classification head, fine-tuned 3 steps on
# labelled texts: its ONNX graph (padding mask from the ids, mean pooling) against cohort predict.
printf '%s\n' '{"text": "in the beginning god created the heaven", "label": "a"}' '{"text": "and god said let there be light", "label": "b"}' \
    '{"text": "jesus wept", "label": "c"}' '{"text": "and the earth was without form", "label": "a"}' > "$work/texts.jsonl"
for _ in 1 2 3; do cat "$work/texts.jsonl"; done > "$work/texts12.jsonl"
"$cohort" prepare text-classification --input "$work/texts12.jsonl" --text text --label label \
    --tokenizer "$root/Tests/Fixtures/huggingface/bert-tiny-tokenizer.json" --max-length 16 --out "$work/texts.h5" >/dev/null
cat > "$work/bert.yaml" <<YAML
name: bert-tiny-topics
run_dir: $work/runs/bert
tensorboard: false
data: {train: $work/texts.h5, features: ids, labels: labels, normalize: none}
model:
  init_from: {huggingface: $root/Tests/Fixtures/huggingface/bert-tiny}
  add_layers: [{type: sequence_pool, mode: mean}, {type: dense, units: 3}]
optimizer: {type: adamw, learning_rate: 0.001}
training: {epochs: 1, batch_size: 4, max_steps: 3}
YAML
train "$work/bert.yaml"
bert_checkpoint="$(ls "$work/runs/bert/checkpoints/"*.h5 | tail -1)"
"$cohort" export "$bert_checkpoint" --format onnx --out "$work/bert.onnx" >/dev/null
"$cohort" predict "$bert_checkpoint" --data "$work/texts.h5" --out "$work/bert-predictions.h5" >/dev/null
"$python" "$root/Benchmarks/check_onnx.py" "$work/bert.onnx" "$work/texts.h5" "$work/bert-predictions.h5" || failures=$((failures + 1))
# The same encoder with its tokenizer beside it (so [SEP] ends segment A) on sentence pairs:
# token type 1 after the first [SEP], computed in the graph from the ids.
mkdir -p "$work/bert-pairs-model"
cp "$root/Tests/Fixtures/huggingface/bert-tiny/"* "$work/bert-pairs-model/"
cp "$root/Tests/Fixtures/huggingface/bert-tiny-tokenizer.json" "$work/bert-pairs-model/tokenizer.json"
printf '%s\n' '{"a": "in the beginning", "b": "god created the heaven", "label": "x"}' '{"a": "jesus wept", "b": "and god said", "label": "y"}' \
    '{"a": "let there be light", "b": "and there was light", "label": "x"}' '{"a": "the earth", "b": "was without form", "label": "y"}' > "$work/pairs.jsonl"
"$cohort" prepare text-classification --input "$work/pairs.jsonl" --text a --text-pair b --label label \
    --tokenizer "$work/bert-pairs-model/tokenizer.json" --max-length 16 --out "$work/pairs.h5" >/dev/null
sed -e "s|$work/texts.h5|$work/pairs.h5|" -e "s|$root/Tests/Fixtures/huggingface/bert-tiny}|$work/bert-pairs-model}|" \
    -e "s|runs/bert$|runs/bert-pairs|" -e "s|units: 3|units: 2|" "$work/bert.yaml" > "$work/bert-pairs.yaml"
train "$work/bert-pairs.yaml"
pairs_checkpoint="$(ls "$work/runs/bert-pairs/checkpoints/"*.h5 | tail -1)"
"$cohort" export "$pairs_checkpoint" --format onnx --out "$work/bert-pairs.onnx" >/dev/null
"$cohort" predict "$pairs_checkpoint" --data "$work/pairs.h5" --out "$work/bert-pairs-predictions.h5" >/dev/null
"$python" "$root/Benchmarks/check_onnx.py" "$work/bert-pairs.onnx" "$work/pairs.h5" "$work/bert-pairs-predictions.h5" || failures=$((failures + 1))
if [ "$failures" -gt 0 ]; then echo "export check: $failures model(s) differ"; exit 1; fi
echo "export check: every shipped model's ONNX graph agrees with cohort"
