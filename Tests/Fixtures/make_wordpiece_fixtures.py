#!/usr/bin/env python3
"""Writes the WordPiece fixtures: a BERT-style tokenizer trained by Hugging Face `tokenizers`
on the KJV text, and its ids for a sample of KJV lines and for lines that exercise every rule.

Run by hand where `tokenizers` is installed (for example Benchmarks/.venv), after
launch/prepare-data.sh has written data/kjv/kjv.txt:
    Benchmarks/.venv/bin/python Tests/Fixtures/make_wordpiece_fixtures.py
It rewrites Tests/Fixtures/huggingface/wordpiece-kjv/ (tokenizer.json, expected.json); CI only
reads them. Benchmarks/check_wordpiece.py compares every KJV line with `tokenizers` itself.

The tokenizer is what BERT's `tokenizer.json` holds: BertNormalizer (clean text, CJK
characters split, accents stripped, lower case), BertPreTokenizer, WordPiece with `##`
continuations and `[UNK]` for words over 100 characters, `[CLS] $A [SEP]`, and sentence pairs
`[CLS] $A [SEP] $B [SEP]` with their token types, cut by `longest_first` truncation.
"""
import json
import os

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
OUT = os.path.join(HERE, "huggingface", "wordpiece-kjv")

EDGE_CASES = [
    "",
    "In the beginning God created the heaven and the earth.",
    "Café naïve résumé façade Ångström ÉCOLE",
    "中文字符 mixed with 日本語 and 한국어",
    "Hello!!! (world) — “quoted” ‘single’ … «guillemets» [brackets] {braces} @#$%^&*_+=|\\~`",
    "tab\there\nnewline\r\ncarriage\u00a0nbsp\u2003emspace\u200bzerowidth",
    "control\u0000nul\ufffdreplacement\u0007bell\u200dzwj\ue000private",
    "İstanbul ΣΊΣΥΦΟΣ Straße ǅemal ﬁnance",
    "emoji 😀👍🏽 and symbols ™ © ° ± × ÷ €100 3.14159 1,000,000",
    "a" * 101 + " " + "b" * 100 + " unmistakably",
    "behold, the LORD thy God is with thee whithersoever thou goest; fear not! 42:7",
    "Tetragrammaton‐hyphen–en—em dashes and 'apostrophes' don't won't",
    "[CLS] special tokens in the text [SEP] stay whole: [MASK]ed [UNK] [PAD]",
]


def main():
    corpus = os.path.join(ROOT, "data", "kjv", "kjv.txt")
    with open(corpus, encoding="utf-8") as f:
        lines = f.read().split("\n")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=3000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                        continuing_subword_prefix="##")
    tokenizer.train([corpus], trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                             special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    os.makedirs(OUT, exist_ok=True)
    tokenizer.save(os.path.join(OUT, "tokenizer.json"))
    sample = lines[::80] + EDGE_CASES
    expected = {"lines": sample, "ids": [tokenizer.encode(line).ids for line in sample]}
    tokenizer.enable_truncation(max_length=16)
    expected["ids_max_length_16"] = [tokenizer.encode(line).ids for line in sample]
    # Sentence pairs ([CLS] A [SEP] B [SEP], types 0 then 1), cut by longest_first truncation.
    pairs = []
    for index in range(0, 200):
        first, second = sample[index], sample[(index * 7 + 3) % len(sample)]
        max_length = [8, 9, 16, 33, 64, 512][index % 6]
        tokenizer.enable_truncation(max_length=max_length)
        encoding = tokenizer.encode(first, second)
        pairs.append({"first": first, "second": second, "max_length": max_length, "ids": encoding.ids, "types": encoding.type_ids})
    expected["pairs"] = pairs
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)
    print(f"wrote {OUT}: vocabulary {tokenizer.get_vocab_size()}, {len(sample)} lines")


if __name__ == "__main__":
    main()
