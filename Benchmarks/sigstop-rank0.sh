#!/usr/bin/env bash
# Issue 30's acceptance for bounded waits, run by hand (minutes, not a CI test): W1 on 2 ranks
# with training.stall_timeout 15, two busy processes loading the machine as on a shared node,
# rank 0 stopped (SIGSTOP) at a random moment 3-12 s in; the job must end within 25 s of the stop,
# with status 1 and a line naming rank 0. Prints one line per try and a summary.
#
#   Benchmarks/sigstop-rank0.sh [TRIES] [SEED]      (defaults 20 and the time)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tries="${1:-20}"
seed="${2:-$(date +%s)}"
RANDOM="$seed"
binary="$(readlink -f "${COHORT_BIN:-$root/.build/release/cohort}")"
work="$(mktemp -d "${TMPDIR:-/tmp}/sigstop.XXXXXX")"
busy=()
cleanup() {
    [ "${#busy[@]}" -gt 0 ] && kill "${busy[@]}" 2>/dev/null || true
    pkill -CONT -f "cohort train $root/configs/fashion-mnist-mlp.yaml" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
milliseconds() { echo $(( $(date +%s%N) / 1000000 )); }
for _ in 1 2; do (while :; do :; done) & busy+=($!); done
echo "seed $seed: $tries tries, stall_timeout 15 s, 2 busy processes"
passed=0
for try in $(seq 1 "$tries"); do
    delay=$(( 3 + RANDOM % 10 ))
    COHORT_PROGRESS=lines "$root/launch/cohort-mpirun" -n 2 train "$root/configs/fashion-mnist-mlp.yaml" \
        --set training.epochs=50 --set training.stall_timeout=15 --set "run_dir=$work/run-$try" \
        > "$work/out-$try" 2> "$work/err-$try" &
    job=$!
    sleep "$delay"
    # Rank 0: the lower pid of the two cohort processes of this try (mpirun started them in order).
    rank0=$(for pid in $(pgrep -f "cohort train $root/configs/fashion-mnist-mlp.yaml .*run_dir=$work/run-$try" || true); do
                [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$binary" ] && echo "$pid"
            done | sort -n | head -n 1)
    stopped=$(milliseconds)
    [ -n "$rank0" ] && kill -STOP "$rank0"
    status=0
    while kill -0 "$job" 2>/dev/null; do
        if [ $(( $(milliseconds) - stopped )) -gt 60000 ]; then kill -CONT "$rank0"; kill "$job"; break; fi
        sleep 0.2
    done
    wait "$job" || status=$?
    took=$(( $(milliseconds) - stopped ))
    [ -n "$rank0" ] && kill -CONT "$rank0" 2>/dev/null || true
    line=$(grep -m1 '^cohort: stall' "$work/err-$try" || true)
    verdict=fail
    if [ "$status" = 1 ] && [ "$took" -lt 25000 ] && echo "$line" | grep -q "not arrived: rank 0 (pid"; then
        verdict=ok; passed=$((passed + 1))
    fi
    printf 'try %2d: stopped %2d s in, ended %d.%d s later, status %s, %s: %s\n' "$try" "$delay" $((took / 1000)) $((took % 1000 / 100)) \
        "$status" "$verdict" "${line:0:110}"
done
echo "$passed of $tries ended within 25 s naming rank 0"
[ "$passed" = "$tries" ]
