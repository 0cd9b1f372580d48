// Elementwise kernels over the flat buffers. Written in C with restrict pointers so the
// compiler vectorizes them (Swift cannot prove the buffers do not alias); -fno-math-errno
// lets sqrtf become a vector instruction. Each follows the formula in its header comment.
#include "CCohort.h"
#include <math.h>
#include <signal.h>
#include <string.h>

// Each hot loop is compiled twice, for x86-64-v3 (AVX2, the vector width every x86 server of
// the last decade has) and for the baseline, and the loader picks one per machine. The file is
// compiled with -ffp-contract=off so both versions round identically: replicas on a mixed
// cluster stay bitwise equal. -fno-builtin-memcpy/-memset keep the short im2col rows as inline
// vector copies instead of library calls.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTORIZED
#endif

VECTORIZED
void cohort_adam_update(float *restrict theta, const float *restrict grad, float *restrict m, float *restrict v,
                        const float *restrict decay_mask, long n, float beta1, float beta2, float step_size,
                        float epsilon_hat, float weight_decay) {
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
        float g = grad[i] + weight_decay * decay_mask[i] * theta[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        theta[i] -= step_size * m[i] / (sqrtf(v[i]) + epsilon_hat);
    }
}

VECTORIZED
void cohort_sgd_update(float *restrict theta, const float *restrict grad, float *restrict velocity,
                       const float *restrict decay_mask, long n, float learning_rate, float momentum,
                       int nesterov, float weight_decay) {
    if (momentum == 0.0f) {
        for (long i = 0; i < n; i++) theta[i] -= learning_rate * (grad[i] + weight_decay * decay_mask[i] * theta[i]);
        return;
    }
    for (long i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * decay_mask[i] * theta[i];
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
void cohort_bias_activate(const float *restrict source, float *restrict target, long n, float bias, int relu) {
    if (relu) {
        for (long i = 0; i < n; i++) { float v = source[i] + bias; target[i] = v > 0.0f ? v : 0.0f; }
    } else {
        for (long i = 0; i < n; i++) target[i] = source[i] + bias;
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

VECTORIZED
void cohort_add(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

// destinations[d][i] = ((sources[0][i] + sources[1][i]) + sources[2][i]) + … for every d: the
// same order on every rank, so whichever rank sums a slice, every replica gets the same bits.
// A destination may be one of the sources (a rank sums into its own gradients): each block is
// summed into a local accumulator and stored after its last source has been read.
VECTORIZED
void cohort_sum_sources(const float *const *sources, int count, float *const *destinations, int destination_count, long n) {
    enum { block = 2048 };
    float accumulator[block] __attribute__((aligned(64)));
    for (long start = 0; start < n; start += block) {
        long length = n - start < block ? n - start : block;
        const float *restrict first = sources[0] + start;
        for (long i = 0; i < length; i++) accumulator[i] = first[i];
        for (int source = 1; source < count; source++) {
            const float *restrict next = sources[source] + start;
            for (long i = 0; i < length; i++) accumulator[i] += next[i];
        }
        for (int destination = 0; destination < destination_count; destination++) {
            float *restrict target = destinations[destination] + start;
            for (long i = 0; i < length; i++) target[i] = accumulator[i];
        }
    }
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

// 2×2 max pooling with stride 2. code[o] records which of the window's four inputs won
// (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; the first maximum wins ties, as in
// PyTorch), a byte per output instead of an index.
VECTORIZED
void cohort_max_pool_2x2(const float *restrict x, float *restrict y, unsigned char *restrict code, long planes,
                         long height, long width, long out_height, long out_width) {
    for (long plane = 0; plane < planes; plane++) {
        const float *p = x + plane * height * width;
        for (long oy = 0; oy < out_height; oy++) {
            const float *r0 = p + (2 * oy) * width;
            const float *r1 = r0 + width;
            for (long ox = 0; ox < out_width; ox++) {
                long j = 2 * ox;
                float m = r0[j];
                unsigned char best = 0;
                if (r0[j + 1] > m) { m = r0[j + 1]; best = 1; }
                if (r1[j] > m) { m = r1[j]; best = 2; }
                if (r1[j + 1] > m) { m = r1[j + 1]; best = 3; }
                y[ox] = m;
                code[ox] = best;
            }
            y += out_width;
            code += out_width;
        }
    }
}

// The adjoint: each window's gradient goes to the input that won, the other three get zero;
// rows and columns no window covers (odd sizes) get zero too. Every dx entry is written once.
// With y (the pooled outputs of a ReLU'd input), a window whose output is 0 passes no gradient:
// the ReLU's mask, for the fused convolution.
VECTORIZED
void cohort_max_pool_2x2_backward(const float *restrict dy, const unsigned char *restrict code, const float *restrict y,
                                  float *restrict dx, long planes, long height, long width, long out_height, long out_width) {
    for (long plane = 0; plane < planes; plane++) {
        float *p = dx + plane * height * width;
        for (long oy = 0; oy < out_height; oy++) {
            float *r0 = p + (2 * oy) * width;
            float *r1 = r0 + width;
            for (long ox = 0; ox < out_width; ox++) {
                float g = dy[ox];
                if (y) g = y[ox] > 0.0f ? g : 0.0f;
                unsigned char c = code[ox];
                r0[2 * ox] = c == 0 ? g : 0.0f;
                r0[2 * ox + 1] = c == 1 ? g : 0.0f;
                r1[2 * ox] = c == 2 ? g : 0.0f;
                r1[2 * ox + 1] = c == 3 ? g : 0.0f;
            }
            for (long ix = 2 * out_width; ix < width; ix++) { r0[ix] = 0.0f; r1[ix] = 0.0f; }
            dy += out_width;
            code += out_width;
            if (y) y += out_width;
        }
        for (long iy = 2 * out_height; iy < height; iy++)
            for (long ix = 0; ix < width; ix++) p[iy * width + ix] = 0.0f;
    }
}

// One plane of a convolution's output, finished and pooled in one pass: v = x + bias (then
// ReLU when relu), and the 2×2 max pool of v with its winners, as cohort_max_pool_2x2 would
// compute from the stored v. x has row stride width.
VECTORIZED
void cohort_bias_activate_max_pool_2x2(const float *restrict x, float bias, int relu, float *restrict y,
                                       unsigned char *restrict code, long width, long out_height, long out_width) {
    for (long oy = 0; oy < out_height; oy++) {
        const float *r0 = x + (2 * oy) * width;
        const float *r1 = r0 + width;
        for (long ox = 0; ox < out_width; ox++) {
            long j = 2 * ox;
            float a = r0[j] + bias, b = r0[j + 1] + bias, c = r1[j] + bias, d = r1[j + 1] + bias;
            if (relu) {
                a = a > 0.0f ? a : 0.0f; b = b > 0.0f ? b : 0.0f;
                c = c > 0.0f ? c : 0.0f; d = d > 0.0f ? d : 0.0f;
            }
            float m = a;
            unsigned char best = 0;
            if (b > m) { m = b; best = 1; }
            if (c > m) { m = c; best = 2; }
            if (d > m) { m = d; best = 3; }
            y[ox] = m;
            code[ox] = best;
        }
        y += out_width;
        code += out_width;
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

// Eight floats, loaded and stored unaligned: the vector width of x86-64-v3 (two SSE registers
// in the baseline build).
typedef float float8 __attribute__((vector_size(32), aligned(4)));

// dst[0..<n] = src[0..<n] for the short rows of im2col (11–28 floats in the reference models):
// whole vectors, then one more vector ending at n that overlaps the last (a copy may write an
// element twice), so a row costs ⌈n/8⌉ vector moves instead of a vector loop and a scalar tail.
static inline void copy_row(float *restrict dst, const float *restrict src, long n) {
    if (n < 8) {
        for (long k = 0; k < n; k++) dst[k] = src[k];
        return;
    }
    long k = 0;
    for (; k + 8 <= n; k += 8) *(float8 *)(dst + k) = *(const float8 *)(src + k);
    if (k < n) *(float8 *)(dst + n - 8) = *(const float8 *)(src + n - 8);
}

static inline void zero_row(float *dst, long n) {
    for (long k = 0; k < n; k++) dst[k] = 0.0f;
}

// dst[0..<n] += src[0..<n]: whole vectors, then a scalar tail (an overlapping vector would add twice).
static inline void add_row(float *restrict dst, const float *restrict src, long n) {
    long k = 0;
    for (; k + 8 <= n; k += 8) *(float8 *)(dst + k) += *(const float8 *)(src + k);
    for (; k < n; k++) dst[k] += src[k];
}

// im2col for one sample: cols[(c·k + i)·k + j][oy·OW + ox] = x[c][oy·s − pt + i][ox·s − pl + j],
// zero outside; row r starts at cols + r·row_stride. For stride 1 each row is a block of output
// lines [oy_first, oy_last) that read the input, each the same span [first, last) of columns,
// so the inner loop is one vector copy per line with no per-line tests.
VECTORIZED
void cohort_im2col(const float *restrict x, float *restrict cols, long channels, long height, long width,
                   long kernel, long stride, long pad_top, long pad_left, long out_h, long out_w, long row_stride) {
    long row = 0;
    for (long c = 0; c < channels; c++) {
        const float *plane = x + c * height * width;
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                float *out = cols + row * row_stride;
                if (stride != 1) {
                    for (long oy = 0; oy < out_h; oy++) {
                        long iy = oy * stride - pad_top + i;
                        for (long ox = 0; ox < out_w; ox++) {
                            long ix = ox * stride - pad_left + j;
                            out[oy * out_w + ox] = (iy >= 0 && iy < height && ix >= 0 && ix < width) ? plane[iy * width + ix] : 0.0f;
                        }
                    }
                    continue;
                }
                long shift = j - pad_left, lift = i - pad_top;
                long first = shift < 0 ? -shift : 0;
                long last = width - shift < out_w ? width - shift : out_w;
                long oy_first = lift < 0 ? -lift : 0;
                long oy_last = height - lift < out_h ? height - lift : out_h;
                if (last < first) last = first;
                if (oy_last < oy_first) oy_last = oy_first;
                zero_row(out, oy_first * out_w);
                const float *source = plane + (oy_first + lift) * width + first + shift;
                float *line = out + oy_first * out_w;
                if (first == 0 && last == out_w) {
                    for (long oy = oy_first; oy < oy_last; oy++, source += width, line += out_w) copy_row(line, source, out_w);
                } else {
                    for (long oy = oy_first; oy < oy_last; oy++, source += width, line += out_w) {
                        zero_row(line, first);
                        copy_row(line + first, source, last - first);
                        zero_row(line + last, out_w - last);
                    }
                }
                zero_row(out + oy_last * out_w, (out_h - oy_last) * out_w);
            }
        }
    }
}

// The adjoint of cohort_im2col: dx is overwritten with the sum of the entries that read each pixel.
VECTORIZED
void cohort_col2im(const float *restrict cols, float *restrict dx, long channels, long height, long width,
                   long kernel, long stride, long pad_top, long pad_left, long out_h, long out_w, long row_stride) {
    zero_row(dx, channels * height * width);
    long row = 0;
    for (long c = 0; c < channels; c++) {
        float *plane = dx + c * height * width;
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                const float *source = cols + row * row_stride;
                long shift = j - pad_left;
                long first = shift < 0 ? -shift : 0;
                long last = width - shift < out_w ? width - shift : out_w;
                for (long oy = 0; oy < out_h; oy++) {
                    long iy = oy * stride - pad_top + i;
                    if (iy < 0 || iy >= height) continue;
                    const float *line = source + oy * out_w;
                    float *target = plane + iy * width;
                    if (stride == 1) {
                        if (last > first) add_row(target + first + shift, line + first, last - first);
                    } else {
                        for (long ox = 0; ox < out_w; ox++) {
                            long ix = ox * stride - pad_left + j;
                            if (ix >= 0 && ix < width) target[ix] += line[ox];
                        }
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
