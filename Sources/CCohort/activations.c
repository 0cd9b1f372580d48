// GELU (erf and tanh forms) and the causal softmax.
#include "kernels_common.h"

// GELU, the exact erf form: y = x·Φ(x), Φ(x) = ½(1 + erf(x/√2)); dy/dx = Φ(x) + x·φ(x).
VECTORIZED
void cohort_gelu_forward(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erf_(x[i] * 0.70710678f));
}

VECTORIZED
void cohort_gelu_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n) {
    for (long i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erf_(x[i] * 0.70710678f));
        float pdf = 0.39894228f * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

// GELU, the tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate="tanh"):
// y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³); dy/dx = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²).
void cohort_gelu_tanh_forward(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) {
        float u = 0.7978845608f * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
        y[i] = 0.5f * x[i] * (1.0f + tanhf(u));
    }
}

void cohort_gelu_tanh_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n) {
    for (long i = 0; i < n; i++) {
        float u = 0.7978845608f * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
        float t = tanhf(u);
        float du = 0.7978845608f * (1.0f + 0.134145f * x[i] * x[i]);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * x[i] * (1.0f - t * t) * du);
    }
}

// Softmax of row[0 .. count) in place; row[count .. length) (future positions) set to 0.
VECTORIZED
void cohort_softmax_prefix(float *restrict row, long count, long length) {
    float maximum = row[0];
    for (long j = 1; j < count; j++) maximum = row[j] > maximum ? row[j] : maximum;
    float sum = 0.0f;
    for (long j = 0; j < count; j++) {
        row[j] = expf(row[j] - maximum);
        sum += row[j];
    }
    float inverse = 1.0f / sum;
    for (long j = 0; j < count; j++) row[j] *= inverse;
    for (long j = count; j < length; j++) row[j] = 0.0f;
}
