#!/usr/bin/env python3
"""Writes the byte-level BPE fixtures: a GPT-2-style tokenizer (ByteLevel pre-tokenizer without a
prefix space, BPE, ByteLevel decoder) trained by Hugging Face `tokenizers` on the KJV text, and
its ids for a sample of KJV lines, of W9's texts (Debian's fortunes, one text per line) and of
lines that exercise the byte-level rules.

Run by hand where `tokenizers` is installed (for example Benchmarks/.venv), after
launch/prepare-data.sh and launch/prepare-data.sh fortunes:
    Benchmarks/.venv/bin/python Tests/Fixtures/make_bpe_fixtures.py
It rewrites Tests/Fixtures/huggingface/bpe-kjv/ (tokenizer.json, expected.json); CI only reads
them. Benchmarks/check_bpe.py compares whole corpora with `tokenizers` itself.
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
OUT = os.path.join(HERE, "huggingface", "bpe-kjv")

EDGE_CASES = [
    "",
    " leading space and  double  spaces ",
    "Café naïve résumé 中文字符 日本語 😀👍🏽",
    "don't won't I'll you're we've he'd it's 'quoted'",
    "numbers 3.14159 1,000,000 and 42:7\ttab\nnewline",
    "control\u0000nul\u0007bell\ufffdreplacement",
]


def main():
    with open(os.path.join(ROOT, "data", "kjv", "kjv.txt"), encoding="utf-8") as f:
        kjv = f.read().split("\n")
    fortunes = []
    for name in ("train.jsonl", "test.jsonl"):
        with open(os.path.join(ROOT, "data", "fortunes", name), encoding="utf-8") as f:
            fortunes += [json.loads(line)["text"].replace("\r", " ").replace("\n", " ") for line in f if line.strip()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(kjv, trainers.BpeTrainer(vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                           show_progress=False))
    os.makedirs(OUT, exist_ok=True)
    tokenizer.save(os.path.join(OUT, "tokenizer.json"))
    sample = kjv[::100] + fortunes[::25] + EDGE_CASES
    expected = {"lines": sample, "ids": [tokenizer.encode(line).ids for line in sample]}
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)
    print(f"wrote {OUT}: vocabulary {tokenizer.get_vocab_size()}, {len(sample)} lines")


if __name__ == "__main__":
    main()
