// Max pooling, fused with a convolution's bias and ReLU in the GEMM's interleaved layout, and
// the moves between that layout and NCHW.
#include "kernels_common.h"

// Row c keeps the gradient for window input c only. Which input of a window won is a coin toss
// to the branch predictor, and clang turns comparisons of the code into branches (that version
// of the backward kernel took 8 % of a W3 step); loads from this table it cannot.
static const unsigned winner_masks[4][4] = {{~0u, 0, 0, 0}, {0, ~0u, 0, 0}, {0, 0, ~0u, 0}, {0, 0, 0, ~0u}};

static inline float masked(float g, unsigned mask) {
    union { float f; unsigned u; } v = {g};
    v.u &= mask;
    return v.f;
}

// 2×2, stride-2 max pooling of one output channel of a convolution over a chunk of `count`
// samples in the GEMM's interleaved layout (see cohort_im2col): entry (row, column) of sample s
// at x[(row·width + column)·count + s]; the pooled entry (oy, ox) of sample s at
// y[s·sample_stride + oy·out_width + ox] (code likewise). Forward finishes and pools in one
// pass: v = x + bias (then ReLU when relu), the maximum of each window of v, and which input won
// (0 top-left … 3 bottom-right, the first maximum on ties, as in PyTorch). Backward sends each
// window's gradient to the input that won and writes 0 everywhere else, rows and columns no
// window covers included; with y (the pooled outputs, after a fused ReLU) a window whose output
// is 0 passes nothing. The kernels below inline these with `count` a constant for the common
// chunk sizes: the loop over ox then vectorizes, its loads an interleaved group the compiler
// turns into shuffles (a runtime count left them scalar, 6 % of a W3 step for the two).
static inline __attribute__((always_inline))
void pool_forward(const float *restrict x, float bias, int relu, float *restrict y, unsigned char *restrict code,
                  const long count, long sample_stride, long width, long out_height, long out_width) {
    long row = width * count;
    for (long s = 0; s < count; s++) {
        for (long oy = 0; oy < out_height; oy++) {
            const float *r0 = x + (2 * oy) * row + s;
            const float *r1 = r0 + row;
            float *out = y + s * sample_stride + oy * out_width;
            unsigned char *winner = code + s * sample_stride + oy * out_width;
            for (long ox = 0; ox < out_width; ox++) {
                long j = 2 * ox * count;
                float a = r0[j] + bias, b = r0[j + count] + bias, c = r1[j] + bias, d = r1[j + count] + bias;
                if (relu) {
                    a = a > 0.0f ? a : 0.0f; b = b > 0.0f ? b : 0.0f;
                    c = c > 0.0f ? c : 0.0f; d = d > 0.0f ? d : 0.0f;
                }
                int takes_b = b > a;
                float m = takes_b ? b : a;
                int takes_c = c > m;
                m = takes_c ? c : m;
                int takes_d = d > m;
                m = takes_d ? d : m;
                out[ox] = m;
                winner[ox] = (unsigned char)(takes_d ? 3 : takes_c ? 2 : takes_b);
            }
        }
    }
}

static inline __attribute__((always_inline))
void pool_backward(const float *restrict dy, const unsigned char *restrict code, const float *restrict y, float *restrict dx,
                   const long count, long sample_stride, long height, long width, long out_height, long out_width) {
    long row = width * count;
    for (long s = 0; s < count; s++) {
        for (long oy = 0; oy < out_height; oy++) {
            float *r0 = dx + (2 * oy) * row + s;
            float *r1 = r0 + row;
            long o = s * sample_stride + oy * out_width;
            for (long ox = 0; ox < out_width; ox++) {
                float g = dy[o + ox];
                if (y) g = y[o + ox] > 0.0f ? g : 0.0f;
                const unsigned *mask = winner_masks[code[o + ox] & 3];
                long j = 2 * ox * count;
                r0[j] = masked(g, mask[0]);
                r0[j + count] = masked(g, mask[1]);
                r1[j] = masked(g, mask[2]);
                r1[j + count] = masked(g, mask[3]);
            }
        }
    }
    for (long oy = 0; oy < out_height; oy++) {
        float *r0 = dx + (2 * oy) * row;
        for (long q = 2 * out_width * count; q < row; q++) { r0[q] = 0.0f; r0[row + q] = 0.0f; }
    }
    for (long q = 2 * out_height * row; q < height * row; q++) dx[q] = 0.0f;
}

#define WITH_CONSTANT_COUNT(call) \
    switch (count) { \
    case 1: { const long count = 1; call; break; } \
    case 2: { const long count = 2; call; break; } \
    case 4: { const long count = 4; call; break; } \
    case 7: { const long count = 7; call; break; } \
    case 8: { const long count = 8; call; break; } \
    default: call; \
    }

VECTORIZED
void cohort_bias_activate_max_pool_2x2(const float *restrict x, float bias, int relu, float *restrict y,
                                       unsigned char *restrict code, long count, long sample_stride, long width,
                                       long out_height, long out_width) {
    WITH_CONSTANT_COUNT(pool_forward(x, bias, relu, y, code, count, sample_stride, width, out_height, out_width))
}

VECTORIZED
void cohort_max_pool_2x2_backward_interleaved(const float *restrict dy, const unsigned char *restrict code, const float *restrict y,
                                              float *restrict dx, long count, long sample_stride, long height, long width,
                                              long out_height, long out_width) {
    WITH_CONSTANT_COUNT(pool_backward(dy, code, y, dx, count, sample_stride, height, width, out_height, out_width))
}

// The same over NCHW planes (the MaxPool2D layer): one sample per chunk, plane by plane.
// Forward adds −0, the one bias that changes no value (+0 would turn a −0 maximum into +0).
VECTORIZED
void cohort_max_pool_2x2(const float *restrict x, float *restrict y, unsigned char *restrict code, long planes,
                         long height, long width, long out_height, long out_width) {
    long in_plane = height * width, out_plane = out_height * out_width;
    for (long plane = 0; plane < planes; plane++)
        pool_forward(x + plane * in_plane, -0.0f, 0, y + plane * out_plane, code + plane * out_plane, 1, out_plane, width,
                     out_height, out_width);
}

VECTORIZED
void cohort_max_pool_2x2_backward(const float *restrict dy, const unsigned char *restrict code, float *restrict dx, long planes,
                                  long height, long width, long out_height, long out_width) {
    long in_plane = height * width, out_plane = out_height * out_width;
    for (long plane = 0; plane < planes; plane++)
        pool_backward(dy + plane * out_plane, code + plane * out_plane, NULL, dx + plane * in_plane, 1, out_plane, height, width,
                      out_height, out_width);
}

// One output channel of a chunk of `count` samples, from the GEMM's interleaved layout to NCHW:
// target[s·target_stride + p] = source[p·count + s] + bias, then max(·, 0) when relu.
VECTORIZED
void cohort_bias_activate_deinterleave(const float *restrict source, float *restrict target, long pixels, long count,
                                       long target_stride, float bias, int relu) {
    for (long s = 0; s < count; s++) {
        float *restrict out = target + s * target_stride;
        const float *restrict in = source + s;
        if (relu) {
            for (long p = 0; p < pixels; p++) { float v = in[p * count] + bias; out[p] = v > 0.0f ? v : 0.0f; }
        } else {
            for (long p = 0; p < pixels; p++) out[p] = in[p * count] + bias;
        }
    }
}

// The way back: target[p·count + s] = dy[s·source_stride + p] where y[s·source_stride + p] > 0
// (everywhere when y is NULL), else 0.
VECTORIZED
void cohort_mask_interleave(const float *restrict dy, const float *restrict y, float *restrict target, long pixels, long count,
                            long source_stride) {
    for (long s = 0; s < count; s++) {
        const float *restrict g = dy + s * source_stride;
        float *restrict out = target + s;
        if (y) {
            const float *restrict v = y + s * source_stride;
            for (long p = 0; p < pixels; p++) { float value = g[p]; out[p * count] = v[p] > 0.0f ? value : 0.0f; }
        } else {
            for (long p = 0; p < pixels; p++) out[p * count] = g[p];
        }
    }
}
