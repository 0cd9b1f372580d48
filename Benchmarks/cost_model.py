#!/usr/bin/env python3
"""Step time and memory per node of Cohort's data parallelism at cluster scale, from figures
measured on this machine (2 cores, simulated hosts over veth pairs shaped with tc).

    python3 Benchmarks/cost_model.py > /tmp/table.md

Every input below names the command that measured it (Benchmarks/results/2026-12-05-sequence.md has the
runs). The model, per optimizer step on n nodes x r ranks per node:

  compute       C: forward, loss and backward of one rank's micro-batches (measured, 1 thread)
                plus the optimizer update (measured; divided by r with node_shared)
  node sum      every rank sums its 1/r slice out of the node's r gradient segments and writes
                the sum back: 8N bytes of memory traffic per rank, at the per-core memory
                bandwidth measured here (b_core), so the time does not grow with r
  across nodes  the r ranks of a node all-reduce their slices with the other nodes' (a ring):
                2(n-1) alpha + 2(n-1)/n * gradient bytes / beta, the r slices sharing the
                node's link; gradient bytes = 4N (2N with compress: bf16)
  overlap       none: the node shared-memory sum starts after backward (Cohort overlaps only
                the plain MPI_Allreduce path, one rank per node)

Memory per node for model state (parameters, gradients, AdamW moments; weight decay is kept
as ranges of whole tensors, no bytes per parameter):
  replicated   r x 16N bytes
  node_shared  16N + 4L r bytes with one micro-batch per step (one gradient sum per node, each
               rank's scratch for its largest layer's L parameters); 12N + 4N r with
               accumulation (one gradient buffer per rank).
"""

# Link figures: `launch/netns-hosts.sh up 2 [--rate 1gbit]`, then
# `launch/netns-hosts.sh mpirun -np 2 $PWD/.build/release/cohort check-mpi --repeats 20`:
# alpha from the 4 KiB all-reduce (time / 2 messages), beta from the 16 MiB one's bus bandwidth.
# Measured 2026-12-04 (release build of 10d7c88's tree): 1 Gbit/s: 4 KiB in 30.5 µs, 16 MiB in
# 209.6 ms (bus bandwidth 0.08 GB/s); unshaped: 4 KiB in 35.0 µs, 16 MiB in 10.2 ms (1.64 GB/s);
# 10 Gbit/s (release build of 1b1c546's tree): 4 KiB in 25.5 µs, 16 MiB in 17.8 ms (0.94 GB/s).
LINKS = {
    "1 Gbit/s": dict(alpha=15.3e-6, beta=0.080e9),
    "10 Gbit/s": dict(alpha=12.8e-6, beta=0.94e9),
    "unshaped veth (1.6 GB/s)": dict(alpha=17.5e-6, beta=1.64e9),
}

# Per-core memory bandwidth of the node sum: gpt-100m on 2 ranks of one node, "summing within
# the node" 24.8 ms per step from the run's last lines (8N bytes per rank: 27.6 GB/s).
NODE_SUM = dict(parameters=85_449_216, seconds=0.0248)

# Per-rank figures at 1 thread, batch as shipped (measured in this session, see Benchmarks/results/2026-12-05-sequence.md).
WORKLOADS = {
    # name: parameters, compute seconds per step per rank, update seconds per step (replicated, 1 rank)
    # 2 hosts × 1 rank at 1 Gbit/s (the "per step by rank" line): W2 300 steps, W6 100, W7 12;
    # gpt-100m from its 3-step replicated run on 2 ranks (2 micro-batches of 4 windows).
    # largest: the parameters of the largest top-level layer (W2's first dense layer, a transformer block).
    "W2": dict(parameters=121_930, compute=11.8e-3, update=0.05e-3, unit="samples", per_step=64, largest=102_464),
    "W6": dict(parameters=809_600, compute=48.8e-3, update=1.0e-3, unit="tokens", per_step=12 * 64, largest=198_272),
    "W7": dict(parameters=10_770_048, compute=1.407, update=18.5e-3, unit="tokens", per_step=8 * 256, largest=1_774_464),
    "gpt-100m": dict(parameters=85_449_216, compute=10.51, update=0.130, unit="tokens", per_step=8 * 256, largest=7_087_872),
}

NODES = [8, 64, 512]
RANKS_PER_NODE = 64


def step_time(workload, nodes, link, compress):
    w, l = WORKLOADS[workload], LINKS[link]
    n = w["parameters"]
    b_core = 8 * NODE_SUM["parameters"] / NODE_SUM["seconds"]
    node_sum = 8 * n / b_core
    gradient_bytes = (2 if compress else 4) * n
    across = 2 * (nodes - 1) * l["alpha"] + 2 * (nodes - 1) / nodes * gradient_bytes / l["beta"]
    compute = w["compute"] + w["update"] / RANKS_PER_NODE
    return compute, node_sum, across


def main():
    missing = [name for name, link in LINKS.items() if None in link.values()] + \
              [name for name, w in WORKLOADS.items() if None in w.values()] + (["node sum"] if NODE_SUM["seconds"] is None else [])
    if missing:
        raise SystemExit(f"cost_model: measure these first: {', '.join(missing)}")
    print(f"| workload | nodes × {RANKS_PER_NODE} ranks | link | compute ms | node sum ms | across nodes ms (fp32 / bf16) | "
          "step ms (fp32 / bf16) | communication share (fp32 / bf16) | global batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workload, w in WORKLOADS.items():
        for nodes in NODES:
            for link in LINKS:
                compute, node_sum, across = step_time(workload, nodes, link, False)
                _, _, across16 = step_time(workload, nodes, link, True)
                step, step16 = compute + node_sum + across, compute + node_sum + across16
                print(f"| {workload} | {nodes} | {link} | {compute * 1e3:.1f} | {node_sum * 1e3:.2f} | "
                      f"{across * 1e3:.1f} / {across16 * 1e3:.1f} | {step * 1e3:.1f} / {step16 * 1e3:.1f} | "
                      f"{(node_sum + across) / step:.0%} / {(node_sum + across16) / step16:.0%} | "
                      f"{nodes * RANKS_PER_NODE * w['per_step']:,} {w['unit']} |")
    print()
    print(f"| workload | parameters | model state per node, replicated ({RANKS_PER_NODE} ranks) | node_shared, one micro-batch | ratio | "
          "node_shared, accumulating | ratio |")
    print("|---|---|---|---|---|---|---|")
    for workload, w in WORKLOADS.items():
        n, r = w["parameters"], RANKS_PER_NODE
        replicated, summed, accumulating = r * 16 * n, 16 * n + 4 * w["largest"] * r, 12 * n + 4 * n * r
        print(f"| {workload} | {n:,} | {replicated / 1e9:.2f} GB | {summed / 1e9:.2f} GB | {summed / replicated:.1%} | "
              f"{accumulating / 1e9:.2f} GB | {accumulating / replicated:.0%} |")


if __name__ == "__main__":
    main()
