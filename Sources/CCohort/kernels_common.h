// What the kernel files share: the header, libm, and the target clones of every hot loop.
// Elementwise kernels over the flat buffers are written in C with restrict pointers so the
// compiler vectorizes them (Swift cannot prove the buffers do not alias); -fno-math-errno
// lets sqrtf become a vector instruction. Each follows the formula in its header comment.
#ifndef COHORT_KERNELS_COMMON_H
#define COHORT_KERNELS_COMMON_H
#include "CCohort.h"
#include <math.h>

// Each hot loop is compiled three times, for x86-64-v4 (AVX-512: Intel Xeon since Skylake, AMD
// Zen 4 and 5), x86-64-v3 (AVX2, the vector width every x86 server of the last decade has) and
// the baseline, and the loader picks one per machine. The file is compiled with -ffp-contract=off
// and every fused multiply-add is written as `fmaf`, so all clones round identically: each lane
// does the same scalar operations in the same order, whatever the vector width. Replicas on a
// mixed cluster stay bitwise equal. -fno-builtin-memcpy/-memset keep im2col's runs (a few dozen
// floats) as inline vector copies instead of library calls.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define VECTORIZED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTORIZED
#endif

// e^x in float arithmetic alone, so that every clone rounds it the same way and the loops that
// call it vectorize without a library call (libmvec's expf had been one, and whether its AVX2 and
// SSE versions round alike is not promised). Cody–Waite: x = k·ln 2 + r, |r| ≤ ½ ln 2, with
// ln 2 in two parts; e^r by Cephes's expf polynomial (within 2 ulp of e^x on x ∈ [−87, 88]),
// times 2^k built in the exponent bits. x is clamped to [−87, 88] first, so 2^k stays a normal
// float: e^x for x < −87 comes out ≈ 1.6e-38 instead of a denormal or 0, and above 88 ≈ 1.7e38
// instead of ∞, which the callers below (sigmoid, tanh, erf, softmax) cannot tell apart. NaN in, NaN out.
static inline __attribute__((always_inline, unused)) float exp_(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // k = round(x / ln 2) by the 1.5·2²³ trick; the shifter also carries 127, the exponent bias.
    const float shifter = 12582912.0f + 127.0f;
    const float t = x * 1.44269504f + shifter;
    const float k = t - shifter;
    float r = fmaf(k, -0.693359375f, x);
    r = fmaf(k, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    unsigned bits;
    __builtin_memcpy(&bits, &t, 4);
    bits <<= 23;  // t's low mantissa bits hold k + 127 ∈ [1, 254]: the exponent of 2^k
    float scale;
    __builtin_memcpy(&scale, &bits, 4);
    return p * scale;
}

static inline __attribute__((unused)) float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }
// tanh x = 1 − 2 / (e^{2x} + 1): exact limits ±1, absolute error ~1e-7 near 0.
static inline __attribute__((unused)) float tanh_(float x) { return 1.0f - 2.0f / (exp_(2.0f * x) + 1.0f); }
// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), odd in x. `e` is e^{−x²}, which
// GELU's backward shares with the normal density.
static inline __attribute__((unused)) float erf_given(float x, float e) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = fmaf(t, 1.061405429f, -1.453152027f);
    poly = fmaf(poly, t, 1.421413741f);
    poly = fmaf(poly, t, -0.284496736f);
    poly = fmaf(poly, t, 0.254829592f);
    float y = fmaf(-poly * t, e, 1.0f);
    return x < 0.0f ? -y : y;
}
static inline __attribute__((unused)) float erf_(float x) { return erf_given(x, exp_(-x * x)); }

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

// The largest of x[0 .. n), n ≥ 1, in 8 lanes so that it vectorizes (a maximum is exact in any
// order). A NaN at x[0] gives NaN; a NaN elsewhere is passed over, as `x[k] > m ? x[k] : m` does.
static inline __attribute__((always_inline, unused)) float lane_max(const float *restrict x, long n) {
    float lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = x[0];
    long k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) lanes[l] = x[k + l] > lanes[l] ? x[k + l] : lanes[l];
    for (; k < n; k++) lanes[0] = x[k] > lanes[0] ? x[k] : lanes[0];
    float maximum = lanes[0];
    for (int l = 1; l < 8; l++) maximum = lanes[l] > maximum ? lanes[l] : maximum;
    return maximum;
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
