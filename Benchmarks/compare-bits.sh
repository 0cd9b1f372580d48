#!/usr/bin/env bash
# Whether two builds of cohort train a shipped config to the same bits: 20 steps on 2 ranks with
# each binary, then every parameter, optimizer-state and buffer tensor of the two checkpoints
# compared byte for byte (h5py; Benchmarks/.venv or COHORT_CHECK_PYTHON).
#
#   Benchmarks/compare-bits.sh OLD_BINARY NEW_BINARY CONFIG.yaml [--set KEY=VALUE ...]
#
# Build the old binary from another commit (git checkout REV && swift build -c release, copy
# .build/release/cohort aside). Prints "CONFIG: N tensors, K differ"; exits 1 when any differ.
# COHORT_COMPARE_HOSTS=2x2 runs each side on 2 simulated hosts × 2 ranks instead (network
# namespaces over TCP, launch/netns-hosts.sh; needs root), so the across-nodes sums are compared too.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 3 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY CONFIG.yaml [--set KEY=VALUE ...]" >&2; exit 64; }
old="$1" new="$2" config="$3"; shift 3
python="${COHORT_CHECK_PYTHON:-$root/Benchmarks/.venv/bin/python}"
work="$(mktemp -d /tmp/cohort-compare-bits.XXXXXX)"
name="$(basename "$config" .yaml)"
hosts="${COHORT_COMPARE_HOSTS:-}"
if [ -n "$hosts" ]; then
    [ "$hosts" = 2x2 ] || { echo "COHORT_COMPARE_HOSTS: only 2x2 (2 hosts × 2 ranks)" >&2; exit 64; }
    "$root/launch/netns-hosts.sh" up 2 >/dev/null
    trap '"$root/launch/netns-hosts.sh" down >/dev/null 2>&1 || true' EXIT
fi
for side in old new; do
    binary="$old"; [ "$side" = new ] && binary="$new"
    arguments=(train "$root/configs/$name.yaml" --set training.max_steps=20 --set run_dir="$work/$side" "$@")
    if [ -n "$hosts" ]; then
        (cd "$root" && OPENBLAS_NUM_THREADS=1 COHORT_SLOTS_PER_HOST=2 COHORT_PROGRESS=lines \
            "$root/launch/netns-hosts.sh" mpirun -np 4 "$binary" "${arguments[@]}") > "$work/$side.log" 2>&1 \
            || { echo "$name: the $side binary failed on 2 × 2 hosts; see $work/$side.log" >&2; exit 1; }
    else
        COHORT_BIN="$binary" COHORT_PROGRESS=lines "$root/launch/cohort-mpirun" -n 2 "${arguments[@]}" > "$work/$side.log" 2>&1 \
            || { echo "$name: the $side binary failed; see $work/$side.log" >&2; exit 1; }
    fi
done
"$python" - "$work" "$name" <<'PY'
import glob, sys
import h5py, numpy as np
work, name = sys.argv[1], sys.argv[2]
a, b = [h5py.File(sorted(glob.glob(f"{work}/{side}/checkpoints/*.h5"))[-1]) for side in ("old", "new")]
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) and n.split("/")[0] in ("parameters", "optimizer", "buffers") else None)
differ = [n for n in names if n not in b or not np.array_equal(a[n][:].view(np.uint8), b[n][:].view(np.uint8))]
print(f"{name}: {len(names)} tensors (parameters, optimizer state, buffers), {len(differ)} differ" + (f": {', '.join(differ[:3])}" if differ else ""))
sys.exit(1 if differ else 0)
PY
