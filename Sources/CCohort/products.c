// Products of a batch's rows by one matrix packed once per call.
#include "kernels_common.h"

// A Dense layer's forward product (x · W) and input gradient (dy · Wᵀ) multiply every row of the
// batch by one matrix (so do the tied head's and the LSTM's input products). OpenBLAS packs that
// matrix again for every call, and Cohort called it once per block of whole samples
// (`RowBlocks`): W3's 12.8 MB kernel was packed 4 times a step, W7's every W 8 times. Here the
// matrix is packed once into panels of 16 columns, and the rows are multiplied by the panels in
// tiles of up to 6 rows × 16 columns held in registers. Each element is one fused multiply-add
// chain in k order, started from C's value, the bias or 0, so its bits depend on nothing but its
// row and its column: not on the rows around it, the blocks, the k chunks (a chain is stored and
// picked up again), the parts the threads take, or the clone the CPU runs (every clone rounds
// each fmaf alike). A micro-batch computes the same rows as the whole batch.

#define PANEL 16
#define KC 256  // a panel's chunk of k, 16 KB: stays in L1 while a block's row tiles pass over it
#define MC 96   // rows per block: their KC-chunk (96 KB) stays in L2 while the panels pass

long cohort_panel_count(long N) { return (N + PANEL - 1) / PANEL; }
long cohort_panel_rows(void) { return MC; }
long cohort_panels_size(long K, long N) { return cohort_panel_count(N) * K * PANEL; }

// Rows k0 … k1 − 1 of panel p of op(B) [K, N] (columns 16p … 16p + 15, zero past N) into
// `panel`, 16 floats per k. op(B) = B [K, N] (row stride ldb ≥ N), or with `transposed` Bᵀ,
// B [N, K] (ldb ≥ K).
static inline __attribute__((always_inline)) void pack_panel(long p, long k0, long k1, long N, const float *restrict b,
                                                              long ldb, int transposed, float *restrict panel) {
    const long n0 = p * PANEL, width = N - n0 < PANEL ? N - n0 : PANEL;
    if (!transposed) {
        for (long k = k0; k < k1; k++)
            for (long j = 0; j < PANEL; j++) panel[(k - k0) * PANEL + j] = j < width ? b[k * ldb + n0 + j] : 0.0f;
    } else {
        for (long j = 0; j < PANEL; j++)
            for (long k = k0; k < k1; k++) panel[(k - k0) * PANEL + j] = j < width ? b[(n0 + j) * ldb + k] : 0.0f;
    }
}

// Rows k0 … k1 − 1 of panels p0 … p1 − 1 of op(B), panel p at dst + (p − p0)·depth·16 (depth ≥
// k1 − k0). Untransposed, each row of B is read once for all the panels (a panel at a time would
// read 64 bytes of every row, 4 KB apart in W3's kernel: 9.2 against 6.2 ms to pack and
// multiply it, one thread, Zen 4).
static inline __attribute__((always_inline)) void pack_rows(long p0, long p1, long k0, long k1, long N, const float *restrict b,
                                                             long ldb, int transposed, float *restrict dst, long depth) {
    if (transposed) {
        for (long p = p0; p < p1; p++) pack_panel(p, k0, k1, N, b, ldb, 1, dst + (p - p0) * depth * PANEL);
        return;
    }
    const long full = N / PANEL < p1 ? N / PANEL : p1;
    for (long k = k0; k < k1; k++)
        for (long p = p0; p < full; p++)
            for (long j = 0; j < PANEL; j++) dst[((p - p0) * depth + k - k0) * PANEL + j] = b[k * ldb + p * PANEL + j];
    if (full < p1) pack_panel(full, k0, k1, N, b, ldb, 0, dst + (full - p0) * depth * PANEL);
}

// Panels p0 … p1 − 1 of op(B) into `packed`: panel p at packed + p·K·16.
VECTORIZED void cohort_pack_panels(long p0, long p1, long K, long N, const float *restrict b, long ldb, int transposed,
                                   float *restrict packed) {
    pack_rows(p0, p1, 0, K, N, b, ldb, transposed, packed + p0 * K * PANEL, K);
}

// c(r, j) = c₀ + Σ_{k0 ≤ k < k1} a[r·a_row + k·a_col] · panel[k][j] for R rows and 16 columns, c(r, j)
// at c[r·c_row + j·c_col]; each element one fmaf chain in k order from c₀: 0 (`start` 0), c(r, j)
// (1) or bias[j] (2).
#define PANEL_TILE(R)                                                                                          \
    static inline __attribute__((always_inline)) void panel_tile##R(                                           \
        const float *restrict a, long a_row, long a_col, const float *restrict panel, long k0, long k1,        \
        float *restrict c, long c_row, long c_col, int start, const float *restrict bias) {                    \
        float acc[R][PANEL];                                                                                   \
        for (int r = 0; r < R; r++)                                                                            \
            for (int j = 0; j < PANEL; j++)                                                                    \
                acc[r][j] = start == 1 ? c[r * c_row + j * c_col] : start == 2 ? bias[j] : 0.0f;               \
        for (long k = k0; k < k1; k++) {                                                                       \
            const float *restrict w = panel + k * PANEL;                                                       \
            for (int r = 0; r < R; r++) {                                                                      \
                const float x = a[r * a_row + k * a_col];                                                      \
                for (int j = 0; j < PANEL; j++) acc[r][j] = fmaf(x, w[j], acc[r][j]);                          \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++)                                                                            \
            for (int j = 0; j < PANEL; j++) c[r * c_row + j * c_col] = acc[r][j];                              \
    }
PANEL_TILE(6)
PANEL_TILE(4)
PANEL_TILE(2)
PANEL_TILE(1)

// Rows m0 … m1 − 1 of one panel over k0 … k1 − 1: tiles of 6 rows, then 4, 2 and 1.
static inline __attribute__((always_inline)) void panel_rows(long m0, long m1, const float *a, long a_row, long a_col,
                                                              const float *panel, long k0, long k1, float *c,
                                                              long c_row, long c_col, int start, const float *bias) {
    long m = m0;
    for (; m + 6 <= m1; m += 6) panel_tile6(a + m * a_row, a_row, a_col, panel, k0, k1, c + m * c_row, c_row, c_col, start, bias);
    if (m + 4 <= m1) { panel_tile4(a + m * a_row, a_row, a_col, panel, k0, k1, c + m * c_row, c_row, c_col, start, bias); m += 4; }
    if (m + 2 <= m1) { panel_tile2(a + m * a_row, a_row, a_col, panel, k0, k1, c + m * c_row, c_row, c_col, start, bias); m += 2; }
    if (m < m1) panel_tile1(a + m * a_row, a_row, a_col, panel, k0, k1, c + m * c_row, c_row, c_col, start, bias);
}

// A last panel narrower than 16 columns (n0 … N − 1) runs on a scratch of rows × 16: its bias
// zero-padded, C's columns copied in (when the chains start from C) and back out.
static inline __attribute__((always_inline)) void narrow_bias(const float *bias, long n0, long N, float out[PANEL]) {
    for (long j = 0; j < PANEL; j++) out[j] = bias && n0 + j < N ? bias[n0 + j] : 0.0f;
}

static inline __attribute__((always_inline)) void narrow_in(const float *c, long c_row, long c_col, long rows, long n0, long N,
                                                             float *restrict narrow) {
    for (long m = 0; m < rows; m++)
        for (long j = 0; j < PANEL; j++) narrow[m * PANEL + j] = n0 + j < N ? c[m * c_row + (n0 + j) * c_col] : 0.0f;
}

static inline __attribute__((always_inline)) void narrow_out(const float *restrict narrow, long rows, long n0, long N, float *c,
                                                              long c_row, long c_col) {
    for (long m = 0; m < rows; m++)
        for (long j = 0; n0 + j < N; j++) c[m * c_row + (n0 + j) * c_col] = narrow[m * PANEL + j];
}

// C[m, n] for rows m0 … m1 − 1 and the columns of panels p0 … p1 − 1: op(A)[m, K] · op(B),
// op(A)[m][k] = a[m·a_row + k·a_col], op(B) packed by `cohort_pack_panels`; added to C's values
// with `accumulate`, else to `bias` [N] broadcast over the rows when there is one, else to 0.
// C[m, n] is c[m·ldc + n], or with `transposed_c` c[n·ldc + m]. Rows go in blocks of MC and k
// in chunks of KC; the last panel, when narrower than 16 columns, goes through a scratch of 16.
static inline __attribute__((always_inline)) void panel_product(long m0, long m1, long p0, long p1, long N, long K,
                                                                 const float *a, long a_row, long a_col, const float *packed,
                                                                 float *c, int accumulate, const float *bias,
                                                                 const long c_row, const long c_col) {
    float narrow[MC * PANEL], narrowBias[PANEL];
    const long full = N / PANEL < p1 ? N / PANEL : p1, hasNarrow = full < p1, n0 = full * PANEL;
    const int first = accumulate ? 1 : bias ? 2 : 0;
    narrow_bias(bias, n0, N, narrowBias);
    for (long b0 = m0; b0 < m1; b0 += MC) {
        const long b1 = b0 + MC < m1 ? b0 + MC : m1;
        if (hasNarrow && accumulate) narrow_in(c + b0 * c_row, c_row, c_col, b1 - b0, n0, N, narrow);
        for (long k0 = 0; k0 < K; k0 += KC) {
            const long k1 = k0 + KC < K ? k0 + KC : K;
            const int start = k0 > 0 ? 1 : first;
            for (long p = p0; p < full; p++)
                panel_rows(b0, b1, a, a_row, a_col, packed + p * K * PANEL, k0, k1, c + p * PANEL * c_col, c_row, c_col, start,
                           bias ? bias + p * PANEL : 0);
            if (hasNarrow)
                panel_rows(0, b1 - b0, a + b0 * a_row, a_row, a_col, packed + full * K * PANEL, k0, k1, narrow, PANEL, 1, start,
                           narrowBias);
        }
        if (hasNarrow) narrow_out(narrow, b1 - b0, n0, N, c + b0 * c_row, c_row, c_col);
    }
}

VECTORIZED void cohort_panel_product(long m0, long m1, long p0, long p1, long N, long K, const float *a, long a_row,
                                     long a_col, const float *packed, float *c, long ldc, int accumulate,
                                     const float *bias, int transposed_c) {
    if (transposed_c)
        panel_product(m0, m1, p0, p1, N, K, a, a_row, a_col, packed, c, accumulate, bias, 1, ldc);
    else
        panel_product(m0, m1, p0, p1, N, K, a, a_row, a_col, packed, c, accumulate, bias, ldc, 1);
}

// The same product for rows that fit one block (m1 − m0 ≤ MC: W1's and W3's batches of 64), where
// B is read once: packing all of it first (W3's 12.8 MB kernel) wrote it back to memory and read
// it again. Here op(B) goes a chunk of k at a time, every panel's part of the chunk packed into
// `scratch` (at most 512 KB, so it stays in L2: 8192 / panels rows of k, 16 to 256; `scratch`
// holds `cohort_panels_size(K, N)` floats), then multiplied. The same chains, so the same bits as
// `cohort_panel_product`.
VECTORIZED void cohort_panel_product_streamed(long m0, long m1, long p0, long p1, long N, long K, const float *a,
                                              long a_row, long a_col, const float *b, long ldb, int transposed, float *c,
                                              long ldc, int accumulate, const float *bias, float *restrict scratch) {
    float narrow[MC * PANEL], narrowBias[PANEL];
    const long full = N / PANEL < p1 ? N / PANEL : p1, hasNarrow = full < p1, n0 = full * PANEL, rows = m1 - m0;
    const long wide = 8192 / (p1 - p0) < 16 ? 16 : 8192 / (p1 - p0) > KC ? KC : 8192 / (p1 - p0), span = wide < K ? wide : K;
    scratch += p0 * K * PANEL;  // this part's panels' place in a whole packing: parts do not overlap
    const int first = accumulate ? 1 : bias ? 2 : 0;
    narrow_bias(bias, n0, N, narrowBias);
    if (hasNarrow && accumulate) narrow_in(c + m0 * ldc, ldc, 1, rows, n0, N, narrow);
    for (long k0 = 0; k0 < K; k0 += span) {
        const long k1 = k0 + span < K ? k0 + span : K, depth = k1 - k0;
        pack_rows(p0, p1, k0, k1, N, b, ldb, transposed, scratch, span);
        const int start = k0 > 0 ? 1 : first;
        const float *chunk = a + m0 * a_row + k0 * a_col;
        for (long p = p0; p < full; p++)
            panel_rows(0, rows, chunk, a_row, a_col, scratch + (p - p0) * span * PANEL, 0, depth, c + m0 * ldc + p * PANEL, ldc,
                       1, start, bias ? bias + p * PANEL : 0);
        if (hasNarrow)
            panel_rows(0, rows, chunk, a_row, a_col, scratch + (full - p0) * span * PANEL, 0, depth, narrow, PANEL, 1, start,
                       narrowBias);
    }
    if (hasNarrow) narrow_out(narrow, rows, n0, N, c + m0 * ldc, ldc, 1);
}
