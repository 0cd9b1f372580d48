#!/usr/bin/env python3
"""Check `cohort export --format onnx` graphs in onnxruntime against `cohort predict`:

    python Benchmarks/check_onnx.py MODEL.onnx DATA.h5 PREDICTIONS.h5 [LOSS]

DATA.h5 is a Cohort data file (its features as float32, or its token ids as int64, are the graph's input), PREDICTIONS.h5
what `cohort predict` wrote for it. The graph's logits become probabilities as predict makes them
(softmax, or [1 - p, p] for binary_cross_entropy, or the outputs themselves for regression).
Prints the largest difference and exits 1 above 1e-5. Needs numpy, h5py and onnxruntime.
"""
import sys

import h5py
import numpy as np
import onnxruntime

model, data, predictions = sys.argv[1:4]
loss = sys.argv[4] if len(sys.argv) > 4 else "softmax_cross_entropy"
session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
with h5py.File(data, "r") as f:
    name = "images" if "images" in f else "ids" if "ids" in f else "features"
    x = f[name][:].astype(np.int64 if session.get_inputs()[0].type == "tensor(int64)" else np.float32)
if x.ndim == 3 and name == "images":
    x = x[..., None]
logits = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])
with h5py.File(predictions, "r") as f:
    if "probabilities" in f:
        theirs = f["probabilities"][:]
        if loss == "binary_cross_entropy":
            p = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
            ours = np.stack([1 - p, p], axis=1)
        else:
            z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
            ours = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    else:
        theirs, ours = f["predictions"][:], logits
difference = float(np.abs(ours - theirs).max())
changed = int(np.sum(ours.argmax(axis=1) != theirs.argmax(axis=1))) if ours.ndim == 2 and ours.shape[1] > 1 else 0
print(f"{model}: onnxruntime {onnxruntime.__version__}, {len(x)} rows: max |difference| from cohort predict {difference:.2e}, "
      f"predictions that differ {changed}")
sys.exit(1 if difference > 1e-5 or changed else 0)
