#!/usr/bin/env bash
# The clone check: the C kernels are compiled once per x86-64 level (AVX-512, AVX2, the baseline;
# `VECTORIZED` in Sources/CCohort/kernels_common.h) and the loader picks one per machine, so a
# cluster of mixed CPUs runs different clones. Replicas stay bitwise equal only if every clone
# rounds alike. This builds Tests/Clones/hash.c against the kernels compiled for each level this
# CPU can run (one level each, no dispatch), and against the dispatched build, with the package's
# own C flags, and requires every group's hash to be the same. Run by launch/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(uname -m)" != x86_64 ]; then echo "clone check: SKIPPED (no x86-64 clones on $(uname -m))"; exit 0; fi
cc="$(command -v clang || true)"
[ -n "$cc" ] || cc="$(dirname "$(command -v swift)")/clang"  # the Swift toolchain's, which built the package
[ -x "$cc" ] || { echo "clone check: FAILED (no clang on PATH or beside swift)"; exit 1; }
work="$(mktemp -d /tmp/cohort-clone-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# The package's C flags for CCohort, read from Package.swift so the two cannot drift apart.
read -r -a flags <<<"$(awk '/name: "CCohort"/ { found = 1 } found && /unsafeFlags/ { on = 1 }
    on { while (match($0, /"[^"]*"/)) { printf "%s ", substr($0, RSTART + 1, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) } }
    on && /\]\)/ { exit }' "$root/Package.swift")"
[ "${#flags[@]}" -gt 0 ] || { echo "clone check: FAILED (no unsafeFlags for CCohort in Package.swift)"; exit 1; }
# The include paths the package gets from pkg-config (Package.swift's system libraries).
read -r -a includes <<<"-I $root/Sources/CCohort/include $(pkg-config --cflags ompi-c hdf5-serial openblas)"
kernels=(activations elementwise normalization optimizer products recurrent)

cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for flag in "$@"; do [[ "$cpu_flags" == *" $flag "* ]] || return 1; done; }
levels=(x86-64)
has avx2 fma bmi2 movbe && levels+=(x86-64-v3)
has avx512f avx512bw avx512cd avx512dq avx512vl && levels+=(x86-64-v4)

build() {  # name, then extra compiler flags; the kernels from $sources
    local name="$1"; shift
    mkdir -p "$work/$name"
    for kernel in "${kernels[@]}"; do
        "$cc" "${flags[@]}" "$@" "${includes[@]}" -c "$sources/$kernel.c" -o "$work/$name/$kernel.o"
    done
    "$cc" "${flags[@]}" "$@" "${includes[@]}" "$root/Tests/Clones/hash.c" "$work/$name"/*.o -lm -lmvec -o "$work/$name/hash"
    "$work/$name/hash" >"$work/$name.txt"
}
# Each level alone: the sources with VECTORIZED made empty, compiled with -march=LEVEL.
sources="$work/single"
mkdir -p "$sources"
cp "$root"/Sources/CCohort/*.c "$sources/"
sed 's/^#define VECTORIZED __attribute__.*$/#define VECTORIZED/' "$root/Sources/CCohort/kernels_common.h" >"$sources/kernels_common.h"
if grep -q target_clones "$sources"/*.c "$sources/kernels_common.h"; then
    echo "clone check: FAILED (target_clones left after emptying VECTORIZED: a kernel declares its own clones)"; exit 1
fi
for level in "${levels[@]}"; do build "$level" -march="$level"; done
# The dispatched build, as the package compiles it.
sources="$root/Sources/CCohort"
build dispatched

reference="$work/${levels[0]}.txt"
status=0
for name in "${levels[@]:1}" dispatched; do
    if ! diff -q "$reference" "$work/$name.txt" >/dev/null; then
        echo "clone check: FAILED: $name rounds differently from ${levels[0]}:"
        diff "$reference" "$work/$name.txt" | sed 's/^/  /' || true
        status=1
    fi
done
[ "$status" = 0 ] && echo "clone check: passed: ${levels[*]} and the dispatched build give the same bits ($(wc -l <"$reference") kernel groups)"
exit "$status"
