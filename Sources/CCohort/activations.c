// GELU (erf and tanh forms) and the causal softmax.
#include "kernels_common.h"

// GELU, the exact erf form: y = x·Φ(x), Φ(x) = ½(1 + erf(x/√2)); dy/dx = Φ(x) + x·φ(x). Its
// value and slope share e^{−x²/2} (`exp_`), erf's term and φ's.
static inline __attribute__((always_inline)) float gelu_value(float x, float *slope) {
    const float u = x * 0.70710678f, e = exp_(-u * u);
    const float cdf = 0.5f * (1.0f + erf_given(u, e));
    *slope = cdf + x * (0.39894228f * e);
    return x * cdf;
}

// GELU, the tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate="tanh"):
// y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³); dy/dx = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²).
// Written through s = ½(1 + tanh u) = 1 / (1 + e^{−2u}) and 1 − s = e^{−2u}·s, so that neither
// 1 + t (u ≪ 0) nor 1 − t (u ≫ 0) is a difference of nearly equal numbers: y = x·s,
// dy/dx = s + 2x·s(1 − s)·du/dx.
static inline __attribute__((always_inline)) float gelu_tanh_value(float x, float *slope) {
    const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
    const float e = exp_(-2.0f * u);
    const float s = 1.0f / (1.0f + e);
    const float du = 0.7978845608f * (1.0f + 0.134145f * x * x);
    *slope = s + 2.0f * x * (s * (e * s)) * du;
    return x * s;
}

// Each form four ways: y; dx = dy·f'(x); y and f'(x) both (a Transformer block's backward, which
// needs the output again and then the slope); dx = dy·f'(x) from that slope. The same expressions
// in all four, so a slope kept and a slope computed have the same bits.
#define GELU_KERNELS(form, value)                                                                              \
    VECTORIZED void cohort_##form##_forward(const float *restrict x, float *restrict y, long n) {              \
        for (long i = 0; i < n; i++) {                                                                         \
            float slope;                                                                                       \
            y[i] = value(x[i], &slope);                                                                        \
        }                                                                                                      \
    }                                                                                                          \
    VECTORIZED void cohort_##form##_backward(const float *restrict x, const float *restrict dy,               \
                                             float *restrict dx, long n) {                                     \
        for (long i = 0; i < n; i++) {                                                                         \
            float slope;                                                                                       \
            (void)value(x[i], &slope);                                                                         \
            dx[i] = dy[i] * slope;                                                                             \
        }                                                                                                      \
    }                                                                                                          \
    VECTORIZED void cohort_##form##_forward_slope(const float *restrict x, float *restrict y,                 \
                                                  float *restrict slope, long n) {                             \
        for (long i = 0; i < n; i++) y[i] = value(x[i], &slope[i]);                                            \
    }

GELU_KERNELS(gelu, gelu_value)
GELU_KERNELS(gelu_tanh, gelu_tanh_value)

// Softmax cross-entropy over `batch` rows of `classes` logits (SoftmaxCrossEntropy.swift):
// target t_k = `on` at the row's label, `off` elsewhere; log p_k = z_k − max − log Σ e^{z − max};
// the row's loss −Σ_k t_k·log p_k in double, k in order; gradient (when not NULL) (p_k − t_k)·scale.
// The maximum and the sum in 8 lanes, as the softmax rows below. Returns the loss summed over
// the rows; `correct` counts rows whose first largest logit is the label.
VECTORIZED
double cohort_softmax_cross_entropy(const float *restrict logits, const int *restrict labels, long batch, long classes,
                                    float on, float off, float *restrict gradient, float scale, long *correct) {
    double total = 0;
    long right = 0;
    for (long row = 0; row < batch; row++) {
        const float *restrict z = logits + row * classes;
        const long label = labels[row];
        const float maximum = lane_max(z, classes);
        long argmax = 0;
        while (argmax < classes && !(z[argmax] == maximum)) argmax++;
        if (argmax == classes) argmax = 0;  // NaN at z[0]: no logit equals the maximum
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long k = 0;
        for (; k + 8 <= classes; k += 8)
            for (int l = 0; l < 8; l++) lanes[l] += exp_(z[k + l] - maximum);
        for (; k < classes; k++) lanes[k & 7] += exp_(z[k] - maximum);
        const float log_sum = logf(lane_tree(lanes));
        double loss = 0;
        for (k = 0; k < classes; k++) loss -= (double)((k == label ? on : off) * (z[k] - maximum - log_sum));
        if (gradient)
            for (k = 0; k < classes; k++)
                gradient[row * classes + k] = (exp_(z[k] - maximum - log_sum) - (k == label ? on : off)) * scale;
        total += loss;
        if (argmax == label) right++;
    }
    *correct = right;
    return total;
}

// y[i] = e^{x[i]} by `exp_`, the exponential every kernel here shares (its test reads it this way).
VECTORIZED
void cohort_exp(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = exp_(x[i]);
}

// dx[i] = dy[i] · slope[i] (a slope from `…_forward_slope`); dx may be dy.
VECTORIZED
void cohort_multiply(const float *dy, const float *restrict slope, float *dx, long n) {
    for (long i = 0; i < n; i++) dx[i] = dy[i] * slope[i];
}

// Softmax of row[0 .. count) in place; row[count .. length) (future positions) set to 0. The
// maximum and the sum run in 8 lanes (element j in lane j mod 8), the sum's added in a fixed
// tree (`lane_tree`): a strict left-to-right sum does not vectorize, and a row of T = 64 had
// spent most of its time there (0.34 → 0.16 ms for W6's 3,072 rows of a block). The
// exponentials run on to `count` rounded up to 16 (within `length`) with 0 past `count`, so
// that none is left to a scalar remainder loop (with 16-lane vectors, most of a causal row's
// time: 0.14 → 0.10 ms); the sum adds those zeros, which leaves each lane's bits as they were.
VECTORIZED
void cohort_softmax_prefix(float *restrict row, long count, long length) {
    const float maximum = lane_max(row, count);
    const long whole = (count + 15) / 16 * 16 < length ? (count + 15) / 16 * 16 : length;
    long j;
    for (j = 0; j < whole; j++) {
        const float e = exp_(row[j] - maximum);  // computed for every j, kept for j < count
        row[j] = j < count ? e : 0.0f;
    }
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (j = 0; j + 8 <= whole; j += 8)
        for (int l = 0; l < 8; l++) lanes[l] += row[j + l];
    for (; j < whole; j++) lanes[j & 7] += row[j];
    const float inverse = 1.0f / lane_tree(lanes);
    for (j = 0; j < whole; j++) row[j] *= inverse;
    for (; j < length; j++) row[j] = 0.0f;
}

// The softmax's backward over rows 0 … rows − 1 of a T × T block: dS[i][j] = p[i][j]·(dp[i][j] − Σ_j'
// dp[i][j']·p[i][j']) for j < count_i (count_i = min(i + 1, keys) when causal, else keys) and 0
// for count_i ≤ j < T. The sum in 8 lanes (`lane_tree`); `ds` may be `dp` (a row's sum is taken before the row is written).
VECTORIZED
void cohort_softmax_backward(const float *p, const float *dp, float *ds, long T, long rows, int causal, long keys) {
    for (long i = 0; i < rows; i++) {
        const long count = causal ? (i + 1 < keys ? i + 1 : keys) : keys;
        const float *pr = p + i * T, *dpr = dp + i * T;
        float *dsr = ds + i * T;
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long j = 0;
        for (; j + 8 <= count; j += 8)
            for (int l = 0; l < 8; l++) lanes[l] += dpr[j + l] * pr[j + l];
        for (; j < count; j++) lanes[j & 7] += dpr[j] * pr[j];
        const float dot = lane_tree(lanes);
        for (j = 0; j < count; j++) dsr[j] = pr[j] * (dpr[j] - dot);
        for (j = count; j < T; j++) dsr[j] = 0.0f;
    }
}

// The products of one (sample, head) pair of attention, without BLAS: at T = 64 and a head of
// 32, OpenBLAS spent as long on each call's set-up, packing and zeroing of C as on its 131 K
// multiply-adds, and computed the causal half that the mask then drops.
//
// C[i][j] = alpha · Σ_k A(i, k) · B[k][j] for i < M, j < N, where A(i, k) = a[i·a_row + k·a_col]
// (a row-major A, or a transposed view) and B's rows are `ldb` apart. Each element is one
// fused multiply-add chain in k order, times alpha at the end: its bits depend on nothing else.
// Tiles of 6 rows × 16 columns (`fma_tile6x16`, as the LSTM recurrence's); a last partial
// column tile is read from a zero-padded copy, a last partial row tile repeats its last row.
// `span` skips what a causal mask makes zero, per tile of rows i0 … i1:
//   COHORT_SPAN_ALL     every k, every column;
//   COHORT_SPAN_LOWER   every k; column tiles that start past i1 are not written (scores, whose
//                       future the softmax sets);
//   COHORT_SPAN_PREFIX  k ≤ i1 only (A(i, k) = 0 for k > i: causal probabilities or their gradient);
//   COHORT_SPAN_SUFFIX  k ≥ i0 only (A(i, k) = 0 for k < i: their transposes).
// A skipped term is a product with an exact zero, so the sum is the same.
VECTORIZED
void cohort_attention_product(long M, long N, long K, float alpha, const float *a, long a_row, long a_col,
                              const float *b, long ldb, float *c, long ldc, int span, float *restrict padded) {
    for (long j0 = 0; j0 < N; j0 += 16) {
        const long width = N - j0 < 16 ? N - j0 : 16;
        const float *panel = b + j0;
        long ldp = ldb;
        if (width < 16) {  // the last columns, zero-padded to 16 in `padded` (K × 16 floats)
            for (long k = 0; k < K; k++)
                for (long j = 0; j < 16; j++) padded[k * 16 + j] = j < width ? b[k * ldb + j0 + j] : 0.0f;
            panel = padded;
            ldp = 16;
        }
        for (long i0 = 0; i0 < M; i0 += 6) {
            const long i1 = i0 + 5 < M - 1 ? i0 + 5 : M - 1;
            if (span == COHORT_SPAN_LOWER && j0 > i1) continue;
            const long k0 = span == COHORT_SPAN_SUFFIX ? (i0 < K ? i0 : K) : 0;
            const long k1 = span == COHORT_SPAN_PREFIX ? (i1 + 1 < K ? i1 + 1 : K) : K;
            long rows[6];
            for (int r = 0; r < 6; r++) rows[r] = i0 + r <= i1 ? i0 + r : i1;
            float out[6][32];
            fma_tile6x16(a, a_row, a_col, rows, panel, ldp, k0, k1, out, 0);
            for (long r = 0; i0 + r <= i1; r++) {
                float *restrict row = c + (i0 + r) * ldc + j0;
                if (width == 16) {
                    for (int j = 0; j < 16; j++) row[j] = alpha * out[r][j];
                } else {
                    for (long j = 0; j < width; j++) row[j] = alpha * out[r][j];
                }
            }
        }
    }
}

// t[k][j] = x[j·ldx + k] for j ≥ j0 or k ≥ k0 (what the 16 × 16 blocks left).
static void transpose_rest(const float *restrict x, long ldx, long rows, long columns, float *restrict t, long j0, long k0) {
    for (long j = 0; j < rows; j++)
        for (long k = j < j0 ? k0 : 0; k < columns; k++) t[k * rows + j] = x[j * ldx + k];
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
// Blocks of 16 × 16 in registers: 16 rows loaded, 4 rounds of lane shuffles, 16 columns stored.
// One float at a time, a head of W6 (64 × 32) took 0.7 µs alone and up to 3 µs in a training step (its
// stores, 256 bytes apart, stall); a transpose only moves floats, so the bits are the same.
__attribute__((target("avx512f"))) static void transpose_avx512(const float *restrict x, long ldx, long rows, long columns,
                                                                float *restrict t) {
    const long j1 = rows / 16 * 16, k1 = columns / 16 * 16;
    for (long j0 = 0; j0 < j1; j0 += 16)
        for (long k0 = 0; k0 < k1; k0 += 16) {
            __m512 r[16], u[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(x + (j0 + i) * ldx + k0);
            // Rows 2i, 2i + 1 interleaved within each 128-bit lane.
            for (int i = 0; i < 8; i++) {
                u[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                u[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            // r[4g + c], lane L: rows 4g … 4g + 3 of column 4L + c.
            for (int g = 0; g < 4; g++) {
                r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u[4 * g]), _mm512_castps_pd(u[4 * g + 2])));
                r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u[4 * g]), _mm512_castps_pd(u[4 * g + 2])));
                r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u[4 * g + 1]), _mm512_castps_pd(u[4 * g + 3])));
                r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u[4 * g + 1]), _mm512_castps_pd(u[4 * g + 3])));
            }
            // Lanes regrouped twice: 0x88 takes lanes 0 and 2 of each source, 0xdd lanes 1 and 3.
            for (int c = 0; c < 4; c++) {
                u[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
                u[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
                u[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
                u[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
            }
            for (int c = 0; c < 4; c++) {
                r[c] = _mm512_shuffle_f32x4(u[c], u[8 + c], 0x88);
                r[8 + c] = _mm512_shuffle_f32x4(u[c], u[8 + c], 0xdd);
                r[4 + c] = _mm512_shuffle_f32x4(u[4 + c], u[12 + c], 0x88);
                r[12 + c] = _mm512_shuffle_f32x4(u[4 + c], u[12 + c], 0xdd);
            }
            for (int k = 0; k < 16; k++) _mm512_storeu_ps(t + (k0 + k) * rows + j0, r[k]);  // column k0 + k
        }
    transpose_rest(x, ldx, rows, columns, t, j1, k1);  // rows past the blocks, and columns past them
}
#endif

// t[k][j] = x[j·ldx + k] for j < rows, k < columns: a head's keys or values as [columns][rows].
void cohort_transpose(const float *restrict x, long ldx, long rows, long columns, float *restrict t) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (__builtin_cpu_supports("avx512f")) {
        transpose_avx512(x, ldx, rows, columns, t);
        return;
    }
#endif
    transpose_rest(x, ldx, rows, columns, t, 0, 0);
}
