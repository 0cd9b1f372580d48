// Optimizer updates over the flat parameter buffers, and the floating-point mode they need.
#include "kernels_common.h"
#if defined(__x86_64__)
#include <xmmintrin.h>
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


// Subnormal floats make x86 arithmetic up to ~100× slower. When a model has learned its data,
// Adam's second moments decay into that range and the optimizer loop alone took 69 % of a W1
// step (measured on a synthetic file). Flush-to-zero and denormals-are-zero for this thread.
void cohort_flush_denormals(void) {
#if defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}
