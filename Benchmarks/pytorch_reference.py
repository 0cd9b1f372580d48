"""PyTorch reference for Cohort's benchmarks: the same workloads (W1, W2, W3 of
docs/workloads.md), the same HDF5 files, the same recipe (Adam 1e-3, batch 64 per
process, standardized pixels), DDP over gloo with DistributedSampler for several processes.

Prints one JSON line per epoch from rank 0:
  {"epoch", "samples_per_second", "seconds", "test_accuracy", "first_step_seconds", "peak_rss_mb"}
Usage: python pytorch_reference.py --workload W1 --data DIR --processes 2 --threads 1 --epochs 1 [--max-steps N]
"""
import argparse, json, os, resource, time

from benchlib import process_uptime


def model_for(name, nn):
    if name == "W1":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "W2":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "W3":
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 1024), nn.ReLU(), nn.Dropout(0.4), nn.Linear(1024, 10))
    raise SystemExit(f"unknown workload {name}")

def load(path, torch, h5py):
    with h5py.File(path, "r") as f:
        images = torch.from_numpy(f["images"][:]).float().div_(255).permute(0, 3, 1, 2).contiguous()
        labels = torch.from_numpy(f["labels"][:]).long()
        mean, std = float(f.attrs["mean"]), float(f.attrs["std"])
    return (images - mean) / std, labels

def worker(rank, args):
    import torch, torch.nn as nn, torch.distributed as dist, h5py
    torch.set_num_threads(args.threads)
    if args.processes > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=args.processes)
    torch.manual_seed(42)
    x, y = load(os.path.join(args.data, "train.h5"), torch, h5py)
    tx, ty = load(os.path.join(args.data, "test.h5"), torch, h5py)
    dataset = torch.utils.data.TensorDataset(x, y)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=args.processes, rank=rank, shuffle=True, seed=42) \
        if args.processes > 1 else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=sampler is None, sampler=sampler, drop_last=False)
    model = model_for(args.workload, nn)
    if args.processes > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    first_step = None
    elapsed_training = 0.0
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        seen = 0
        for step, (xb, yb) in enumerate(loader):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            optimizer.step()
            if first_step is None:
                first_step = process_uptime()
            seen += len(xb)
            if args.max_steps and step + 1 >= args.max_steps:
                break
        seconds = time.perf_counter() - start
        elapsed_training += seconds
        model.eval()
        with torch.no_grad():
            correct = sum((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item() for i in range(0, len(tx), 1000))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # decimal MB, as Cohort prints (ru_maxrss is KiB)
        if rank == 0:
            print(json.dumps({"epoch": epoch + 1, "samples_per_second": seen * args.processes / seconds, "seconds": seconds,
                              "training_seconds": elapsed_training, "test_accuracy": correct / len(tx),
                              "first_step_seconds": first_step, "peak_rss_mb": rss}), flush=True)
    if args.processes > 1:
        dist.destroy_process_group()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--port", type=int, default=29517)
    args = parser.parse_args()
    if args.processes > 1:
        import torch.multiprocessing as mp
        mp.spawn(worker, args=(args,), nprocs=args.processes)
    else:
        worker(0, args)
