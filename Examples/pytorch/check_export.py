#!/usr/bin/env python3
"""Check a `cohort export --format safetensors` file in PyTorch: load_state_dict(strict=True)
into the module cohort_torch builds, then
  - an image model: predict every row of a Cohort data file and compare with `cohort predict`'s
    probabilities (max difference, predictions that differ);
  - a language model: the validation loss over the file's non-overlapping windows (compare with
    `cohort evaluate`'s).

    cohort export CKPT --format safetensors --out /tmp/m.safetensors
    cohort predict CKPT --data data/fashion-mnist/test.h5 --out /tmp/p.h5
    python Examples/pytorch/check_export.py /tmp/m.safetensors data/fashion-mnist/test.h5 /tmp/p.h5
    python Examples/pytorch/check_export.py /tmp/gpt.safetensors data/kjv/val.h5 [EXPECTED_LOSS]

Needs torch, numpy, pyyaml and h5py. Exits 1 when a difference exceeds 1e-4 or a prediction differs.
"""
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cohort_torch  # noqa: E402


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    model, metadata = cohort_torch.load(sys.argv[1])
    config = yaml.safe_load(metadata["config"])
    with h5py.File(sys.argv[2], "r") as data:
        if "tokens" in data:
            window = config["data"]["window"]
            tokens = torch.from_numpy(data["tokens"][()].astype(np.int64))
            count = (len(tokens) - 1) // window
            total = 0.0
            with torch.no_grad():
                for start in range(0, count, 64):
                    rows = range(start, min(start + 64, count))
                    x = torch.stack([tokens[r * window:(r + 1) * window] for r in rows])
                    y = torch.stack([tokens[r * window + 1:(r + 1) * window + 1] for r in rows])
                    logits = model(x).double()
                    total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            loss = total / (count * window)
            print(f"{sys.argv[1]}: strict load ok; validation loss {loss:.6f} nats/token over {count} windows")
            if len(sys.argv) > 3 and abs(loss - float(sys.argv[3])) > 1e-5:
                raise SystemExit(1)
            return
        features = data[config["data"].get("features", "images")][:]
        labels = data[config["data"].get("labels", "labels")][:]
    x = cohort_torch.prepare(features, metadata)
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    if metadata.get("loss") == "binary_cross_entropy":
        p1 = torch.sigmoid(logits[:, 0])
        probabilities = torch.stack([1 - p1, p1], dim=1).numpy()
    else:
        probabilities = torch.softmax(logits, dim=1).numpy()
    predicted = probabilities.argmax(axis=1)
    print(f"{sys.argv[1]}: strict load ok; test accuracy {np.mean(predicted == labels):.4f} on {len(labels)} rows")
    if len(sys.argv) > 3:
        with h5py.File(sys.argv[3], "r") as cohort:
            theirs = cohort["probabilities"][:]
        difference = float(np.abs(theirs - probabilities).max())
        changed = int(np.sum(theirs.argmax(axis=1) != predicted))
        print(f"  against cohort predict: max |probability difference| {difference:.2e}, predictions that differ {changed}")
        if difference > 1e-4 or changed:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
