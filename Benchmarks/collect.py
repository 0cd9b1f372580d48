"""Runs the W1–W3 benchmark matrix for Benchmarks/run.sh: appends one record per workload and layout to
Benchmarks/results/records.jsonl (results.py makes RESULTS.md from them) and writes the round's full
reading to Benchmarks/results/DATE-COMMIT-W1-W3.md."""
import json, os, re, shutil, statistics, subprocess, time

from benchlib import kernels_and_cpu, logged_runner, report_path
import results as records

ROOT = os.environ["COHORT_BENCH_ROOT"]
PYTHON = os.environ.get("COHORT_BENCH_PYTHON", "")
RUNS = int(os.environ.get("COHORT_BENCH_RUNS", "3"))
WORKLOADS = os.environ.get("COHORT_BENCH_WORKLOADS", "W1,W2,W3").split(",")
W3_STEPS = int(os.environ.get("COHORT_BENCH_W3_STEPS", "0"))
COHORT = os.path.join(ROOT, ".build/release/cohort")
CONFIGS = {"W1": "configs/fashion-mnist-mlp.yaml", "W2": "configs/fashion-mnist-cnn.yaml", "W3": "configs/fashion-mnist-convnet.yaml"}
# Model FLOPs per training sample: 3 × (2 × multiply-adds of the forward pass).
MACS = {"W1": 784 * 256 + 256 * 128 + 128 * 10,
        "W2": 26 * 26 * 32 * 9 + 11 * 11 * 64 * 288 + 1600 * 64 + 64 * 10,
        "W3": 28 * 28 * 32 * 25 + 14 * 14 * 64 * 800 + 3136 * 1024 + 1024 * 10}
FLOPS = {w: 6 * m for w, m in MACS.items()}
PARAMETERS = {"W1": 235146, "W2": 121930, "W3": 3274634}
LAYOUTS = [("1 rank × 1 thread", 1, 1), ("1 rank × 2 threads", 1, 2), ("2 ranks × 1 thread", 2, 1)]
DATA = os.path.join(ROOT, "data/fashion-mnist")
run = logged_runner(ROOT, os.path.join(ROOT, "Benchmarks/last-run.log"))

def train_arguments(workload, run_name, epochs):
    """`train` of the workload's config, quiet, in a scratch run directory, without checkpoints or TensorBoard."""
    return ["train", CONFIGS[workload], "--quiet", "--set", f"training.epochs={epochs}",
            "--set", f"run_dir=/tmp/cohort-bench/{run_name}", "--set", "checkpoint.every_epochs=0", "--set", "tensorboard=false"]

def epoch_lines(out):
    return [dict(zip(("epoch", "samples", "seconds"), (int(m[0]), float(m[1]), float(m[2]))))
            for m in re.findall(r"epoch (\d+)/\d+ .*?samples/s (\d+)\s+\(([\d.]+) s", out)]

def cohort_train(workload, ranks, threads, epochs=1, steps=0, extra=()):
    command = [os.path.join(ROOT, "launch/cohort-mpirun"), "-n", str(ranks)] + train_arguments(workload, f"{workload}-{ranks}-{threads}", epochs)
    if steps:
        command += ["--set", f"training.max_steps={steps}", "--set", "data.test=null"]
    out = run(command + list(extra), {"OPENBLAS_NUM_THREADS": str(threads)})
    epochs_seen = epoch_lines(out)
    accuracy = [float(a) for a in re.findall(r"test accuracy ([\d.]+)", out)]
    first = re.search(r"process start to first step ([\d.]+) s; gradient all-reduce ([\d.]+) µs", out)
    memory = re.search(r"peak resident memory per rank: ([^;\n]+)", out)
    wait = re.search(r"loader wait in the last epoch ([\d.]+)%", out)
    return {"epochs": epochs_seen, "accuracy": accuracy, "out": out,
            "first_step": float(first.group(1)) if first else None, "allreduce_us": float(first.group(2)) if first else None,
            "rss_mb": max(float(x) for x in re.findall(r"(\d+) MB", memory.group(1))) if memory else None,
            "loader_wait": float(wait.group(1)) if wait else None}

def cohort_steps_rate(workload, ranks, threads, steps):
    """samples/s over `steps` steps, from the step lines (the epoch line never comes)."""
    out = run([os.path.join(ROOT, "launch/cohort-mpirun"), "-n", str(ranks), "train", CONFIGS[workload],
               "--set", "training.epochs=1", "--set", f"training.max_steps={steps}", "--set", "data.test=null",
               "--set", f"run_dir=/tmp/cohort-bench/{workload}-{ranks}-{threads}", "--set", "tensorboard=false",
               "--log-every", str(steps)], {"OPENBLAS_NUM_THREADS": str(threads), "COHORT_PROGRESS": "lines"})
    rates = re.findall(r"step \d+/\d+ loss [\d.]+ lr [\d.e-]+ samples/s (\d+)", out)
    first = re.search(r"process start to first step ([\d.]+) s; gradient all-reduce ([\d.]+) µs", out)
    memory = re.search(r"peak resident memory per rank: ([^;\n]+)", out)
    return {"rate": float(rates[-1]) if rates else None, "first_step": float(first.group(1)) if first else None,
            "allreduce_us": float(first.group(2)) if first else None,
            "rss_mb": max(float(x) for x in re.findall(r"(\d+) MB", memory.group(1))) if memory else None}

def torch_train(workload, processes, threads, epochs=1, steps=0):
    if not PYTHON:
        return None
    out = run([PYTHON, os.path.join(ROOT, "Benchmarks/pytorch_reference.py"), "--workload", workload, "--data", DATA,
               "--processes", str(processes), "--threads", str(threads), "--epochs", str(epochs), "--max-steps", str(steps)])
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines or None

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(value, pattern="{:,.0f}"):
    return pattern.format(value) if value is not None else "—"

started = time.time()
def gemm_peak():
    blas = {t: run([COHORT, "check-blas", "--repeats", "20"], {"OPENBLAS_NUM_THREADS": str(t)}) for t in (1, 2)}
    return {t: float(re.search(r"sgemm\s+1024×\s*1024×\s*1024:\s+([\d.]+)", blas[t]).group(1)) for t in (1, 2)}
# The peak is what the machine can do: the better of a measurement before and one after the matrix
# (a noisy neighbour during one of them would otherwise flatter every MFU figure).
peak_before = gemm_peak()
mpi = run([os.path.join(ROOT, "launch/cohort-mpirun"), "-n", "2", "check-mpi", "--repeats", "200"]
          + [a for w in WORKLOADS for a in ("--floats", str(PARAMETERS[w]))])
raw = {int(b): float(t) for b, t in re.findall(r"allreduce\s+(\d+) bytes:\s+([\d.]+) µs", mpi)}
mpi_rewrite = run([os.path.join(ROOT, "launch/cohort-mpirun"), "-n", "2", "check-mpi", "--repeats", "200", "--cold"]
                  + [a for w in WORKLOADS for a in ("--floats", str(PARAMETERS[w]))])
raw_rewrite = {int(b): float(t) for b, t in re.findall(r"allreduce\s+(\d+) bytes:\s+([\d.]+) µs", mpi_rewrite)}
# The same sizes through Cohort's own all-reduce (node shared memory), as check-mpi times it.
shared = {int(b): float(t) for b, t in re.findall(r"cohort all-reduce\s+(\d+) bytes:\s+([\d.]+) µs", mpi)}
shared_rewrite = {int(b): float(t) for b, t in re.findall(r"cohort all-reduce\s+(\d+) bytes:\s+([\d.]+) µs", mpi_rewrite)}

# The step of 2 ranks taken apart: a run with training.timing_barrier, so the all-reduce is timed
# after a barrier (the time a raw MPI_Allreduce is measured in) and the wait for the slower rank
# is counted on its own.
ANATOMY_STEPS = {"W1": 469, "W2": 200, "W3": 40}
def step_anatomy(workload):
    out = run([os.path.join(ROOT, "launch/cohort-mpirun"), "-n", "2", "train", CONFIGS[workload], "--quiet",
               "--set", "training.epochs=1", "--set", f"training.max_steps={ANATOMY_STEPS[workload]}", "--set", "data.test=null",
               "--set", f"run_dir=/tmp/cohort-bench/{workload}-anatomy", "--set", "tensorboard=false",
               "--set", "training.timing_barrier=true"], {"OPENBLAS_NUM_THREADS": "1"})
    line = re.search(r"per step by rank \(ms\): compute ([\d., ]+); update ([\d., ]+); gradient all-reduce [\d., ]+ "
                     r"\(median ([\d., ]+), after a barrier that waited ([\d., ]+)\)", out)
    if not line:
        return None
    compute, update, reduce, wait = ([float(x) for x in group.split(",")] for group in line.groups())
    return {"compute": compute, "update": update, "allreduce_ms": max(reduce), "wait": wait}

# Two unsynchronised 1-rank processes, one pinned to each core (as mpirun binds the ranks), run
# at the same time: what the two cores deliver with no all-reduce and no waiting for each other.
# Against 2 × one process alone it is the cost of sharing the machine (caches, memory bandwidth,
# the host); the 2-rank run against it is the cost of running in step.
def unsynchronised_pair(workload):
    if not shutil.which("taskset"):
        return None
    commands = [["taskset", "-c", str(core), COHORT] + train_arguments(workload, f"{workload}-pair-{core}", 1)
                + ["--set", "data.test=null"] for core in (0, 1)]
    for command in commands:
        LOG.write("$ " + " ".join(command) + " &\n")
    processes = [subprocess.Popen(c, cwd=ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate()[0] for p in processes]
    LOG.write("\n".join(outputs) + "\n")
    rates = [epoch_lines(out) for out in outputs]
    return sum(r[0]["samples"] for r in rates) if all(rates) else None

# The machine's speed drifts by tens of percent over minutes, so the runs go in rounds: in each,
# every layout once, Cohort then PyTorch, then the unsynchronised pair; medians over the rounds.
# The GEMM peak is probed again after each workload: how much the machine itself moved.
peak_probes = [peak_before[1]]
rows = []
pairs = {}
for workload in WORKLOADS:
    steps = W3_STEPS if workload == "W3" else 0
    results = {layout: [] for layout in LAYOUTS}
    peers = {layout: [] for layout in LAYOUTS}
    pair_rates = []
    for _ in range(RUNS):
        for layout in LAYOUTS:
            _, ranks, threads = layout
            if steps:
                results[layout].append(cohort_steps_rate(workload, ranks, threads, steps))
                peers[layout].append(torch_train(workload, ranks, threads, 1, steps))
            else:
                results[layout].append(cohort_train(workload, ranks, threads))
                peers[layout].append(torch_train(workload, ranks, threads))
        if workload != "W1" and not steps:
            pair_rates.append(unsynchronised_pair(workload))
    if pair_rates:
        pairs[workload] = median(pair_rates)
    for layout in LAYOUTS:
        label, ranks, threads = layout
        result, peer = results[layout], peers[layout]
        if steps:
            rate = median([r["rate"] for r in result])
        else:
            rate = median([r["epochs"][0]["samples"] if r["epochs"] else None for r in result])
        peer_rate = median([p[0]["samples_per_second"] if p else None for p in peer])
        rows.append({"workload": workload, "layout": label, "ranks": ranks, "threads": threads, "steps": steps,
                     "cohort": rate, "torch": peer_rate,
                     "ratio": rate / peer_rate if rate and peer_rate else None,
                     "first_step": median([r["first_step"] for r in result]),
                     "torch_first_step": median([p[0]["first_step_seconds"] if p else None for p in peer]),
                     "rss": median([r["rss_mb"] for r in result]),
                     "torch_rss": median([p[0]["peak_rss_mb"] if p else None for p in peer]),
                     "allreduce": median([r["allreduce_us"] for r in result]),
                     "wait": median([r.get("loader_wait") for r in result])})
    peak_probes.append(gemm_peak()[1])

# Time to 0.89 test accuracy on W2 with 2 ranks (training seconds to the end of that epoch,
# plus start-up to the first step).
def time_to(accuracies, seconds, first):
    total = first or 0
    for accuracy, epoch_seconds in zip(accuracies, seconds):
        total += epoch_seconds
        if accuracy >= 0.89:
            return total
    return None

time_cohort = time_torch = None
if "W2" in WORKLOADS:
    result = cohort_train("W2", 2, 1, epochs=5)
    time_cohort = time_to(result["accuracy"], [e["seconds"] for e in result["epochs"]], result["first_step"])
    peer = torch_train("W2", 2, 1, epochs=5)
    if peer:
        time_torch = time_to([p["test_accuracy"] for p in peer], [p["seconds"] for p in peer], peer[0]["first_step_seconds"])

anatomy = {w: step_anatomy(w) for w in WORKLOADS}
peak_after = gemm_peak()
peak_probes.append(peak_after[1])
peak = {1: max(peak_probes), 2: max(peak_before[2], peak_after[2])}
for r in rows:
    r["mfu"] = r["cohort"] * FLOPS[r["workload"]] / (peak[1] * 1e9 * r["ranks"] * r["threads"]) if r["cohort"] else None
REPORT = report_path(ROOT, "W1-W3")
with open(REPORT, "w") as out:
    out.write("# Benchmark results\n\n")
    out.write(f"Kernels: {kernels_and_cpu(run, COHORT)}.\n\n")
    out.write(f"Produced by `Benchmarks/run.sh --runs {RUNS} --workloads {','.join(WORKLOADS)}" +
              (f" --w3-steps {W3_STEPS}" if W3_STEPS else "") + f"` on {time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} cores; {time.time() - started:.0f} s. Every figure below comes from that one run; the raw output is "
              "in `Benchmarks/last-run.log` (not committed).\n\n")
    out.write(f"GEMM peak measured in the same run (`cohort check-blas --repeats 20`, 1024³ SGEMM, median; the best of "
              f"{len(peak_probes)} measurements, before the matrix, after each workload and at the end: "
              f"{', '.join(f'{x:.0f}' for x in peak_probes)}): **{peak[1]:.0f} GFLOP/s** with 1 thread, "
              f"{peak[2]:.0f} GFLOP/s with 2. Model-FLOP utilisation (MFU) = samples/s × FLOPs per sample "
              f"(W1 {FLOPS['W1']/1e6:.2f} M, W2 {FLOPS['W2']/1e6:.1f} M, W3 {FLOPS['W3']/1e6:.1f} M: 3 × the forward pass) "
              "÷ (1-thread peak × cores used).\n\n")
    out.write("## Training throughput (samples/s)\n\n")
    out.write(f"Median of {RUNS} rounds; each round runs every layout of a workload once, Cohort then PyTorch, so that the "
              "machine's drift over minutes falls on both.\n\n")
    out.write("| workload | layout | Cohort | PyTorch | Cohort / PyTorch | Cohort MFU | start → first step (Cohort / PyTorch) | peak RSS per rank, MB (Cohort / PyTorch) |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        note = f" ({r['steps']} steps)" if r["steps"] else ""
        out.write(f"| {r['workload']}{note} | {r['layout']} | {fmt(r['cohort'])} | {fmt(r['torch'])} | {fmt(r['ratio'], '{:.2f}×')} | "
                  f"{fmt(r['mfu'] and r['mfu'] * 100, '{:.0f}%')} | {fmt(r['first_step'], '{:.2f} s')} / {fmt(r['torch_first_step'], '{:.2f} s')} | "
                  f"{fmt(r['rss'])} / {fmt(r['torch_rss'])} |\n")
    out.write("\n## Scaling 1 → 2 ranks\n\n")
    out.write("Efficiency = 2-rank samples/s ÷ (2 × 1-rank samples/s), from the table above. Taken apart with a third "
              "measurement in the same run: two unsynchronised 1-rank processes started together, one pinned to each core "
              f"(`taskset`, as mpirun binds the ranks), full epoch, one in each round of the rows above, median of {RUNS}. Their summed rate against 2 × one process "
              "alone is what sharing the machine costs (caches, memory bandwidth, the host's other load); the 2-rank run "
              "against it is what running in step costs (the gradient all-reduce, the small all-reduce of the step's flags, "
              "and every step waiting for the slower rank).\n\n")
    out.write("| workload | 1 rank | 2 ranks | efficiency | two unsynchronised processes (sum) | sharing the machine | running in step |\n"
              "|---|---|---|---|---|---|---|\n")
    for workload, pair in pairs.items():
        one = next((r["cohort"] for r in rows if r["workload"] == workload and r["ranks"] == 1 and r["threads"] == 1), None)
        two = next((r["cohort"] for r in rows if r["workload"] == workload and r["ranks"] == 2), None)
        ratio = lambda a, b: a / b * 100 if a and b else None
        out.write(f"| {workload} | {fmt(one)} | {fmt(two)} | {fmt(ratio(two, one and 2 * one), '{:.1f}%')} | {fmt(pair)} | "
                  f"{fmt(ratio(pair, one and 2 * one), '{:.1f}%')} | {fmt(ratio(two, pair), '{:.1f}%')} |\n")
    out.write("\n## Gradient all-reduce and loader\n\n")
    out.write("One 2-rank run per workload with `training.timing_barrier: true` (W1 469 steps, W2 200, W3 40): the gradient "
              "all-reduce is timed after a barrier, as a raw `MPI_Allreduce` is (`cohort check-mpi --floats N`, median of 200), "
              "and the wait for the slower rank is counted apart. Figures per step, ms, rank 0 / rank 1. Cohort sums the "
              "gradients through node shared memory (`training.all_reduce: auto`): each rank adds its half of the buffer "
              "from its peer's memory and writes the sum into both.\n\n")
    out.write("Raw `MPI_Allreduce` twice: repeated back to back on the same buffer (hot), and with the caches left as a "
              "training step leaves them (`check-mpi --cold`: 256 MB streamed through and the buffer written before each "
              "call). The ratios are Cohort's against each.\n\n")
    out.write("| workload | compute (forward, loss, backward) | optimizer update | wait for the slower rank | Cohort's gradient all-reduce (median, slower rank) "
              "| raw MPI_Allreduce of the same bytes (hot / cold) | ratio (hot / cold) | loader wait (share of step time, 2 × 1 epoch run) |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        if r["ranks"] != 2:
            continue
        a = anatomy.get(r["workload"])
        raw_us = raw.get(PARAMETERS[r["workload"]] * 4)
        rewritten = raw_rewrite.get(PARAMETERS[r["workload"]] * 4)
        pair = lambda values: " / ".join(f"{v:.2f}" for v in values)
        if a:
            out.write(f"| {r['workload']} | {pair(a['compute'])} | {pair(a['update'])} | {pair(a['wait'])} | {a['allreduce_ms']:.3f} | "
                      f"{fmt(raw_us and raw_us / 1e3, '{:.3f}')} / {fmt(rewritten and rewritten / 1e3, '{:.3f}')} | "
                      f"{fmt(a['allreduce_ms'] * 1e3 / raw_us if raw_us else None, '{:.2f}×')} / "
                      f"{fmt(a['allreduce_ms'] * 1e3 / rewritten if rewritten else None, '{:.2f}×')} | "
                      f"{fmt(r['wait'], '{:.1f}%')} |\n")
        else:
            out.write(f"| {r['workload']} | — | — | — | — | {fmt(raw_us and raw_us / 1e3, '{:.3f}')} | — | {fmt(r['wait'], '{:.1f}%')} |\n")
    out.write("\nRaw all-reduce times (`cohort check-mpi`, 2 ranks, shared memory): " +
              ", ".join(f"{b} B {t:.1f} µs" for b, t in sorted(raw.items())) + ".\n\n")
    if shared:
        out.write("Cohort's all-reduce outside training, same sizes (`check-mpi`'s `cohort all-reduce` lines, hot / cold): " +
                  ", ".join(f"{b} B {t:.1f} / {fmt(shared_rewrite.get(b), '{:.1f}')} µs" for b, t in sorted(shared.items())) + ".\n\n")
    out.write("## Time to 0.89 test accuracy, W2, 2 ranks\n\n")
    out.write(f"Cohort: {fmt(time_cohort, '{:.1f} s')}; PyTorch DDP: {fmt(time_torch, '{:.1f} s')} "
              "(start-up to first step plus training time to the end of the first epoch reaching 0.89; evaluation excluded).\n\n")
    # Scale on paper: ring all-reduce T(n) = 2(n−1)·α + 2(n−1)/n · bytes / β.
    alpha = raw.get(4096, 5.0) * 1e-6 / 2
    beta = 16777216 / (raw.get(16777216, 3000.0) * 1e-6)
    tcp_alpha, tcp_beta = 27e-6 / 2, 16777216 / 12e-3
    out.write("## Scale on paper\n\n")
    out.write(f"Step time at n ranks = compute and update time per step (the slower rank of the 2-rank run above, batch 64 per rank) + ring all-reduce "
              f"2(n−1)·α + 2(n−1)/n · bytes/β. α and β from this run's shared-memory all-reduce (α = {alpha*1e6:.1f} µs, "
              f"β = {beta/1e9:.1f} GB/s) and, for a network, from the TCP figures over simulated hosts measured on this machine kind "
              f"(α = {tcp_alpha*1e6:.1f} µs, β = {tcp_beta/1e9:.2f} GB/s).\n\n")
    out.write("| workload | ranks | compute ms | all-reduce ms (shm / TCP) | communication share (shm / TCP) |\n|---|---|---|---|---|\n")
    for r in rows:
        if r["ranks"] != 2 or not r["cohort"]:
            continue
        a = anatomy.get(r["workload"])
        compute = max(c + u for c, u in zip(a["compute"], a["update"])) * 1e-3 if a else 128 / r["cohort"] - (r["allreduce"] or 0) * 1e-6
        size = PARAMETERS[r["workload"]] * 4
        for n in (8, 64, 512):
            ring = lambda a, b: 2 * (n - 1) * a + 2 * (n - 1) / n * size / b
            s, t = ring(alpha, beta), ring(tcp_alpha, tcp_beta)
            out.write(f"| {r['workload']} | {n} | {compute*1e3:.2f} | {s*1e3:.2f} / {t*1e3:.2f} | "
                      f"{s/(s+compute)*100:.0f}% / {t/(t+compute)*100:.0f}% |\n")
    out.write("\nCommunication dominates where its share passes 50%: the rows above say at which rank count that happens for each "
              "transport. Cohort runs one all-reduce after the backward pass; overlapping it with the backward pass could hide at "
              "most the share shown, and only with a core free to progress it. The model is one rank per node: with several, Cohort "
              "first sums within each node through shared memory (the table above) and the ring runs over nodes, each rank of a node "
              "carrying its slice of the buffer, so read n as the number of nodes.\n")
print(open(REPORT).read())
commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
kernels = kernels_and_cpu(run, COHORT)
records.append([{"workload": r["workload"], "layout": r["layout"], "commit": commit, "date": time.strftime("%Y-%m-%d"),
                 "kernels_and_cpu": kernels, "unit": "samples/s",
                 "command": f"Benchmarks/run.sh --runs {RUNS} --workloads {','.join(WORKLOADS)}",
                 "cohort": {k: v for k, v in {"rate": r["cohort"], "mfu_percent": r["mfu"] * 100 if r["mfu"] else None,
                                              "first_step_ended_s": r["first_step"], "peak_mb_per_rank": r["rss"]}.items() if v is not None},
                 "pytorch": {k: v for k, v in {"rate": r["torch"], "first_step_ended_s": r["torch_first_step"],
                                               "peak_mb_per_rank": r["torch_rss"]}.items() if v is not None}}
                for r in rows])
records.main()
