"""Helpers the benchmark scripts share: a logged command runner and a process's age."""
import os
import subprocess


def logged_runner(root, log_path):
    """A function that runs a command in `root` with extra environment, appends the command and
    its output to `log_path`, and returns the output (stdout then stderr)."""
    log = open(log_path, "w")

    def run(command, env=None):
        log.write("$ " + " ".join(command) + "\n")
        result = subprocess.run(command, cwd=root, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        log.write(result.stdout + result.stderr + "\n")
        log.flush()
        return result.stdout + result.stderr

    return run


def process_uptime():
    """Seconds since this process started (from /proc)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        now = float(f.read().split()[0])
    return now - float(fields[19]) / os.sysconf("SC_CLK_TCK")


def kernels_and_cpu(run, cohort):
    """"Cooperlake kernels (the CPU's own: OPENBLAS_CORETYPE unset) on AMD EPYC, family 25, model 17
    (avx512f, avx2)": which OpenBLAS kernel family the benchmark ran and on which CPU."""
    out = run([cohort, "check-blas", "--size", "64", "--repeats", "1"], {"OPENBLAS_NUM_THREADS": "1"})
    family = next((line.split(", ", 1)[1] for line in out.splitlines() if line.startswith("BLAS ") and ", " in line), "unknown kernels")
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    how = f"pinned by OPENBLAS_CORETYPE={pinned}" if pinned else "the CPU's own: OPENBLAS_CORETYPE unset"
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vector = ", ".join(f for f in ("avx512f", "avx512_bf16", "avx2", "fma") if f in flags)
    return (f"{family} ({how}) on {fields.get('model name', 'an unknown CPU')}, family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')} ({vector})")


def report_path(root, name):
    """Benchmarks/results/DATE-COMMIT-NAME.md (…-pinned.md for the environment's pinned kernels; -2, -3, …
    for a later round the same day at the same commit): one round's full reading. Its figures also go to records.jsonl, from which RESULTS.md is made."""
    import subprocess, time
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    suffix = os.environ.get("COHORT_BENCH_OUTPUT_SUFFIX", "")
    stem = os.path.join(root, "Benchmarks", "results", f"{time.strftime('%Y-%m-%d')}-{commit}-{name}{suffix}")
    # A second round at the same commit on the same day (W7 after W5 and W6) gets -2, -3, …: a
    # report is never written over.
    path, round_ = stem + ".md", 1
    while os.path.exists(path):
        round_ += 1
        path = f"{stem}-{round_}.md"
    return path


def output_path(root, name):
    """Benchmarks/NAME.md, or NAME-pinned.md for the environment's pinned kernels (run.sh --kernels)."""
    return os.path.join(root, "Benchmarks", name + os.environ.get("COHORT_BENCH_OUTPUT_SUFFIX", "") + ".md")
