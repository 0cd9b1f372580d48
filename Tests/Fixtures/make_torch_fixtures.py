#!/usr/bin/env python3
"""Writes the PyTorch fixtures the Swift tests compare Cohort's sequence layers against.

Run by hand where PyTorch is installed (for example Benchmarks/.venv):
    Benchmarks/.venv/bin/python Tests/Fixtures/make_torch_fixtures.py [NAME ...]
It rewrites Tests/Fixtures/torch_*.h5 (only torch_NAME.h5 for the names given: the other
fixtures' draws are still made, so every file comes out the same either way); CI only reads
them (no PyTorch needed there).

Each layer fixture holds, under Cohort's parameter names and layouts (Linear weights
transposed to [in, out]):
    input [B, ...]              x (token ids as float64-exact floats for an embedding)
    output [B, ...]             y = module(x)
    output_gradient [B, ...]    r, the probe: L = sum(r * y)
    input_gradient [B, ...]     dL/dx (not for ids)
    parameters/NAME             θ
    gradients/NAME              dL/dθ
The GPT fixture holds a tiny nanoGPT-style model's initial parameters, one fixed batch of
ids and targets, and the losses of 10 AdamW steps (clip 1.0, warm-up then cosine, weight
decay on matrices and embeddings only) as Cohort's schedule computes the rate.
"""
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
torch.set_default_dtype(torch.float32)


# The model classes users rebuild checkpoints with: one definition for both scripts.
sys.path.insert(0, os.path.join(HERE, "..", "..", "Examples", "pytorch"))
from gpt_from_checkpoint import GPT, Block, CausalSelfAttention  # noqa: E402


def linear(prefix, module):
    """nn.Linear → Cohort's dense: weight [in, out], bias [out]."""
    return {f"{prefix}/weight": module.weight.t(), f"{prefix}/bias": module.bias}


def layer_norm(prefix, module):
    return {f"{prefix}/weight": module.weight, f"{prefix}/bias": module.bias}


def attention(prefix, module):
    return {**linear(f"{prefix}/qkv", module.c_attn), **linear(f"{prefix}/proj", module.c_proj)}


def block(prefix, module):
    return {**layer_norm(f"{prefix}/ln_1", module.ln_1), **attention(f"{prefix}/attention", module.attn),
            **layer_norm(f"{prefix}/ln_2", module.ln_2), **linear(f"{prefix}/fc", module.c_fc),
            **linear(f"{prefix}/proj", module.c_proj)}


def gpt(module):
    names = {"embedding_1/weight": module.wte.weight, "positional_embedding_1/weight": module.wpe.weight}
    for index, b in enumerate(module.blocks):
        names.update(block(f"transformer_block_{index + 1}", b))
    names.update(layer_norm("layer_norm_1", module.ln_f))
    return names


def randomize(module):
    """Weights and biases away from their usual initial values, so every term of a gradient shows."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3 + (1.0 if parameter.dim() == 1 and parameter.shape[0] > 0 else 0.0) * 0.1)


ONLY = set(sys.argv[1:])


def write_layer(name, module, cohort_names, x, ids=False):
    x = x.clone().requires_grad_(not ids)
    y = module(x.long() if ids else x)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    if ONLY and name not in ONLY:
        return
    with h5py.File(os.path.join(HERE, f"torch_{name}.h5"), "w") as f:
        f["input"] = x.detach().numpy().astype(np.float32)
        f["output"] = y.detach().numpy().astype(np.float32)
        f["output_gradient"] = r.numpy().astype(np.float32)
        if not ids:
            f["input_gradient"] = x.grad.numpy().astype(np.float32)
        for cohort_name, tensor in cohort_names(module).items():
            f[f"parameters/{cohort_name}"] = tensor.detach().numpy().astype(np.float32)
            # A Linear weight is stored transposed (a view): its gradient is the transposed gradient.
            grad = tensor.grad if tensor.is_leaf else tensor._base.grad.t()
            f[f"gradients/{cohort_name}"] = grad.detach().numpy().astype(np.float32)
        f.attrs["source"] = f"torch {torch.__version__}, Tests/Fixtures/make_torch_fixtures.py"
    print(f"wrote torch_{name}.h5")


def main():
    B, T, C, V = 2, 5, 8, 7
    embedding = nn.Embedding(V, C)
    write_layer("embedding", embedding, lambda m: {"embedding_1/weight": m.weight},
                torch.tensor([[0, 3, 3, 6, 1], [2, 3, 0, 0, 5]], dtype=torch.float32), ids=True)
    norm = nn.LayerNorm(C)
    randomize(norm)
    write_layer("layer_norm", norm, lambda m: layer_norm("layer_norm_1", m), torch.randn(B, T, C) * 2 + 0.5)
    attn = CausalSelfAttention(C, 2)
    randomize(attn)
    write_layer("attention", attn, lambda m: attention("attention_1", m), torch.randn(B, T, C))
    blk = Block(C, 2, 4)
    randomize(blk)
    write_layer("transformer_block", blk, lambda m: block("transformer_block_1", m), torch.randn(B, T, C))

    # nn.LSTM, 2 layers, batch first, every step's output; Cohort keeps PyTorch's names and layouts.
    class Recurrent(nn.Module):
        def __init__(self, hidden=5, layers=2):
            super().__init__()
            self.lstm = nn.LSTM(3, hidden, num_layers=layers, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]
    recurrent = Recurrent()
    write_layer("lstm", recurrent, lambda m: {f"lstm_1/{n}": t for n, t in m.lstm.named_parameters()}, torch.randn(2, 6, 3))

    # A wider one: Cohort's recurrence works in panels of 8 units (forward) and 32 (backward) and
    # in tiles of 6 rows; 40 units and a batch of 7 give full panels, partial ones and a partial
    # tile. Its own seed, the generator's state put back after: the other fixtures stay as they were.
    state = torch.get_rng_state()
    torch.manual_seed(27)
    wide = Recurrent(hidden=40, layers=1)
    write_layer("lstm_wide", wide, lambda m: {f"lstm_1/{n}": t for n, t in m.lstm.named_parameters()}, torch.randn(7, 6, 3))
    torch.set_rng_state(state)

    # Tied head after an embedding: ids → embedding → tanh(dense) → logits with the same weight.
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.fc = nn.Linear(C, C)

        def forward(self, ids):
            return torch.tanh(self.fc(self.wte(ids))) @ self.wte.weight.t()
    tied = Tied()
    randomize(tied)
    write_layer("tied_head", tied, lambda m: {"embedding_1/weight": m.wte.weight, **linear("dense_1", m.fc)},
                torch.tensor([[1, 1, 4, 6, 0], [5, 2, 2, 3, 4]], dtype=torch.float32), ids=True)

    # A 10-step training trajectory of a tiny GPT on one fixed batch.
    V, T, C, H, L, B = 11, 8, 16, 2, 2, 4
    model = GPT(V, T, C, [(H, 4)] * L)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif "ln" in name:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0, 0.02)
    initial = {n: t.detach().clone() for n, t in gpt(model).items()}
    generator = torch.Generator().manual_seed(1)
    stream = torch.randint(0, V, (B, T + 1), generator=generator)
    ids, targets = stream[:, :T], stream[:, 1:]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    base, minimum, warmup, total = 3e-3, 3e-4, 3, 10
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=base, betas=(0.9, 0.99), eps=1e-8)
    losses = []
    for step in range(10):
        # Cohort's warmup_cosine: lr·t/w for t < w, then cosine from lr to lr_min over T − w.
        if step < warmup:
            rate = base * step / warmup
        else:
            rate = minimum + (base - minimum) * (1 + math.cos(math.pi * min((step - warmup) / (total - warmup), 1))) / 2
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad()
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    if ONLY and "gpt_trajectory" not in ONLY:
        return
    with h5py.File(os.path.join(HERE, "torch_gpt_trajectory.h5"), "w") as f:
        f["ids"] = ids.numpy().astype(np.float32)
        f["targets"] = targets.numpy().astype(np.int32)
        f["losses"] = np.array(losses, dtype=np.float64)
        for name, tensor in initial.items():
            f[f"parameters/{name}"] = tensor.numpy().astype(np.float32)
        f.attrs["source"] = f"torch {torch.__version__}, Tests/Fixtures/make_torch_fixtures.py"
    print("wrote torch_gpt_trajectory.h5:", " ".join(f"{x:.5f}" for x in losses))


if __name__ == "__main__":
    main()
