#!/usr/bin/env python3
"""A model Cohort exported with `--format huggingface`, loaded by transformers: no missing or
unexpected keys (AutoModel and AutoModelForCausalLM), and the validation loss over the token
file's non-overlapping windows of T + 1 tokens (compare with `cohort evaluate`'s).

    python Benchmarks/check_huggingface_lm.py DIR data/kjv-bytes/val.h5 WINDOW [EXPECTED_LOSS]

Exits 1 on a missing or unexpected key, or when EXPECTED_LOSS is given and differs by more
than 1e-5. Needs torch, transformers, numpy, h5py.
"""
import sys

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM

directory, data, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
for kind in (AutoModel, AutoModelForCausalLM):
    model, info = kind.from_pretrained(directory, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value and key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        print(f"{directory}: {kind.__name__}.from_pretrained: {problems}")
        sys.exit(1)
model.eval()
with h5py.File(data, "r") as f:
    tokens = f["tokens"][()].astype(np.int64)
count = (len(tokens) - 1) // window
total = 0.0
with torch.no_grad():
    for start in range(0, count, 256):
        rows = range(start, min(start + 256, count))
        x = torch.tensor(np.stack([tokens[r * window:(r + 1) * window] for r in rows]))
        y = torch.tensor(np.stack([tokens[r * window + 1:(r + 1) * window + 1] for r in rows]))
        logits = model(x).logits.double()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
loss = total / (count * window)
print(f"{directory}: transformers {transformers.__version__}: no missing or unexpected keys; validation loss {loss:.6f} nats/token over {count} windows")
if len(sys.argv) > 4 and abs(loss - float(sys.argv[4])) > 1e-5:
    print(f"differs from cohort's {float(sys.argv[4]):.6f} by {abs(loss - float(sys.argv[4])):.2e}")
    sys.exit(1)
