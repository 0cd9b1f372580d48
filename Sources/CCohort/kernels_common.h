// What the kernel files share: the header, libm, and the target clones of every hot loop.
// Elementwise kernels over the flat buffers are written in C with restrict pointers so the
// compiler vectorizes them (Swift cannot prove the buffers do not alias); -fno-math-errno
// lets sqrtf become a vector instruction. Each follows the formula in its header comment.
#ifndef COHORT_KERNELS_COMMON_H
#define COHORT_KERNELS_COMMON_H
#include "CCohort.h"
#include <math.h>

// Each hot loop is compiled twice, for x86-64-v3 (AVX2, the vector width every x86 server of
// the last decade has) and for the baseline, and the loader picks one per machine. The file is
// compiled with -ffp-contract=off so both versions round identically: replicas on a mixed
// cluster stay bitwise equal. -fno-builtin-memcpy/-memset keep im2col's runs (a few dozen floats)
// as inline vector copies instead of library calls.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTORIZED
#endif

// expf is the one transcendental clang maps to libmvec's vector versions here (tanhf and erff
// stay scalar calls), so tanh and erf are written through it: the loops below run 8 lanes wide.

static inline __attribute__((unused)) float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
// tanh x = 1 − 2 / (e^{2x} + 1): exact limits ±1, absolute error ~1e-7 near 0.
static inline __attribute__((unused)) float tanh_(float x) { return 1.0f - 2.0f / (expf(2.0f * x) + 1.0f); }
// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), odd in x.
static inline __attribute__((unused)) float erf_(float x) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * expf(-a * a);
    return x < 0.0f ? -y : y;
}

// 1 when every x[i] is finite: x·0 is ±0 for a finite x and NaN for ±inf and NaN, and a sum of
// zeros stays 0 (a sum of the values themselves could overflow). Eight lanes, so it vectorizes.
static inline __attribute__((unused)) void add_probes(float lanes[8], const float *restrict x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += x[i + l] * 0.0f;
    for (; i < n; i++) lanes[0] += x[i] * 0.0f;
}

static inline __attribute__((unused)) int probes_finite(const float lanes[8]) {
    float total = 0.0f;
    for (int l = 0; l < 8; l++) total += lanes[l];
    return total == 0.0f;
}

#endif
