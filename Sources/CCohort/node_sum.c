// The node's gradient sum: every rank adds sources in one fixed order, and the turn-taking
// counters in shared memory.
#include "kernels_common.h"
#include <sched.h>
#include <string.h>

// destinations[d][i] = ((sources[0][i] + sources[1][i]) + sources[2][i]) + … for every d: the
// same order on every rank, so whichever rank sums a slice, every replica gets the same bits.
// A destination may be one of the sources (a rank sums into its own gradients): each block is
// summed into a local accumulator and stored after its last source has been read. Returns
// cohort_all_finite of the sums, checked while each block is in L1 (a separate pass over W3's
// 13 MB of gradients took 1.7 % of a step).
VECTORIZED
int cohort_sum_sources(const float *const *sources, int count, float *const *destinations, int destination_count, long n) {
    enum { block = 2048 };
    float accumulator[block] __attribute__((aligned(64)));
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long start = 0; start < n; start += block) {
        long length = n - start < block ? n - start : block;
        const float *restrict first = sources[0] + start;
        for (long i = 0; i < length; i++) accumulator[i] = first[i];
        for (int source = 1; source < count; source++) {
            const float *restrict next = sources[source] + start;
            for (long i = 0; i < length; i++) accumulator[i] += next[i];
        }
        add_probes(lanes, accumulator, length);
        for (int destination = 0; destination < destination_count; destination++) {
            float *restrict target = destinations[destination] + start;
            for (long i = 0; i < length; i++) target[i] = accumulator[i];
        }
    }
    return probes_finite(lanes);
}

void cohort_sum_turn(float *restrict target, const float *restrict source, long n, int first) {
    if (source) {
        if (first) memcpy(target, source, (size_t)n * sizeof(float));
        else for (long i = 0; i < n; i++) target[i] += source[i];
    } else {
        if (first) memset(target, 0, (size_t)n * sizeof(float));
        else for (long i = 0; i < n; i++) target[i] += 0.0f;
    }
}

void cohort_counter_wait(const long long *counter, long long target) {
    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) sched_yield();
}

void cohort_counter_store(long long *counter, long long value) {
    __atomic_store_n(counter, value, __ATOMIC_RELEASE);
}
