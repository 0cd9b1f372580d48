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

// The sum of 8 lanes in a fixed tree: a sum kept in lanes (element i in lane i mod 8, in order)
// comes out with the same bits in every clone, since each lane's additions are the same scalar ones.
static inline __attribute__((always_inline, unused)) float lane_tree(const float lanes[8]) {
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// The product tile the LSTM recurrence and attention share: out[r][column + j] =
// Σ_{k0 ≤ k < k1} a[rows[r]·a_row + k·a_col] · panel[k·ldp + j], for R rows (6 or 4) and 16
// columns, each element one fused multiply-add chain in k order from 0 (its bits depend on
// nothing else). 2R 8-lane accumulators stay in registers; `rows` may repeat a row.
#define FMA_TILE_X16(R)                                                                                         \
    static inline __attribute__((always_inline, unused)) void fma_tile##R##x16(                                 \
        const float *a, long a_row, long a_col, const long rows[R], const float *restrict panel, long ldp,     \
        long k0, long k1, float out[][32], int column) {                                                       \
        float c[R][16];                                                                                         \
        for (int r = 0; r < R; r++)                                                                             \
            for (int j = 0; j < 16; j++) c[r][j] = 0.0f;                                                        \
        for (long k = k0; k < k1; k++) {                                                                        \
            const float *restrict w = panel + k * ldp;                                                          \
            for (int r = 0; r < R; r++) {                                                                       \
                const float x = a[rows[r] * a_row + k * a_col];                                                 \
                for (int j = 0; j < 16; j++) c[r][j] = fmaf(x, w[j], c[r][j]);                                  \
            }                                                                                                   \
        }                                                                                                       \
        for (int r = 0; r < R; r++)                                                                             \
            for (int j = 0; j < 16; j++) out[r][column + j] = c[r][j];                                          \
    }
FMA_TILE_X16(6)
FMA_TILE_X16(4)

#endif
