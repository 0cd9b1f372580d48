#!/usr/bin/env python3
"""W9's data (docs/workloads.md): Debian `fortunes` entries of 14 topics, split per class with
numpy's default_rng(0), written as JSON lines {"text", "label"}:

    python3 Benchmarks/w9_split.py [/usr/share/games/fortunes] OUT_DIR

An entry is the text between lines holding a single `%`, surrounding whitespace stripped, empty
entries dropped; per class the entries are shuffled with default_rng(0).permutation and the first
⌊80 %⌋ are train, the rest test (4,175 and 1,050). Needs numpy (Debian python3-numpy).
"""
import json
import os
import sys

import numpy as np

CLASSES = ["art", "computers", "drugs", "education", "food", "kids", "law", "literature", "love", "politics", "science",
           "sports", "startrek", "work"]
source = sys.argv[1] if len(sys.argv) > 2 else "/usr/share/games/fortunes"
out = sys.argv[-1]
os.makedirs(out, exist_ok=True)
splits = {"train": [], "test": []}
for label in CLASSES:
    with open(os.path.join(source, label), encoding="utf-8", errors="replace") as f:
        entries, current = [], []
        for line in f.read().split("\n"):
            if line.strip() == "%":
                entries.append("\n".join(current).strip())
                current = []
            else:
                current.append(line)
        entries.append("\n".join(current).strip())
    entries = [entry for entry in entries if entry]
    order = np.random.default_rng(0).permutation(len(entries))
    cut = int(len(entries) * 0.8)
    splits["train"] += [(entries[i], label) for i in order[:cut]]
    splits["test"] += [(entries[i], label) for i in order[cut:]]
for name, examples in splits.items():
    with open(os.path.join(out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
        for text, label in examples:
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
print(f"{out}: train {len(splits['train'])}, test {len(splits['test'])} examples of {len(CLASSES)} classes")
