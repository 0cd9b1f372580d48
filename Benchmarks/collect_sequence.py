"""The sequence workloads (W5, W6, W7) of Benchmarks/run.sh: Cohort beside the PyTorch recipe in
Benchmarks/pytorch_sequence.py, in rounds (every layout once, Cohort then PyTorch, then the
next layout): one record per workload and layout appended to Benchmarks/results/records.jsonl
(results.py makes RESULTS.md from them), the round's full reading in Benchmarks/results/DATE-COMMIT-sequence.md.

Per layout (1 rank × 1 thread, 1 rank × 2 threads, 2 ranks × 1 thread): tokens/s over steps
11 to STEPS (median over rounds), model-FLOP utilisation against the GEMM peak measured in the
same run (6 × parameters per token plus attention's 12 · layers · T · width), process start to
first step, peak memory per rank; greedy generation tokens/s (batch 1, 500 tokens after a
64-token prompt, key/value cache) for W6's shape; W7 at 2 ranks once more with its blocks
computed again in backward on both sides (memory against time); and, with COHORT_BENCH_FULL=1, the
validation loss of the full 2-rank recipe (W5 1,000 steps, W6 2,000) for both.
"""
import json, os, re, statistics, subprocess, time

from benchlib import kernels_and_cpu, logged_runner, report_path
import results as records

ROOT = os.environ["COHORT_BENCH_ROOT"]
PYTHON = os.environ.get("COHORT_BENCH_PYTHON", "")
RUNS = int(os.environ.get("COHORT_BENCH_RUNS", "3"))
STEPS = int(os.environ.get("COHORT_BENCH_SEQUENCE_STEPS", "200"))
FULL = os.environ.get("COHORT_BENCH_FULL", "0") == "1"
WORKLOADS = [w for w in os.environ.get("COHORT_BENCH_WORKLOADS", "W5,W6").split(",") if w in ("W5", "W6", "W7")]
COHORT = os.path.join(ROOT, ".build/release/cohort")
MPIRUN = os.path.join(ROOT, "launch/cohort-mpirun")
CONFIGS = {"W5": "configs/kjv-char-lstm.yaml", "W6": "configs/kjv-char-gpt.yaml", "W7": "configs/kjv-char-gpt-medium.yaml"}
PARAMETERS = {"W5": 876287, "W6": 809600, "W7": 10770048}
ATTENTION = {"W5": 0, "W6": 12 * 4 * 64 * 128, "W7": 12 * 6 * 256 * 384}
FLOPS = {w: 6 * PARAMETERS[w] + ATTENTION[w] for w in PARAMETERS}
# Windows × tokens per rank and step; the full recipes (W7 is for throughput only).
BATCH = {"W5": (32, 64), "W6": (12, 64), "W7": (8, 256)}
FULL_STEPS = {"W5": 1000, "W6": 2000}
LAYOUTS = [("1 rank × 1 thread", 1, 1), ("1 rank × 2 threads", 1, 2), ("2 ranks × 1 thread", 2, 1)]
# W7 also with its blocks computed again in backward, on both sides (Cohort's training.recompute:
# blocks; torch.utils.checkpoint per block), at 2 ranks: memory against time.
RECOMPUTED = "2 ranks × 1 thread, blocks recomputed"
def layouts(workload):
    return LAYOUTS + ([(RECOMPUTED, 2, 1)] if workload == "W7" else [])
run = logged_runner(ROOT, os.path.join(ROOT, "Benchmarks/last-run-sequence.log"))


def cohort(workload, ranks, threads, steps, evaluate=False, recompute=False):
    command = [MPIRUN, "-n", str(ranks), "train", CONFIGS[workload], "--set", f"training.max_steps={steps}",
               "--set", f"run_dir=/tmp/cohort-bench/{workload}-{ranks}-{threads}", "--set", "tensorboard=false",
               "--set", "checkpoint.every_steps=0", "--log-every", "10"] + (["--set", "training.recompute=blocks"] if recompute else [])
    if not evaluate:
        command += ["--set", "data.test=null"]
    out = run(command, {"OPENBLAS_NUM_THREADS": str(threads), "COHORT_PROGRESS": "lines"})
    rates = {int(s): float(r) for s, r in re.findall(r"step (\d+)/\d+ loss [\d.]+ lr [\d.e-]+ tokens/s (\d+)", out)}
    tokens_per_step = ranks * BATCH[workload][0] * BATCH[workload][1]
    rate = None
    if 10 in rates and steps in rates:
        # The progress rate is cumulative from the first step: take steps 11 … STEPS apart.
        elapsed = lambda s: s * tokens_per_step / rates[s]
        rate = (steps - 10) * tokens_per_step / (elapsed(steps) - elapsed(10))
    first = re.search(r"process start to first step ([\d.]+) s", out)
    began = re.search(r"the first step began ([\d.]+) s after process start", out)
    memory = re.search(r"peak resident memory per rank: ([^;\n]+)", out)
    loss = re.search(r"evaluation after \d+ steps: loss ([\d.]+)", out)
    return {"tokens_per_second": rate, "first_step_seconds": float(first.group(1)) if first else None,
            "setup_seconds": float(began.group(1)) if began else None,
            "peak_rss_mb": max(float(x) for x in re.findall(r"(\d+) MB", memory.group(1))) if memory else None,
            "validation_loss": float(loss.group(1)) if loss else None}


def pytorch(workload, ranks, threads, steps, evaluate=False, recompute=False):
    if not PYTHON:
        return {}
    out = run([PYTHON, os.path.join(ROOT, "Benchmarks/pytorch_sequence.py"), "--workload", workload, "--data", os.path.join(ROOT, "data/kjv"),
               "--processes", str(ranks), "--threads", str(threads), "--steps", str(steps)] + (["--evaluate"] if evaluate else [])
              + (["--checkpoint-blocks"] if recompute else []),
              {"OMP_NUM_THREADS": str(threads)})
    lines = [l for l in out.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def gemm_peak():
    out = run([COHORT, "check-blas", "--repeats", "20"], {"OPENBLAS_NUM_THREADS": "1"})
    return float(re.search(r"sgemm\s+1024×\s*1024×\s*1024:\s+([\d.]+)", out).group(1))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"


started = time.time()
# The commit the release build was made from (run.sh builds it before this script starts).
commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
kernels = kernels_and_cpu(run, COHORT)
peaks = [gemm_peak()]
results = {w: {name: {"cohort": [], "pytorch": []} for name, _, _ in layouts(w)} for w in WORKLOADS}
for round_ in range(RUNS):
    for workload in WORKLOADS:
        for name, ranks, threads in layouts(workload):
            recompute = name == RECOMPUTED
            results[workload][name]["cohort"].append(cohort(workload, ranks, threads, STEPS, recompute=recompute))
            results[workload][name]["pytorch"].append(pytorch(workload, ranks, threads, STEPS, recompute=recompute))
        peaks.append(gemm_peak())
peak = max(peaks)

generation = {}
if "W6" in WORKLOADS:
    checkpoint = "/tmp/cohort-bench/W6-generation"
    run([MPIRUN, "-n", "1", "train", CONFIGS["W6"], "--set", "training.max_steps=10", "--set", "data.test=null",
         "--set", f"run_dir={checkpoint}", "--set", "tensorboard=false"], {"OPENBLAS_NUM_THREADS": "1"})
    prompt = open(os.path.join(ROOT, "data/kjv/kjv.txt"), encoding="utf-8").read()[:64]
    cohort_rates, torch_rates = [], []
    for _ in range(RUNS):
        out = run([COHORT, "generate", f"{checkpoint}/checkpoints/checkpoint-00000010.h5", "--prompt", prompt, "--tokens", "500", "--greedy"],
                  {"OPENBLAS_NUM_THREADS": "1"})
        match = re.search(r"in [\d.]+ s: (\d+) tokens/s", out)
        cohort_rates.append(float(match.group(1)) if match else None)
        if PYTHON:
            out = run([PYTHON, os.path.join(ROOT, "Benchmarks/pytorch_sequence.py"), "--workload", "W6", "--data",
                       os.path.join(ROOT, "data/kjv"), "--generate"], {"OMP_NUM_THREADS": "1"})
            lines = [l for l in out.splitlines() if l.startswith("{")]
            torch_rates.append(json.loads(lines[-1])["generation_tokens_per_second"] if lines else None)
    generation = {"cohort": median(cohort_rates), "pytorch": median(torch_rates)}

full = {}
if FULL:
    for workload in (w for w in WORKLOADS if w in FULL_STEPS):
        full[workload] = {"cohort": cohort(workload, 2, 1, FULL_STEPS[workload], evaluate=True),
                          "pytorch": pytorch(workload, 2, 1, FULL_STEPS[workload], evaluate=True)}

lines = ["# Sequence workloads: Cohort beside PyTorch", "",
         f"Kernels: {kernels}.", "",
         f"`Benchmarks/run.sh --workloads {','.join(WORKLOADS)} --runs {RUNS} --sequence-steps {STEPS}{' --full' if FULL else ''}` at commit {commit}, "
         f"{time.strftime('%Y-%m-%d')}, {(time.time() - started) / 60:.0f} min; "
         f"GEMM peak (1 thread, 1024³, best of {len(peaks)} probes: {', '.join(f'{p:.0f}' for p in peaks)}) {peak:.0f} GFLOP/s. "
         f"Tokens/s over steps 11–{STEPS}, median of {RUNS} rounds (each round: every layout once, Cohort then PyTorch). "
         f"MFU counts 6 × parameters per token plus attention's 12 · layers · T · width (W5 {FLOPS['W5'] / 1e6:.2f}, W6 {FLOPS['W6'] / 1e6:.2f}, W7 {FLOPS['W7'] / 1e6:.2f} MFLOP per token) "
         "against the 1-thread peak times the threads in use; MFU counts the model's FLOPs only, so recomputed blocks lower it. "
         "PyTorch: the same recipes in `Benchmarks/pytorch_sequence.py`, DDP over gloo. Peak memory in decimal MB (10⁶ bytes) on both sides.", ""]
for workload in WORKLOADS:
    lines += [f"## {workload} (`{CONFIGS[workload]}`)", "",
              "| layout | Cohort tokens/s | PyTorch tokens/s | ratio | Cohort MFU | PyTorch MFU | start → end of first step (Cohort / PyTorch) | start → first step begins (Cohort / PyTorch) | peak memory per rank (Cohort / PyTorch) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, ranks, threads in layouts(workload):
        c = results[workload][name]["cohort"]
        p = results[workload][name]["pytorch"]
        ct, pt = median([r.get("tokens_per_second") for r in c]), median([r.get("tokens_per_second") for r in p])
        cores = ranks * threads
        mfu = lambda rate: None if rate is None else rate * FLOPS[workload] / (peak * 1e9 * cores) * 100
        lines.append(f"| {name} | {fmt(ct)} | {fmt(pt)} | {fmt(ct / pt if ct and pt else None, 2)}× | {fmt(mfu(ct), 0)} % | {fmt(mfu(pt), 0)} % | "
                     f"{fmt(median([r.get('first_step_seconds') for r in c]), 2)} s / {fmt(median([r.get('first_step_seconds') for r in p]), 2)} s | "
                     f"{fmt(median([r.get('setup_seconds') for r in c]), 2)} s / {fmt(median([r.get('setup_seconds') for r in p]), 2)} s | "
                     f"{fmt(median([r.get('peak_rss_mb') for r in c]))} / {fmt(median([r.get('peak_rss_mb') for r in p]))} MB |")
    if workload in full:
        lines += ["", f"Full recipe on 2 ranks ({FULL_STEPS[workload]} steps): validation loss Cohort "
                  f"{fmt(full[workload]['cohort'].get('validation_loss'), 4)}, PyTorch {fmt(full[workload]['pytorch'].get('validation_loss'), 4)} nats/token; "
                  f"tokens/s Cohort {fmt(full[workload]['cohort'].get('tokens_per_second'))}, PyTorch {fmt(full[workload]['pytorch'].get('tokens_per_second'))}."]
    lines.append("")
if generation:
    ratio = generation["cohort"] / generation["pytorch"] if generation.get("cohort") and generation.get("pytorch") else None
    lines += ["## Generation (W6's shape, greedy, batch 1, 500 tokens after a 64-token prompt, 1 thread)", "",
              f"Cohort {fmt(generation['cohort'])} tokens/s, PyTorch {fmt(generation.get('pytorch'))} tokens/s "
              f"(the same loop: key/value cache, newest half kept when the 64-token context is full): {fmt(ratio, 2)}×.", ""]
with open(os.environ.get("COHORT_BENCH_SEQUENCE_OUTPUT") or report_path(ROOT, "sequence"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))


def figures(rows, rate_peak, cores, workload):
    rate = median([r.get("tokens_per_second") for r in rows])
    found = {"rate": rate, "mfu_percent": None if rate is None else rate * FLOPS[workload] / (rate_peak * 1e9 * cores) * 100,
             "first_step_ended_s": median([r.get("first_step_seconds") for r in rows]),
             "first_step_began_s": median([r.get("setup_seconds") for r in rows]),
             "peak_mb_per_rank": median([r.get("peak_rss_mb") for r in rows])}
    return {k: v for k, v in found.items() if v is not None}


records.append([{"workload": workload, "layout": name, "commit": commit, "date": time.strftime("%Y-%m-%d"), "kernels_and_cpu": kernels,
                 "unit": "tokens/s", "command": f"Benchmarks/run.sh --workloads {','.join(WORKLOADS)} --runs {RUNS} --sequence-steps {STEPS}",
                 "cohort": figures(results[workload][name]["cohort"], peak, ranks * threads, workload),
                 "pytorch": figures(results[workload][name]["pytorch"], peak, ranks * threads, workload)}
                for workload in WORKLOADS for name, ranks, threads in layouts(workload)])
records.main()
