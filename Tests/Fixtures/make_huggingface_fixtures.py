#!/usr/bin/env python3
"""Writes the Hugging Face fixtures the Swift tests import and compare against.

Run by hand where `transformers` and PyTorch are installed (for example Benchmarks/.venv):
    Benchmarks/.venv/bin/python Tests/Fixtures/make_huggingface_fixtures.py
It rewrites Tests/Fixtures/huggingface/; CI only reads it (no PyTorch needed there).

gpt2-tiny/: `GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=256,
n_positions=32))` from seed 0 (weights ×10), written by `save_pretrained` (config.json, model.safetensors),
with dropout off so that a training step is deterministic. gpt2-tiny-expected.h5 holds, for
one batch of ids [2, 16] and next-token targets:
    ids, targets          int64 [2, 16]
    logits                float32 [2, 16, 256], the model's output in eval mode
    loss                  float64, mean cross-entropy over the 32 tokens
    gradients/NAME        dL/dθ under the safetensors names (GPT2Model's, without `transformer.`)
"""
import os

import h5py
import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "huggingface")


def main():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=256, n_positions=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    # Non-trivial layer norms and biases, and weights 10 times GPT-2's initial ones (activations
    # of order 1, where gelu_new and the erf GELU part), so that a mapping mistake shows.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.mul_(10)
    directory = os.path.join(OUT, "gpt2-tiny")
    model.save_pretrained(directory, safe_serialization=True)

    generator = np.random.default_rng(1)
    ids = generator.integers(0, 256, size=(2, 17))
    inputs, targets = torch.tensor(ids[:, :16]), torch.tensor(ids[:, 1:])
    model.eval()
    logits = model(inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
    loss.backward()
    with h5py.File(os.path.join(OUT, "gpt2-tiny-expected.h5"), "w") as f:
        f["ids"] = inputs.numpy()
        f["targets"] = targets.numpy()
        f["logits"] = logits.detach().numpy().astype(np.float32)
        f["loss"] = np.float64(loss.item())
        for name, parameter in model.named_parameters():
            f[f"gradients/{name.removeprefix('transformer.')}"] = parameter.grad.numpy()
        f.attrs["transformers_version"] = np.bytes_(transformers.__version__)
        f.attrs["torch_version"] = np.bytes_(torch.__version__)
    print(f"wrote {directory} and gpt2-tiny-expected.h5 (transformers {transformers.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
