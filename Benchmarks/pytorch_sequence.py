"""PyTorch reference for Cohort's sequence benchmarks: W5 (character LSTM) and W6 (nanoGPT's
baby GPT) of docs/workloads.md, on the same token files (data/kjv), the same recipes, DDP over
gloo with one thread per process for several processes.

Training prints one JSON line from rank 0:
  {"tokens_per_second" (steps 11 to the end), "first_step_seconds" (process start to the first
   step's end), "peak_rss_mb" (largest over ranks), "validation_loss" (with --evaluate: every
   non-overlapping window of val.h5, nats/token)}
Generation (--generate) prints {"generation_tokens_per_second"}: greedy, batch 1, 500 tokens
after a 64-token prompt, with a key/value cache; a full context keeps its newest half, as
`cohort generate` does.
Usage: python pytorch_sequence.py --workload W6 --data data/kjv --processes 2 --threads 1 --steps 2000 [--evaluate]
       python pytorch_sequence.py --workload W6 --data data/kjv --generate
"""
import argparse, contextlib, json, math, os, resource, time

from benchlib import process_uptime




RECIPES = {
    "W5": dict(batch=32, window=64, lr=2e-3, clip=5.0),
    "W6": dict(batch=12, window=64, lr=1e-3, clip=1.0, warmup=100, min_lr=1e-4, decay=0.1, betas=(0.9, 0.99)),
    "W7": dict(batch=8, window=256, lr=1e-3, clip=1.0, warmup=100, min_lr=1e-4, decay=0.1, betas=(0.9, 0.99),
               width=384, heads=6, layers=6),
    # configs/gpt-100m.yaml: 4 windows × 2 accumulated micro-batches per process (its head is
    # untied there, tied here: 196,608 parameters of 85 M, no difference to the speed).
    "GPT100M": dict(batch=4, accumulate=2, window=256, lr=6e-4, clip=1.0, warmup=20, min_lr=6e-5, decay=0.1, betas=(0.9, 0.95),
                    width=768, heads=12, layers=12),
}


def build(workload, vocabulary, torch):
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.c_attn, self.c_proj, self.heads = nn.Linear(width, 3 * width), nn.Linear(width, width), heads

        def forward(self, x, cache=None):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
                y = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(width), Attention(width, heads), nn.LayerNorm(width)
            self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x, cache=None):
            x = x + self.attn(self.ln_1(x), cache)
            return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self, vocabulary, length=64, width=128, heads=4, layers=4):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocabulary, width), nn.Embedding(length, width)
            self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
            self.ln_f = nn.LayerNorm(width)
            for name, p in self.named_parameters():  # nanoGPT's initialization
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0, 0.02 / math.sqrt(2 * layers))
                elif p.dim() >= 2:
                    nn.init.normal_(p, 0, 0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        checkpoint_blocks = False  # torch.utils.checkpoint per block (Cohort's training.recompute: blocks)

        def forward(self, ids, caches=None, offset=0):
            x = self.wte(ids) + self.wpe(torch.arange(offset, offset + ids.shape[1]))
            for index, block in enumerate(self.blocks):
                if self.checkpoint_blocks and self.training and caches is None:
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x, None if caches is None else caches[index])
            return self.ln_f(x) @ self.wte.weight.t()

    class CharLSTM(nn.Module):
        def __init__(self, vocabulary):
            super().__init__()
            self.embedding, self.lstm, self.head = nn.Embedding(vocabulary, 64), nn.LSTM(64, 256, 2, batch_first=True), nn.Linear(256, vocabulary)

        def forward(self, ids):
            return self.head(self.lstm(self.embedding(ids))[0])

    if workload in ("W7", "GPT100M"):
        recipe = RECIPES[workload]
        return GPT(vocabulary, recipe["window"], recipe["width"], recipe["heads"], recipe["layers"])
    return GPT(vocabulary) if workload == "W6" else CharLSTM(vocabulary)


def tokens_of(path, torch, h5py):
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["tokens"][:].astype("int64")), len(f.attrs["vocabulary"])


def worker(rank, args):
    import torch, torch.nn as nn, torch.nn.functional as F, torch.distributed as dist, h5py
    torch.set_num_threads(args.threads)
    if args.processes > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=args.processes)
    recipe = RECIPES[args.workload]
    torch.manual_seed(1)
    train, vocabulary = tokens_of(os.path.join(args.data, "train.h5"), torch, h5py)
    model = build(args.workload, vocabulary, torch)
    if args.checkpoint_blocks:
        import torch.utils.checkpoint
        model.checkpoint_blocks = True
    if args.workload in ("W6", "W7", "GPT100M"):
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["decay"]}, {"params": rest, "weight_decay": 0.0}],
                                      lr=recipe["lr"], betas=recipe["betas"])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    ddp = nn.parallel.DistributedDataParallel(model) if args.processes > 1 else model
    generator = torch.Generator().manual_seed(1000 + rank)
    B, T = recipe["batch"], recipe["window"]
    timed_from = None
    first_step = None
    setup = process_uptime()  # the first step begins
    for step in range(args.steps):
        if args.workload in ("W6", "W7", "GPT100M"):
            if step < recipe["warmup"]:
                rate = recipe["lr"] * step / recipe["warmup"]
            else:
                progress = (step - recipe["warmup"]) / max(1, args.steps - recipe["warmup"])
                rate = recipe["min_lr"] + (recipe["lr"] - recipe["min_lr"]) * (1 + math.cos(math.pi * progress)) / 2
            for group in optimizer.param_groups:
                group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        micro = recipe.get("accumulate", 1)
        for index in range(micro):
            starts = torch.randint(0, len(train) - T - 1, (B,), generator=generator)
            x = torch.stack([train[s:s + T] for s in starts])
            y = torch.stack([train[s + 1:s + T + 1] for s in starts])
            # DDP all-reduces on the last micro-batch's backward only, as Cohort does.
            with (ddp.no_sync() if args.processes > 1 and index < micro - 1 else contextlib.nullcontext()):
                logits = ddp(x)
                loss = F.cross_entropy(logits.reshape(-1, vocabulary), y.reshape(-1)) / micro
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
        optimizer.step()
        if step == 0:
            first_step = process_uptime()
        if step == 9:
            timed_from = time.perf_counter()
    seconds = time.perf_counter() - timed_from
    result = {"tokens_per_second": args.processes * B * recipe.get("accumulate", 1) * T * (args.steps - 10) / seconds, "first_step_seconds": first_step,
              "setup_seconds": setup}
    # Decimal megabytes, as Cohort prints them (ru_maxrss is in KiB).
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6])
    if args.processes > 1:
        dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    result["peak_rss_mb"] = float(rss[0])
    if args.evaluate and rank == 0:
        valid, _ = tokens_of(os.path.join(args.data, "val.h5"), torch, h5py)
        count = (len(valid) - 1) // T
        total = 0.0
        model.eval()
        with torch.no_grad():
            for start in range(0, count, 64):
                rows = range(start, min(start + 64, count))
                x = torch.stack([valid[r * T:r * T + T] for r in rows])
                y = torch.stack([valid[r * T + 1:r * T + T + 1] for r in rows])
                total += F.cross_entropy(model(x).reshape(-1, vocabulary).double(), y.reshape(-1), reduction="sum").item()
        result["validation_loss"] = total / (count * T)
    if rank == 0:
        print(json.dumps(result), flush=True)
    if args.processes > 1:
        dist.destroy_process_group()


def generate(args):
    import torch, h5py
    torch.set_num_threads(args.threads)
    train, vocabulary = tokens_of(os.path.join(args.data, "train.h5"), torch, h5py)
    model = build("W6", vocabulary, torch).eval()
    prompt = train[:64].tolist()
    capacity = 64
    with torch.no_grad():
        start = time.perf_counter()
        context = []
        caches = [{} for _ in model.blocks]

        def feed(token):
            nonlocal context, caches
            if len(context) == capacity:  # keep the newest half, as cohort generate does
                kept = context[capacity // 2:]
                context, caches = [], [{} for _ in model.blocks]
                logits = model(torch.tensor([kept]), caches, 0)
                context = list(kept)
            logits = model(torch.tensor([[token]]), caches, len(context))
            context.append(token)
            return logits[0, -1]

        logits = None
        for token in prompt:
            logits = feed(token)
        generated = time.perf_counter()
        for _ in range(500):
            logits = feed(int(logits.argmax()))
        seconds = time.perf_counter() - generated
    print(json.dumps({"generation_tokens_per_second": 500 / seconds, "prompt_seconds": generated - start}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["W5", "W6", "W7", "GPT100M"], required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--port", type=int, default=29533)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--checkpoint-blocks", action="store_true", help="recompute each Transformer block in backward")
    args = parser.parse_args()
    if args.generate:
        generate(args)
    elif args.processes > 1:
        import torch.multiprocessing as mp
        mp.spawn(worker, args=(args,), nprocs=args.processes)
    else:
        worker(0, args)
