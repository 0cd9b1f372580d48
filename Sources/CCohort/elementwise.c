// Elementwise kernels and reductions over flat buffers: ReLU, row sums, masks, finiteness,
// Gaussian draws.
#include "kernels_common.h"

// out[i] = a[i] + b[i]: a residual sum (out may be a or b).
VECTORIZED
void cohort_add(const float *a, const float *b, float *out, long n) {
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

VECTORIZED
void cohort_relu_forward(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) { float v = x[i]; y[i] = v > 0.0f ? v : 0.0f; }
}

VECTORIZED
void cohort_relu_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n) {
    for (long i = 0; i < n; i++) { float g = dy[i]; dx[i] = x[i] > 0.0f ? g : 0.0f; }
}

VECTORIZED
void cohort_add_rows(const float *restrict rows, float *restrict sum, long count, long width) {
    for (long r = 0; r < count; r++) {
        const float *row = rows + r * width;
        for (long c = 0; c < width; c++) sum[c] += row[c];
    }
}

VECTORIZED
void cohort_mask_copy(const float *restrict dy, const float *restrict y, float *restrict target, long n) {
    if (y) {
        // The load of dy is unconditional so the compiler can turn the choice into a vector select.
        for (long i = 0; i < n; i++) { float g = dy[i]; target[i] = y[i] > 0.0f ? g : 0.0f; }
    } else {
        for (long i = 0; i < n; i++) target[i] = dy[i];
    }
}

VECTORIZED
float cohort_sum(const float *restrict x, long n) {
    // Eight float lanes per block of 1024 (vectorizes), blocks summed in double.
    double total = 0;
    for (long start = 0; start < n; start += 1024) {
        long end = start + 1024 < n ? start + 1024 : n;
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long i = start;
        for (; i + 8 <= end; i += 8)
            for (int l = 0; l < 8; l++) lanes[l] += x[i + l];
        for (; i < end; i++) lanes[0] += x[i];
        for (int l = 0; l < 8; l++) total += lanes[l];
    }
    return (float)total;
}

// Σ x[i]² in double, in 8 lanes (element i in lane i mod 8) added in a fixed tree: the global
// gradient norm. Each square of a float is exact in double, so every clone rounds each lane's
// sums alike. A single running sum (what Swift had) waits on each add: 0.66–0.75 ms for W6's
// 809,600 gradients against 0.10 here.
VECTORIZED
double cohort_sum_squares(const float *restrict x, long n) {
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += (double)x[i + l] * (double)x[i + l];
    for (; i < n; i++) lanes[i & 7] += (double)x[i] * (double)x[i];
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

VECTORIZED
int cohort_all_finite(const float *restrict x, long n) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    add_probes(lanes, x, n);
    return probes_finite(lanes);
}

// Box–Muller on uniform pairs drawn beforehand (u1 > 0): out[i] = (float)(sqrt(-2 log u1[i]) ·
// cos(2π u2[i])) · scale, the formula of Generator.nextGaussian. Vectorized through glibc's libmvec
// (-fveclib=libmvec), which rounds within a few double ulps of the scalar log and cos.
VECTORIZED
void cohort_box_muller(const double *restrict u1, const double *restrict u2, float *restrict out, long n, float scale) {
    for (long i = 0; i < n; i++) {
        float gaussian = (float)(sqrt(-2.0 * log(u1[i])) * cos(2.0 * 3.14159265358979323846 * u2[i]));
        out[i] = gaussian * scale;
    }
}

VECTORIZED
void cohort_relu_inplace(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
