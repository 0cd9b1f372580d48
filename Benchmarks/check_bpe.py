#!/usr/bin/env python3
"""Cohort's byte-level BPE against Hugging Face `tokenizers` on a corpus, both ways:

  1. the tokenizer `cohort prepare text --tokenizer bpe --vocab N` learned (its tokenizer.json),
     loaded by `tokenizers`: the same ids as Cohort's token files, and the text back exactly;
  2. a tokenizer `tokenizers` learns (ByteLevel BPE, same vocabulary size), given to
     `cohort prepare text --tokenizer-file`: the same ids as `tokenizers` gives.

    Benchmarks/.venv/bin/python Benchmarks/check_bpe.py data/kjv/kjv.txt 1256

Needs h5py, numpy and tokenizers (pip install tokenizers into Benchmarks/.venv), and a built cohort
(COHORT_BIN, default .build/release/cohort). Exits 1 on any difference.
"""
import os
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

cohort = os.environ.get("COHORT_BIN", ".build/release/cohort")
corpus, size = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1256
text = open(corpus, encoding="utf-8", newline="").read()  # bytes as they are: no newline translation
work = tempfile.mkdtemp(prefix="cohort-bpe-")


def cohort_ids(directory):
    with h5py.File(f"{directory}/train.h5", "r") as train, h5py.File(f"{directory}/val.h5", "r") as val:
        return np.concatenate([train["tokens"][:], val["tokens"][:]]).astype(np.int64)


failures = 0
started = time.time()
subprocess.run([cohort, "prepare", "text", "--input", corpus, "--out", f"{work}/cohort", "--tokenizer", "bpe", "--vocab", str(size)],
               check=True, stdout=subprocess.DEVNULL)
print(f"cohort learned {size} tokens and encoded {len(text):,} characters in {time.time() - started:.1f} s")
ours = cohort_ids(f"{work}/cohort")
theirs = Tokenizer.from_file(f"{work}/cohort/tokenizer.json")
ids = np.array(theirs.encode(text).ids)
same = len(ids) == len(ours) and bool(np.all(ids == ours))
back = theirs.decode(ours.tolist()) == text
print(f"1. Cohort's tokenizer.json in tokenizers {tokenizers.__version__}: {len(ids):,} ids, "
      f"{'identical' if same else 'DIFFERENT'}; decoded text {'identical' if back else 'DIFFERENT'}")
failures += (not same) + (not back)

hf = Tokenizer(models.BPE())
hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
hf.decoder = decoders.ByteLevel()
started = time.time()
hf.train_from_iterator([text], trainers.BpeTrainer(vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                   show_progress=False))
print(f"tokenizers learned {hf.get_vocab_size()} tokens in {time.time() - started:.1f} s")
hf.save(f"{work}/hf.json")
subprocess.run([cohort, "prepare", "text", "--input", corpus, "--out", f"{work}/from-hf", "--tokenizer-file", f"{work}/hf.json"],
               check=True, stdout=subprocess.DEVNULL)
ours = cohort_ids(f"{work}/from-hf")
ids = np.array(hf.encode(text).ids)
same = len(ids) == len(ours) and bool(np.all(ids == ours))
back = hf.decode(ours.tolist()) == text
print(f"2. tokenizers' tokenizer.json in cohort: {len(ids):,} ids, {'identical' if same else 'DIFFERENT'}; "
      f"decoded text {'identical' if back else 'DIFFERENT'}")
failures += (not same) + (not back)
if not same and len(ids) == len(ours):
    first = int(np.argmax(ids != ours))
    print(f"   first difference at token {first}: {ids[first - 3:first + 3]} vs {ours[first - 3:first + 3]}")
sys.exit(1 if failures else 0)
