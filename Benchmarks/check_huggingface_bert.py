#!/usr/bin/env python3
"""A BERT-family model Cohort exported with `--format huggingface`, loaded by transformers:
no missing or unexpected keys (AutoModel), and the same last hidden states as the directory it
was imported from (or, with EMBEDDINGS.h5 from `cohort embed`, the same mean-pooled,
normalized embeddings), on every line of TEXTS:

    python Benchmarks/check_huggingface_bert.py EXPORTED_DIR TEXTS.txt (REFERENCE_DIR | EMBEDDINGS.h5) [MAX_LENGTH]

Exits 1 on a missing or unexpected key or a difference above 1e-5. Needs torch, transformers,
tokenizers (and h5py with EMBEDDINGS.h5).
"""
import sys

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModel

exported, texts, reference = sys.argv[1], sys.argv[2], sys.argv[3]
max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 128
model, info = AutoModel.from_pretrained(exported, output_loading_info=True)
problems = {key: value for key, value in info.items() if value and key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
if problems:
    print(f"{exported}: AutoModel.from_pretrained: {problems}")
    sys.exit(1)
model.eval()
tokenizer = Tokenizer.from_file(f"{exported}/tokenizer.json")
tokenizer.no_padding()
tokenizer.enable_truncation(max_length=max_length)
with open(texts, encoding="utf-8") as f:
    lines = f.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()


def embed(encoder, batch):
    ids = [tokenizer.encode(line).ids for line in batch]
    length = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [0] * (length - len(row)) for row in ids])
    mask = (input_ids != 0).long()
    with torch.no_grad():
        hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    return hidden, mask, torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=1)


worst = 0.0
if reference.endswith(".h5"):
    import h5py
    with h5py.File(reference, "r") as f:
        ours = f["embeddings"][()]
    for start in range(0, len(lines), 32):
        _, _, pooled = embed(model, lines[start:start + 32])
        worst = max(worst, float(np.abs(pooled.numpy() - ours[start:start + 32]).max()))
    what = "cohort embed's embeddings"
else:
    original = AutoModel.from_pretrained(reference).eval()
    for start in range(0, len(lines), 32):
        hidden, mask, _ = embed(model, lines[start:start + 32])
        expected, _, _ = embed(original, lines[start:start + 32])
        worst = max(worst, float(((hidden - expected).abs() * mask.unsqueeze(-1)).max()))
    what = f"{reference}'s hidden states"
print(f"{exported}: transformers {transformers.__version__}: no missing or unexpected keys; {len(lines)} texts within {worst:.2e} of {what}")
sys.exit(0 if worst <= 1e-5 else 1)
