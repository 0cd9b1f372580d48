#!/usr/bin/env python3
"""A language model's ONNX graph in onnxruntime: the validation loss over the token file's
non-overlapping windows of T + 1 tokens (compare with `cohort evaluate`'s).

    python Benchmarks/check_onnx_lm.py MODEL.onnx data/kjv/val.h5 [EXPECTED_LOSS]

Exits 1 when EXPECTED_LOSS is given and differs by more than 1e-5. Needs numpy, h5py, onnxruntime.
"""
import sys

import h5py
import numpy as np
import onnxruntime

session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
window = session.get_inputs()[0].shape[1]
with h5py.File(sys.argv[2], "r") as f:
    tokens = f["tokens"][()].astype(np.int64)
count = (len(tokens) - 1) // window
total = 0.0
for start in range(0, count, 256):
    rows = range(start, min(start + 256, count))
    x = np.stack([tokens[r * window:(r + 1) * window] for r in rows])
    y = np.stack([tokens[r * window + 1:(r + 1) * window + 1] for r in rows])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    total -= np.take_along_axis(logp, y[..., None], axis=-1).sum()
loss = total / (count * window)
print(f"{sys.argv[1]}: onnxruntime {onnxruntime.__version__}: validation loss {loss:.6f} nats/token over {count} windows")
if len(sys.argv) > 3 and abs(loss - float(sys.argv[3])) > 1e-5:
    sys.exit(1)
