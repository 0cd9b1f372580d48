#!/usr/bin/env bash
# launch/memory-cap.sh MiB COMMAND [ARGUMENT…]
# launch/memory-cap.sh --check        exit status 0 when a cap can be made here, 1 (and why) if not
# Runs COMMAND in a memory cgroup of its own capped at MiB (resident memory and page cache, no
# swap), then reports the cgroup's peak usage on standard error and removes the cgroup. Put it
# after mpirun to cap every rank alone:
#   mpirun -np 2 launch/memory-cap.sh 512 .build/release/cohort train configs/linux-byte-gpt.yaml
# A rank that needs more is killed by the kernel (the job then ends naming it). Needs root
# (or a delegated cgroup) and the cgroup v1 memory controller or cgroup v2. `ulimit -v` is no
# substitute: it caps address space, and OpenBLAS retries its 128 MiB buffer reservations
# forever when they fail.
set -euo pipefail
check=false
if [ "${1:-}" = --check ]; then check=true; set -- 1 true; fi
[ $# -ge 2 ] || { echo "usage: launch/memory-cap.sh MiB COMMAND [ARGUMENT…]" >&2; exit 2; }
mebibytes="$1"; shift
[[ "$mebibytes" =~ ^[0-9]+$ ]] || { echo "memory-cap: MiB must be a whole number, got '$mebibytes'" >&2; exit 2; }
bytes=$((mebibytes * 1024 * 1024))
name="cohort-cap-$$"
if [ -d /sys/fs/cgroup/memory ] && [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    parent=/sys/fs/cgroup/memory
    group="$parent/$name"
    mkdir "$group" || { echo "memory-cap: cannot make $group (root needed)" >&2; exit 1; }
    echo "$bytes" > "$group/memory.limit_in_bytes"
    [ -f "$group/memory.memsw.limit_in_bytes" ] && echo "$bytes" > "$group/memory.memsw.limit_in_bytes"
    peak_file="$group/memory.max_usage_in_bytes"
else
    parent=/sys/fs/cgroup
    [ -f "$parent/cgroup.controllers" ] || parent=/sys/fs/cgroup/unified
    grep -qw memory "$parent/cgroup.controllers" 2>/dev/null \
        || { echo "memory-cap: no cgroup memory controller found under /sys/fs/cgroup" >&2; exit 1; }
    grep -qw memory "$parent/cgroup.subtree_control" 2>/dev/null || echo +memory > "$parent/cgroup.subtree_control" 2>/dev/null || true
    group="$parent/$name"
    mkdir "$group" || { echo "memory-cap: cannot make $group (root or a delegated cgroup needed)" >&2; exit 1; }
    [ -f "$group/memory.max" ] || { rmdir "$group"; echo "memory-cap: the memory controller is not enabled for $parent's children" >&2; exit 1; }
    echo "$bytes" > "$group/memory.max"
    [ -f "$group/memory.swap.max" ] && echo 0 > "$group/memory.swap.max"
    peak_file="$group/memory.peak"
fi
if $check; then rmdir "$group"; exit 0; fi
echo $$ > "$group/cgroup.procs"
status=0
"$@" || status=$?
peak=$(cat "$peak_file" 2>/dev/null || echo 0)
echo "memory-cap: ${OMPI_COMM_WORLD_RANK:+rank $OMPI_COMM_WORLD_RANK: }peak $((peak / 1024 / 1024)) MiB of the $mebibytes MiB cap (resident memory and page cache)" >&2
echo $$ > "$parent/cgroup.procs"
rmdir "$group" 2>/dev/null || true
exit "$status"
