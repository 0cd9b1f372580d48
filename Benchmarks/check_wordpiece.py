#!/usr/bin/env python3
"""Cohort's WordPiece against Hugging Face `tokenizers` on every line of a text file:

    python Benchmarks/check_wordpiece.py TOKENIZER.json data/kjv/kjv.txt [COHORT_BINARY]

Runs `cohort tokenize` over the file and compares each line's ids with
`Tokenizer.from_file(TOKENIZER).encode(line).ids`, with the file's truncation (passed on as
--max-length) and without its padding (Cohort pads a batch to its longest row); exits 1 on the
first lines that differ.
Needs `tokenizers`.
"""
import subprocess
import sys

import tokenizers

path, corpus = sys.argv[1], sys.argv[2]
cohort = sys.argv[3] if len(sys.argv) > 3 else ".build/release/cohort"
with open(corpus, encoding="utf-8") as f:
    lines = f.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
tokenizer = tokenizers.Tokenizer.from_file(path)
tokenizer.no_padding()
truncation = ["--max-length", str(tokenizer.truncation["max_length"])] if tokenizer.truncation else []
expected = [encoding.ids for encoding in tokenizer.encode_batch(lines)]
output = subprocess.run([cohort, "tokenize", "--tokenizer", path, "--input", corpus] + truncation,
                        check=True, capture_output=True, text=True).stdout
ours = [[int(token) for token in line.split()] for line in output.split("\n")[:-1]]
differing = [index for index, (a, b) in enumerate(zip(ours, expected)) if a != b]
if len(ours) != len(expected) or differing:
    for index in differing[:5]:
        print(f"line {index + 1} {lines[index]!r}: cohort {ours[index]}, tokenizers {expected[index]}")
    print(f"{len(differing)} of {len(expected)} lines differ ({len(ours)} lines from cohort)")
    sys.exit(1)
tokens = sum(len(ids) for ids in expected)
print(f"{corpus}: {len(expected)} lines, {tokens} ids{' (' + ' '.join(truncation) + ')' if truncation else ''}: every line equal to tokenizers {tokenizers.__version__}")
