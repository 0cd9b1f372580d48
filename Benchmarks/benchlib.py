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
