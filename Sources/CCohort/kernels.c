// Elementwise kernels over the flat buffers. Written in C with restrict pointers so the
// compiler vectorizes them (Swift cannot prove the buffers do not alias); -fno-math-errno
// lets sqrtf become a vector instruction. Each follows the formula in its header comment.
#include "CCohort.h"
#include <math.h>
#include <signal.h>
#include <sched.h>
#include <string.h>

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

VECTORIZED
void cohort_adam_update(float *restrict theta, const float *restrict grad, float *restrict m, float *restrict v,
                        float decays, long n, float beta1, float beta2, float step_size,
                        float epsilon_hat, float weight_decay, float shrink) {
    if (shrink != 0.0f) {
        for (long i = 0; i < n; i++) {
            float t = theta[i] - shrink * decays * theta[i];
            float g = grad[i];
            m[i] = beta1 * m[i] + (1.0f - beta1) * g;
            v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
            theta[i] = t - step_size * m[i] / (sqrtf(v[i]) + epsilon_hat);
        }
        return;
    }
    if (weight_decay == 0.0f) {
        // The common case, one memory stream fewer: this loop is bound by memory bandwidth.
        for (long i = 0; i < n; i++) {
            float g = grad[i];
            m[i] = beta1 * m[i] + (1.0f - beta1) * g;
            v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
            theta[i] -= step_size * m[i] / (sqrtf(v[i]) + epsilon_hat);
        }
        return;
    }
    for (long i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * decays * theta[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        theta[i] -= step_size * m[i] / (sqrtf(v[i]) + epsilon_hat);
    }
}

VECTORIZED
void cohort_sgd_update(float *restrict theta, const float *restrict grad, float *restrict velocity,
                       float decays, long n, float learning_rate, float momentum,
                       int nesterov, float weight_decay) {
    if (momentum == 0.0f) {
        for (long i = 0; i < n; i++) theta[i] -= learning_rate * (grad[i] + weight_decay * decays * theta[i]);
        return;
    }
    for (long i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * decays * theta[i];
        velocity[i] = momentum * velocity[i] + g;
        theta[i] -= learning_rate * (nesterov ? g + momentum * velocity[i] : velocity[i]);
    }
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

// 1 when every x[i] is finite: x·0 is ±0 for a finite x and NaN for ±inf and NaN, and a sum of
// zeros stays 0 (a sum of the values themselves could overflow). Eight lanes, so it vectorizes.
static inline void add_probes(float lanes[8], const float *restrict x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += x[i + l] * 0.0f;
    for (; i < n; i++) lanes[0] += x[i] * 0.0f;
}

static inline int probes_finite(const float lanes[8]) {
    float total = 0.0f;
    for (int l = 0; l < 8; l++) total += lanes[l];
    return total == 0.0f;
}

VECTORIZED
int cohort_all_finite(const float *restrict x, long n) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    add_probes(lanes, x, n);
    return probes_finite(lanes);
}

// destinations[d][i] = ((sources[0][i] + sources[1][i]) + sources[2][i]) + … for every d: the
// same order on every rank, so whichever rank sums a slice, every replica gets the same bits.
// A destination may be one of the sources (a rank sums into its own gradients): each block is
// summed into a local accumulator and stored after its last source has been read. Returns
// cohort_all_finite of the sums, checked while each block is in L1 (a separate pass over W3's
// 13 MB of gradients took 1.7 % of a step).
VECTORIZED
int cohort_sum_sources(const float *const *sources, int count, float *const *destinations, int destination_count, long n) {
    enum { block = 2048 };
    float accumulator[block] __attribute__((aligned(64)));
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long start = 0; start < n; start += block) {
        long length = n - start < block ? n - start : block;
        const float *restrict first = sources[0] + start;
        for (long i = 0; i < length; i++) accumulator[i] = first[i];
        for (int source = 1; source < count; source++) {
            const float *restrict next = sources[source] + start;
            for (long i = 0; i < length; i++) accumulator[i] += next[i];
        }
        add_probes(lanes, accumulator, length);
        for (int destination = 0; destination < destination_count; destination++) {
            float *restrict target = destinations[destination] + start;
            for (long i = 0; i < length; i++) target[i] = accumulator[i];
        }
    }
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

// A stop request from SIGTERM or SIGUSR1 (as SLURM sends before a time limit): the handler only
// sets a flag, which the training loop reads at each step boundary.
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

void cohort_install_stop_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
}

int cohort_stop_requested(void) { return stop_requested; }

// A convolution works on chunks of `count` samples in an interleaved layout, the sample index
// fastest: the input as padded[c][y][x][s] (zero-padded to padded_height × padded_width, the
// rows and columns the kernel windows cover), and the lowered matrix as
//   cols[(c·k + i)·k + j][(oy·OW + ox)·count + s] = padded[c][oy·stride + i][ox·stride + j][s],
// so that with stride 1 each output line of a row of cols is one run of OW·count floats in
// padded: long vector copies with no edge tests, where per-sample rows would be short copies
// (14 floats for W3) with padding handled per line. The GEMM's output columns come out in the
// same (pixel, sample) order.

// padded[c][y][x][s] = x_s[c][y − pad_top][x − pad_left], 0 outside the image; sample s at
// x + s·sample_size. Input rows and columns the windows never cover (valid, stride > 1) are left out.
VECTORIZED
void cohort_pack_interleaved(const float *restrict x, float *restrict padded, long count, long sample_size, long channels,
                             long height, long width, long pad_top, long pad_left, long padded_height, long padded_width) {
    long plane = padded_height * padded_width * count;
    for (long i = 0; i < channels * plane; i++) padded[i] = 0.0f;
    long rows = height < padded_height - pad_top ? height : padded_height - pad_top;
    long columns = width < padded_width - pad_left ? width : padded_width - pad_left;
    for (long s = 0; s < count; s++) {
        for (long c = 0; c < channels; c++) {
            const float *restrict source = x + s * sample_size + c * height * width;
            float *restrict target = padded + c * plane + (pad_top * padded_width + pad_left) * count + s;
            for (long y = 0; y < rows; y++)
                for (long column = 0; column < columns; column++)
                    target[(y * padded_width + column) * count] = source[y * width + column];
        }
    }
}

// Its adjoint for the input gradient: dx_s[c][y][x] = padded[c][y + pad_top][x + pad_left][s],
// 0 for input pixels no window covers.
VECTORIZED
void cohort_unpack_interleaved(const float *restrict padded, float *restrict dx, long count, long sample_size, long channels,
                               long height, long width, long pad_top, long pad_left, long padded_height, long padded_width) {
    long plane = padded_height * padded_width * count;
    long rows = height < padded_height - pad_top ? height : padded_height - pad_top;
    long columns = width < padded_width - pad_left ? width : padded_width - pad_left;
    for (long s = 0; s < count; s++) {
        for (long c = 0; c < channels; c++) {
            float *restrict target = dx + s * sample_size + c * height * width;
            const float *restrict source = padded + c * plane + (pad_top * padded_width + pad_left) * count + s;
            for (long i = 0; i < height * width; i++) target[i] = 0.0f;
            for (long y = 0; y < rows; y++)
                for (long column = 0; column < columns; column++)
                    target[y * width + column] = source[(y * padded_width + column) * count];
        }
    }
}

VECTORIZED
void cohort_im2col(const float *restrict padded, float *restrict cols, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w) {
    long line = out_w * count, row_size = out_h * line;
    long row = 0;
    for (long c = 0; c < channels; c++) {
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                float *restrict out = cols + row * row_size;
                for (long oy = 0; oy < out_h; oy++, out += line) {
                    const float *restrict source = padded + ((c * padded_height + oy * stride + i) * padded_width + j) * count;
                    if (stride == 1) {
                        for (long q = 0; q < line; q++) out[q] = source[q];
                    } else {
                        for (long ox = 0; ox < out_w; ox++)
                            for (long s = 0; s < count; s++) out[ox * count + s] = source[ox * stride * count + s];
                    }
                }
            }
        }
    }
}

// The adjoint of cohort_im2col: padded is overwritten with the sum of the cols entries that
// read each of its entries, added in row order.
VECTORIZED
void cohort_col2im(const float *restrict cols, float *restrict padded, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w) {
    for (long i = 0; i < channels * padded_height * padded_width * count; i++) padded[i] = 0.0f;
    long line = out_w * count, row_size = out_h * line;
    long row = 0;
    for (long c = 0; c < channels; c++) {
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                const float *restrict in = cols + row * row_size;
                for (long oy = 0; oy < out_h; oy++, in += line) {
                    float *restrict target = padded + ((c * padded_height + oy * stride + i) * padded_width + j) * count;
                    if (stride == 1) {
                        for (long q = 0; q < line; q++) target[q] += in[q];
                    } else {
                        for (long ox = 0; ox < out_w; ox++)
                            for (long s = 0; s < count; s++) target[ox * stride * count + s] += in[ox * count + s];
                    }
                }
            }
        }
    }
}

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

// Subnormal floats make x86 arithmetic up to ~100× slower. When a model has learned its data,
// Adam's second moments decay into that range and the optimizer loop alone took 69 % of a W1
// step (measured on a synthetic file). Flush-to-zero and denormals-are-zero for this thread.
void cohort_flush_denormals(void) {
#if defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

// ---- Sequence models -------------------------------------------------------------------------
// expf is the one transcendental clang maps to libmvec's vector versions here (tanhf and erff
// stay scalar calls), so tanh and erf are written through it: the loops below run 8 lanes wide.

static inline float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
// tanh x = 1 − 2 / (e^{2x} + 1): exact limits ±1, absolute error ~1e-7 near 0.
static inline float tanh_(float x) { return 1.0f - 2.0f / (expf(2.0f * x) + 1.0f); }
// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), odd in x.
static inline float erf_(float x) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * expf(-a * a);
    return x < 0.0f ? -y : y;
}

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

// One LSTM cell, one row: gates [4H] (i | f | g | o pre-activations, recurrent part added when
// `recurrent` is not NULL) become activations; c = f·c_prev + i·g, h = o·tanh(c).
VECTORIZED
void cohort_lstm_cell_forward(float *restrict gates, const float *restrict recurrent, const float *restrict previous_cell,
                              float *restrict cell, float *restrict hidden, long H) {
    if (recurrent) for (long j = 0; j < 4 * H; j++) gates[j] += recurrent[j];
    for (long j = 0; j < 2 * H; j++) gates[j] = sigmoid_(gates[j]);
    for (long j = 2 * H; j < 3 * H; j++) gates[j] = tanh_(gates[j]);
    for (long j = 3 * H; j < 4 * H; j++) gates[j] = sigmoid_(gates[j]);
    for (long j = 0; j < H; j++) {
        cell[j] = gates[H + j] * previous_cell[j] + gates[j] * gates[2 * H + j];
        hidden[j] = gates[3 * H + j] * tanh_(cell[j]);
    }
}

// Its backward for one row: dh = dy + dh_next; dc = dc_next + dh·o·(1 − tanh²c); the gate
// pre-activation gradients into dgates; dc_next becomes dc·f (the carry to the step before).
VECTORIZED
void cohort_lstm_cell_backward(const float *restrict gates, const float *restrict cell, const float *restrict previous_cell,
                               const float *restrict dy, const float *restrict dh_next, float *restrict dc_next,
                               float *restrict dgates, long H) {
    for (long j = 0; j < H; j++) {
        float i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
        float dh = dy[j] + dh_next[j];
        float tc = tanh_(cell[j]);
        float dc = dc_next[j] + dh * o * (1.0f - tc * tc);
        dgates[j] = dc * g * i * (1.0f - i);
        dgates[H + j] = dc * previous_cell[j] * f * (1.0f - f);
        dgates[2 * H + j] = dc * i * (1.0f - g * g);
        dgates[3 * H + j] = dh * tc * o * (1.0f - o);
        dc_next[j] = dc * f;
    }
}

void cohort_sum_turn(float *restrict target, const float *restrict source, long n, int first) {
    if (source) {
        if (first) memcpy(target, source, (size_t)n * sizeof(float));
        else for (long i = 0; i < n; i++) target[i] += source[i];
    } else {
        if (first) memset(target, 0, (size_t)n * sizeof(float));
        else for (long i = 0; i < n; i++) target[i] += 0.0f;
    }
}

void cohort_counter_wait(const long long *counter, long long target) {
    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) sched_yield();
}

void cohort_counter_store(long long *counter, long long value) {
    __atomic_store_n(counter, value, __ATOMIC_RELEASE);
}
