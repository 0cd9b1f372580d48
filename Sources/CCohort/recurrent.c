// The LSTM recurrence.
#include "kernels_common.h"

// The recurrence of a whole LSTM layer, one step at a time, without a BLAS call per step: the
// hidden-to-hidden weights are packed once per pass into panels that stay in cache, and each
// element of a step's product is one dot product, summed in k order with a fused multiply-add
// (fmaf: one rounding, the same on every machine and in every clone). So a row's result does
// not depend on which rows share its call, its place in the batch, or how the panels are cut
// over threads, and each step's work needs one region on the threads: a part's product, then
// the cells of the units it computed.

// The rows a step's cells read and write are T steps apart in memory (beyond what the hardware
// prefetcher follows), so each tile fetches its rows before its product runs. Into L2, not L1: the
// product streams its panel (H · 32 floats, 32 KB at H = 256) through L1, which would evict them
// again before the cells read them.
#define prefetch_to_l2(address) __builtin_prefetch((address), 0, 2)

// Rows b0 … b0 + tile − 1 of a step (tile 6 or 4; past the batch, the last row again).
static inline long tile_rows(long b0, long batch) {
    const long left = batch - b0;
    return left >= 6 && left != 8 ? 6 : 4;  // 32 rows: 6, 6, 6, 6, 4, 4
}

// out[r][0..32) = Σ_k row_r[k] · panel[k][0..32) for the tile's rows of `base` (`fma_tile`, two
// passes of 16 columns: each 64 bytes of the panel read once per tile).
static inline __attribute__((always_inline)) void dot_tile(const float *base, long stride, long b0, long tile, long batch,
                                                            const float *restrict panel, long K, float out[6][32]) {
    long rows[6];
    for (int r = 0; r < 6; r++) rows[r] = b0 + r < batch ? b0 + r : batch - 1;
    if (tile == 6) {
        fma_tile6x16(base, stride, 1, rows, panel, 32, 0, K, out, 0);
        fma_tile6x16(base, stride, 1, rows, panel + 16, 32, 0, K, out, 16);
    } else {
        fma_tile4x16(base, stride, 1, rows, panel, 32, 0, K, out, 0);
        fma_tile4x16(base, stride, 1, rows, panel + 16, 32, 0, K, out, 16);
    }
}

long cohort_lstm_forward_panels(long H) { return (H + 7) / 8; }
long cohort_lstm_backward_panels(long H) { return (H + 31) / 32; }

// W_hh [4H, H] (row g·H + j: gate g of unit j) for the forward steps: panel p holds units
// 8p … 8p + 7, and for each k their four gates' weights, 32 floats (zero past unit H).
void cohort_lstm_pack_forward(const float *restrict w, float *restrict packed, long H) {
    for (long p = 0; p < (H + 7) / 8; p++)
        for (long g = 0; g < 4; g++)
            for (long u = 0; u < 8; u++) {
                long j = p * 8 + u;
                float *restrict column = packed + p * H * 32 + g * 8 + u;
                if (j < H) {
                    const float *restrict row = w + (g * H + j) * H;
                    for (long k = 0; k < H; k++) column[k * 32] = row[k];
                } else {
                    for (long k = 0; k < H; k++) column[k * 32] = 0.0f;
                }
            }
}

// W_hh for the backward steps (dh_{t−1} = dgates_t · W_hh): panel q holds columns 32q … 32q + 31
// of every row (zero past column H).
void cohort_lstm_pack_backward(const float *restrict w, float *restrict packed, long H) {
    for (long q = 0; q < (H + 31) / 32; q++)
        for (long row = 0; row < 4 * H; row++)
            for (long c = 0; c < 32; c++) {
                long j = q * 32 + c;
                packed[(q * 4 * H + row) * 32 + c] = j < H ? w[row * H + j] : 0.0f;
            }
}

// One forward step for forward panels [first, first + count): for each batch row b,
// pre = (gates_b (the input part) + bias (b_ih + b_hh)) + h_{t−1,b} · W_hhᵀ (skipped when
// `previous` is NULL), then i, f, o = σ, g = tanh written back over gates_b; c = f·c_prev + i·g; h = o·tanh c.
// Row b of each array is at its pointer + b · its stride.
VECTORIZED
void cohort_lstm_forward_step(const float *restrict packed, const float *restrict bias, long H, long batch, long first, long count,
                              const float *previous, long previous_stride, float *gates, long gates_stride,
                              const float *previous_cell, long previous_cell_stride,
                              float *cell, float *hidden, long state_stride) {
    for (long p = first; p < first + count; p++) {
        const long units = H - p * 8 < 8 ? H - p * 8 : 8;
        for (long b0 = 0, tile = tile_rows(0, batch); b0 < batch; b0 += tile, tile = tile_rows(b0, batch)) {
            float pre[6][32];
            // The rows the cells below read and write, pushed out of cache by the panels of the
            // step before: fetched now, while the product runs.
            for (long r = 0; r < tile && b0 + r < batch; r++) {
                for (int k = 0; k < 4; k++) prefetch_to_l2(gates + (b0 + r) * gates_stride + k * H + p * 8);
                prefetch_to_l2(previous_cell + (b0 + r) * previous_cell_stride + p * 8);
                prefetch_to_l2(cell + (b0 + r) * state_stride + p * 8);
                prefetch_to_l2(hidden + (b0 + r) * state_stride + p * 8);
            }
            if (previous) dot_tile(previous, previous_stride, b0, tile, batch, packed + p * H * 32, H, pre);
            for (long r = 0; r < tile && b0 + r < batch; r++) {
                const long b = b0 + r;
                float *g = gates + b * gates_stride + p * 8;
                const float *c_prev = previous_cell + b * previous_cell_stride + p * 8;
                float *c_out = cell + b * state_stride + p * 8, *h_out = hidden + b * state_stride + p * 8;
                // Eight lanes in local arrays (zero past the last unit), so the cell vectorizes.
                float z[4][8] = {{0}}, cp[8] = {0}, a[4][8], c[8], h[8];
                if (units == 8) {  // constant bounds: plain vector moves (a masked store is slow on some cores)
                    for (int k = 0; k < 4; k++)
                        for (int u = 0; u < 8; u++) z[k][u] = g[k * H + u] + bias[k * H + p * 8 + u];
                    for (int u = 0; u < 8; u++) cp[u] = c_prev[u];
                } else {
                    for (long u = 0; u < units; u++) {
                        for (int k = 0; k < 4; k++) z[k][u] = g[k * H + u] + bias[k * H + p * 8 + u];
                        cp[u] = c_prev[u];
                    }
                }
                if (previous)
                    for (int k = 0; k < 4; k++)
                        for (int u = 0; u < 8; u++) z[k][u] += pre[r][k * 8 + u];
                for (int u = 0; u < 8; u++) {
                    a[0][u] = sigmoid_(z[0][u]);
                    a[1][u] = sigmoid_(z[1][u]);
                    a[2][u] = tanh_(z[2][u]);
                    a[3][u] = sigmoid_(z[3][u]);
                    c[u] = a[1][u] * cp[u] + a[0][u] * a[2][u];
                    h[u] = a[3][u] * tanh_(c[u]);
                }
                if (units == 8) {
                    for (int k = 0; k < 4; k++)
                        for (int u = 0; u < 8; u++) g[k * H + u] = a[k][u];
                    for (int u = 0; u < 8; u++) { c_out[u] = c[u]; h_out[u] = h[u]; }
                } else {
                    for (long u = 0; u < units; u++) {
                        for (int k = 0; k < 4; k++) g[k * H + u] = a[k][u];
                        c_out[u] = c[u];
                        h_out[u] = h[u];
                    }
                }
            }
        }
    }
}

// One backward step for backward panels [first, first + count) (units 32q … 32q + 31): first
// dh_b = dgates_{t+1,b} · W_hh over those units (none when `next_dgates` is NULL: the last
// step), then the cells' backward for those units: dh_b + dy_b; dc = dc_next + dh·o·(1 − tanh²c);
// the gate pre-activation gradients into dgates_t; dc_next becomes dc·f.
VECTORIZED
void cohort_lstm_backward_step(const float *restrict packed, long H, long batch, long first, long count,
                               const float *next_dgates, long dgates_stride, float *dgates,
                               const float *gates, long gates_stride, const float *cell, const float *previous_cell,
                               long state_stride, long previous_cell_stride, const float *dy, long dy_stride,
                               float *dc) {
    for (long q = first; q < first + count; q++) {
        const long units = H - q * 32 < 32 ? H - q * 32 : 32;
        for (long b0 = 0, tile = tile_rows(0, batch); b0 < batch; b0 += tile, tile = tile_rows(b0, batch)) {
            float product[6][32];
            for (long r = 0; r < tile && b0 + r < batch; r++) {  // as in the forward step
                const long b = b0 + r, j0 = q * 32;
                for (long line = 0; line < 32; line += 16) {
                    for (int k = 0; k < 4; k++) {
                        prefetch_to_l2(gates + b * gates_stride + k * H + j0 + line);
                        prefetch_to_l2(dgates + b * dgates_stride + k * H + j0 + line);
                    }
                    prefetch_to_l2(cell + b * state_stride + j0 + line);
                    prefetch_to_l2(previous_cell + b * previous_cell_stride + j0 + line);
                    prefetch_to_l2(dy + b * dy_stride + j0 + line);
                }
            }
            if (next_dgates) dot_tile(next_dgates, dgates_stride, b0, tile, batch, packed + q * 4 * H * 32, 4 * H, product);
            for (long r = 0; r < tile && b0 + r < batch; r++) {
                const long b = b0 + r, j0 = q * 32;
                const float *gb = gates + b * gates_stride + j0;
                const float *c_state = cell + b * state_stride + j0, *c_prev = previous_cell + b * previous_cell_stride + j0;
                const float *dy_b = dy + b * dy_stride + j0;
                float *dg = dgates + b * dgates_stride + j0, *dc_b = dc + b * H + j0;
                // 32 lanes in local arrays (zero past the last unit), so the cells vectorize.
                float a[4][32] = {{0}}, cs[32] = {0}, cp[32] = {0}, h[32] = {0}, dcn[32] = {0}, d[4][32], next[32];
                if (units == 32) {
                    for (int k = 0; k < 4; k++)
                        for (int u = 0; u < 32; u++) a[k][u] = gb[k * H + u];
                    for (int u = 0; u < 32; u++) { cs[u] = c_state[u]; cp[u] = c_prev[u]; h[u] = dy_b[u]; dcn[u] = dc_b[u]; }
                } else {
                    for (long u = 0; u < units; u++) {
                        for (int k = 0; k < 4; k++) a[k][u] = gb[k * H + u];
                        cs[u] = c_state[u];
                        cp[u] = c_prev[u];
                        h[u] = dy_b[u];
                        dcn[u] = dc_b[u];
                    }
                }
                if (next_dgates)
                    for (int u = 0; u < 32; u++) h[u] = h[u] + product[r][u];
                for (int u = 0; u < 32; u++) {
                    const float i = a[0][u], f = a[1][u], g = a[2][u], o = a[3][u];
                    const float tc = tanh_(cs[u]);
                    const float dcell = dcn[u] + h[u] * o * (1.0f - tc * tc);
                    d[0][u] = dcell * g * i * (1.0f - i);
                    d[1][u] = dcell * cp[u] * f * (1.0f - f);
                    d[2][u] = dcell * i * (1.0f - g * g);
                    d[3][u] = h[u] * tc * o * (1.0f - o);
                    next[u] = dcell * f;
                }
                if (units == 32) {
                    for (int k = 0; k < 4; k++)
                        for (int u = 0; u < 32; u++) dg[k * H + u] = d[k][u];
                    for (int u = 0; u < 32; u++) dc_b[u] = next[u];
                } else {
                    for (long u = 0; u < units; u++) {
                        for (int k = 0; k < 4; k++) dg[k * H + u] = d[k][u];
                        dc_b[u] = next[u];
                    }
                }
            }
        }
    }
}

// sum_a[c] += Σ_r rows[r][c] and the same into sum_b, rows `stride` apart, r in order (two bias
// gradients that take the same sum, in one pass; a range of columns per thread).
VECTORIZED
void cohort_add_rows_twice(const float *restrict rows, long stride, float *restrict sum_a, float *restrict sum_b,
                           long count, long width) {
    for (long r = 0; r < count; r++) {
        const float *restrict row = rows + r * stride;
        for (long c = 0; c < width; c++) { sum_a[c] += row[c]; sum_b[c] += row[c]; }
    }
}
