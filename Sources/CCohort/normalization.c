// Layer normalization over rows (llm.c's layernorm_forward and layernorm_backward), 8 lanes wide.
#include "kernels_common.h"

// Rows r0 … r1 − 1 of x [rows, width]: μ = mean, s = 1/√(biased variance + ε),
// y = (x − μ)·s·γ + β; μ and s kept per row for backward.
VECTORIZED
void cohort_layer_norm_forward(const float *restrict x, const float *restrict gamma, const float *restrict beta,
                               float *restrict y, float *restrict mean, float *restrict inverse, long r0, long r1,
                               long width, float epsilon) {
    for (long r = r0; r < r1; r++) {
        const float *restrict row = x + r * width;
        float *restrict out = y + r * width;
        float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long c = 0;
        for (; c + 8 <= width; c += 8)
            for (int l = 0; l < 8; l++) sums[l] += row[c + l];
        for (; c < width; c++) sums[c & 7] += row[c];
        const float m = lane_tree(sums) / (float)width;
        float squares[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (c = 0; c + 8 <= width; c += 8)
            for (int l = 0; l < 8; l++) squares[l] += (row[c + l] - m) * (row[c + l] - m);
        for (; c < width; c++) squares[c & 7] += (row[c] - m) * (row[c] - m);
        const float s = 1.0f / sqrtf(lane_tree(squares) / (float)width + epsilon);
        for (c = 0; c < width; c++) out[c] = (row[c] - m) * s * gamma[c] + beta[c];
        mean[r] = m;
        inverse[r] = s;
    }
}

// With n = (x − μ)·s and g = dy ⊙ γ: dx = s · (g − mean(g) − n · mean(g ⊙ n)) for rows r0 … r1 − 1,
// and dγ += Σ_rows dy ⊙ n, dβ += Σ_rows dy for columns c0 … c1 − 1 over all `rows` in row
// order: any cut of the rows and columns gives the same bits.
VECTORIZED
void cohort_layer_norm_backward(const float *restrict x, const float *restrict dy, const float *restrict gamma,
                                const float *restrict mean, const float *restrict inverse, float *restrict dx,
                                float *restrict dgamma, float *restrict dbeta, long rows, long width, long r0, long r1,
                                long c0, long c1) {
    for (long r = r0; r < r1; r++) {
        const float *restrict xr = x + r * width, *restrict dyr = dy + r * width;
        float *restrict dxr = dx + r * width;
        const float m = mean[r], s = inverse[r];
        float gs[8] = {0, 0, 0, 0, 0, 0, 0, 0}, gns[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long c = 0;
        for (; c + 8 <= width; c += 8)
            for (int l = 0; l < 8; l++) {
                const float g = dyr[c + l] * gamma[c + l], n = (xr[c + l] - m) * s;
                gs[l] += g;
                gns[l] += g * n;
            }
        for (; c < width; c++) {
            const float g = dyr[c] * gamma[c], n = (xr[c] - m) * s;
            gs[c & 7] += g;
            gns[c & 7] += g * n;
        }
        const float gMean = lane_tree(gs) / (float)width, gnMean = lane_tree(gns) / (float)width;
        for (c = 0; c < width; c++) dxr[c] = s * (dyr[c] * gamma[c] - gMean - (xr[c] - m) * s * gnMean);
    }
    for (long r = 0; r < rows; r++) {
        const float *restrict xr = x + r * width, *restrict dyr = dy + r * width;
        const float m = mean[r], s = inverse[r];
        for (long c = c0; c < c1; c++) {
            dgamma[c] += dyr[c] * ((xr[c] - m) * s);
            dbeta[c] += dyr[c];
        }
    }
}
