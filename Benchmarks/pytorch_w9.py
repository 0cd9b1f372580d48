#!/usr/bin/env python3
"""W9 in PyTorch + transformers, the peer Cohort's run is compared with (docs/workloads.md):
all-MiniLM-L6-v2's BertModel, mean pooling over the real tokens, dropout 0.1, Linear 384 → 14
(N(0, 0.02), bias 0); AdamW 5e-5, weight decay 0.01 except biases and LayerNorm, linear warm-up
over the first 10 % of the steps then linear decay to 0, clip 1.0, batch 16 per rank, 3 epochs,
seed 0, batches padded to their longest row; DDP over gloo, 1 thread per process.

    python Benchmarks/pytorch_w9.py data/models/all-MiniLM-L6-v2 data/fortunes [RANKS] [EPOCHS]

Reads the split launch/prepare-data.sh fortunes wrote (train.jsonl, test.jsonl). Prints the
test accuracy and loss, training samples/s, seconds to the first step and peak resident memory
per process. Needs torch, transformers, tokenizers.
"""
import json
import os
import resource
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tokenizers import Tokenizer
from transformers import BertModel, get_linear_schedule_with_warmup

CLASSES = ["art", "computers", "drugs", "education", "food", "kids", "law", "literature", "love", "politics", "science",
           "sports", "startrek", "work"]


class Classifier(torch.nn.Module):
    def __init__(self, directory):
        super().__init__()
        self.encoder = BertModel.from_pretrained(directory, add_pooling_layer=False)
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(CLASSES))
        torch.nn.init.normal_(self.head.weight, std=0.02)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, ids, mask):
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return self.head(self.dropout((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)))


def load(path, tokenizer):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(tokenizer.encode(row["text"]).ids, CLASSES.index(row["label"])) for row in rows]


def batches(examples, order, size):
    for start in range(0, len(order), size):
        chosen = [examples[i] for i in order[start:start + size]]
        length = max(len(ids) for ids, _ in chosen)
        ids = torch.tensor([ids + [0] * (length - len(ids)) for ids, _ in chosen])
        yield ids, (ids != 0).long(), torch.tensor([label for _, label in chosen])


def run(rank, world, directory, data, epochs, started):
    torch.set_num_threads(1)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(f"{directory}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=128)
    train, test = load(f"{data}/train.jsonl", tokenizer), load(f"{data}/test.jsonl", tokenizer)
    model = torch.nn.parallel.DistributedDataParallel(Classifier(directory))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=5e-5)
    per_rank = 16
    steps_per_epoch = -(-len(train) // (per_rank * world))
    total = steps_per_epoch * epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    first_step, trained, seconds = None, 0, 0.0
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(train), generator=generator).tolist()
        mine = order[rank::world]
        model.train()
        began = time.time()
        for ids, mask, labels in batches(train, mine, per_rank):
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if first_step is None:
                first_step = time.time() - started
            trained += len(labels) * world
        seconds += time.time() - began
    model.eval()
    correct, total_loss = torch.zeros(1), torch.zeros(1)
    with torch.no_grad():
        for ids, mask, labels in batches(test, list(range(rank, len(test), world)), 64):
            logits = model.module(ids, mask)
            total_loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
    dist.all_reduce(correct)
    dist.all_reduce(total_loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if rank == 0:
        print(f"pytorch {torch.__version__} W9 {world} ranks × 1 thread, {epochs} epochs: test accuracy {correct.item() / len(test):.4f}, "
              f"test loss {total_loss.item() / len(test):.4f}; {trained / seconds:.2f} training samples/s; first step ended "
              f"{first_step:.1f} s after start; peak resident {peak:.0f} MB (rank 0)", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    directory, data = sys.argv[1], sys.argv[2]
    world = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    mp.spawn(run, args=(world, directory, data, epochs, time.time()), nprocs=world)
