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
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

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
    bert()


def bert():
    """bert-tiny/: BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)) from seed 0 (weights
    ×3, layer norms and biases moved off 1 and 0), dropout off. bert-tiny-expected.h5 holds a
    batch of ids [2, 8] whose second row is padded after 5 tokens (pad id 0), and:
        hidden     float32 [2, 8, 32], last_hidden_state with attention_mask = ids != 0
        pooled     float32 [2, 32], the mean of hidden over the real positions
        probe      float32 [2, 32], r; gradients/NAME = d(sum(r * pooled))/dθ (safetensors names)
    """
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.mul_(3)
    directory = os.path.join(OUT, "bert-tiny")
    model.save_pretrained(directory, safe_serialization=True)
    ids = torch.tensor([[2, 17, 9, 33, 41, 8, 60, 3], [2, 25, 11, 5, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    model.eval()
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    probe = torch.randn(pooled.shape)
    (pooled * probe).sum().backward()
    with h5py.File(os.path.join(OUT, "bert-tiny-expected.h5"), "w") as f:
        f["ids"] = ids.numpy()
        f["hidden"] = hidden.detach().numpy().astype(np.float32)
        f["pooled"] = pooled.detach().numpy().astype(np.float32)
        f["probe"] = probe.numpy().astype(np.float32)
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                f[f"gradients/{name}"] = parameter.grad.numpy()
    print(f"wrote {directory} and bert-tiny-expected.h5")
    sentences(model)
    pairs()
    classifier()


def pairs():
    """bert-tiny-pairs.h5: sentence pairs [CLS] a [SEP] b [SEP] (ids 2 and 3) under bert-tiny with
    token_type_ids 1 after the first [SEP] (as BERT's tokenizer sets them), the second row padded:
        ids, types int64 [2, 8];  hidden float32 [2, 8, 32];  pooled float32 [2, 32] (mean over real tokens)
    """
    model = BertModel.from_pretrained(os.path.join(OUT, "bert-tiny"))
    model.eval()
    ids = torch.tensor([[2, 17, 9, 3, 41, 8, 60, 3], [2, 25, 3, 5, 11, 3, 0, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    with h5py.File(os.path.join(OUT, "bert-tiny-pairs.h5"), "w") as f:
        f["ids"] = ids.numpy()
        f["types"] = types.numpy()
        f["hidden"] = hidden.numpy().astype(np.float32)
        f["pooled"] = pooled.numpy().astype(np.float32)
    print("wrote bert-tiny-pairs.h5")


SENTENCES = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light: and there was light.",
             "Jesus wept.", "", "Café, naïve résumé!", "a " * 40]


def sentences(model):
    """bert-tiny-tokenizer.json: a WordPiece of 64 entries trained on the sentences below by
    `tokenizers` (BERT's normalizer and pre-tokenizer, [CLS] $A [SEP]); bert-tiny-sentences.h5:
    their embeddings under bert-tiny, mean-pooled over the real tokens and L2-normalized as
    sentence-transformers' encode gives them (ids padded with 0, at most 16 ids each: max_position_embeddings)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=64, limit_alphabet=40, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_truncation(max_length=16)
    tokenizer.save(os.path.join(OUT, "bert-tiny-tokenizer.json"))
    assert tokenizer.get_vocab_size() <= 64, tokenizer.get_vocab_size()
    encoded = [tokenizer.encode(text).ids for text in SENTENCES]
    length = max(len(ids) for ids in encoded)
    ids = torch.tensor([ids + [0] * (length - len(ids)) for ids in encoded])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    normalized = torch.nn.functional.normalize(pooled, p=2, dim=1)
    with h5py.File(os.path.join(OUT, "bert-tiny-sentences.h5"), "w") as f:
        f["embeddings"] = normalized.numpy().astype(np.float32)
        f.attrs["texts"] = np.array(SENTENCES, dtype=h5py.string_dtype("utf-8"))
    print("wrote bert-tiny-tokenizer.json and bert-tiny-sentences.h5")


def classifier():
    """bert-tiny-classifier/: BertForSequenceClassification with bert-tiny's encoder, a pooler and a
    3-label classifier from seed 1 (pooler weights ×3), dropout off; bert-tiny-classifier.h5 holds
    logits float32 [2, 3] for bert-tiny-expected.h5's ids (attention_mask = ids != 0)."""
    from transformers import BertForSequenceClassification
    encoder = BertModel.from_pretrained(os.path.join(OUT, "bert-tiny"))
    config = encoder.config
    config.num_labels = 3
    config.id2label = {0: "genesis", 1: "gospel", 2: "light"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(1)
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(encoder.state_dict(), strict=False)
    with torch.no_grad():
        model.bert.pooler.dense.weight.mul_(3)
        model.bert.pooler.dense.bias.add_(0.1 * torch.randn_like(model.bert.pooler.dense.bias))
        model.classifier.bias.add_(0.1 * torch.randn_like(model.classifier.bias))
    model.eval()
    model.save_pretrained(os.path.join(OUT, "bert-tiny-classifier"), safe_serialization=True)
    ids = torch.tensor([[2, 17, 9, 33, 41, 8, 60, 3], [2, 25, 11, 5, 3, 0, 0, 0]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
    with h5py.File(os.path.join(OUT, "bert-tiny-classifier.h5"), "w") as f:
        f["ids"] = ids.numpy()
        f["logits"] = logits.numpy().astype(np.float32)
    print("wrote bert-tiny-classifier/ and bert-tiny-classifier.h5")


if __name__ == "__main__":
    main()
