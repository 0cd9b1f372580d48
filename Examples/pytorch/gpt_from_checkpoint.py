#!/usr/bin/env python3
"""Rebuild a Cohort GPT checkpoint (configs/kjv-char-gpt.yaml and its kind) in PyTorch and
compute its validation loss exactly as `cohort evaluate` does.

    python Examples/pytorch/gpt_from_checkpoint.py runs/kjv-char-gpt/checkpoints/checkpoint-00002000.h5 data/kjv/val.h5

Needs torch, h5py, numpy and pyyaml. The mapping (docs/formats.md, "Sequence layers"):
  embedding_1/weight [V, C]                 -> wte.weight (and the tied output head)
  positional_embedding_1/weight [L, C]      -> wpe.weight
  transformer_block_N/ln_1, ln_2 {weight, bias} -> LayerNorm
  transformer_block_N/attention/qkv/weight [C, 3C] -> c_attn.weight [3C, C] (transposed), bias [3C]
  transformer_block_N/attention/proj/weight [C, C] -> attn.c_proj.weight (transposed)
  transformer_block_N/fc/weight [C, 4C], proj/weight [4C, C] -> c_fc, c_proj (transposed)
  layer_norm_1 {weight, bias}               -> ln_f
Cohort's dense weights are [in, out] (Keras' kernel layout); torch.nn.Linear's are [out, in].
The validation loss is the mean cross-entropy (nats/token) over every non-overlapping window
of T + 1 tokens of the file from its first token: (N - 1) // T windows.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml


class CausalSelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.heads = heads

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, width, heads, ratio):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, ratio * width)
        self.c_proj = nn.Linear(ratio * width, width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocabulary, length, width, blocks):
        super().__init__()
        self.wte = nn.Embedding(vocabulary, width)
        self.wpe = nn.Embedding(length, width)
        self.blocks = nn.ModuleList([Block(width, heads, ratio) for heads, ratio in blocks])
        self.ln_f = nn.LayerNorm(width)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


def load(checkpoint_path):
    with h5py.File(checkpoint_path, "r") as f:
        config = yaml.safe_load(f.attrs["config"])
        p = {}
        f["parameters"].visititems(lambda name, obj: p.__setitem__(name, torch.from_numpy(obj[()])) if isinstance(obj, h5py.Dataset) else None)
    layers = config["model"]["layers"]
    blocks = [(l["heads"], l.get("mlp_ratio", 4)) for l in layers if l["type"] == "transformer_block"]
    vocabulary, width = p["embedding_1/weight"].shape
    model = GPT(vocabulary, p["positional_embedding_1/weight"].shape[0], width, blocks)
    state = {"wte.weight": p["embedding_1/weight"], "wpe.weight": p["positional_embedding_1/weight"],
             "ln_f.weight": p["layer_norm_1/weight"], "ln_f.bias": p["layer_norm_1/bias"]}
    for n in range(len(blocks)):
        c, t = f"transformer_block_{n + 1}", f"blocks.{n}"
        for ours, theirs in [("ln_1", "ln_1"), ("ln_2", "ln_2")]:
            state[f"{t}.{theirs}.weight"] = p[f"{c}/{ours}/weight"]
            state[f"{t}.{theirs}.bias"] = p[f"{c}/{ours}/bias"]
        for ours, theirs in [("attention/qkv", "attn.c_attn"), ("attention/proj", "attn.c_proj"), ("fc", "c_fc"), ("proj", "c_proj")]:
            state[f"{t}.{theirs}.weight"] = p[f"{c}/{ours}/weight"].t().contiguous()
            state[f"{t}.{theirs}.bias"] = p[f"{c}/{ours}/bias"]
    model.load_state_dict(state, strict=True)
    return model, config["data"]["window"]


def validation_loss(model, window, path, batch=64):
    with h5py.File(path, "r") as f:
        tokens = torch.from_numpy(f["tokens"][()].astype(np.int64))
    count = (len(tokens) - 1) // window
    total = 0.0
    with torch.no_grad():
        for start in range(0, count, batch):
            rows = range(start, min(start + batch, count))
            x = torch.stack([tokens[r * window:r * window + window] for r in rows])
            y = torch.stack([tokens[r * window + 1:r * window + window + 1] for r in rows])
            logits = model(x).double()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
    return total / (count * window), count


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model, window = load(sys.argv[1])
    loss, windows = validation_loss(model, window, sys.argv[2])
    print(f"PyTorch {torch.__version__}: {windows} windows of {window}: validation loss {loss:.6f} nats/token")
