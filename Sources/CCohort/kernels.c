// Elementwise kernels over the flat buffers. Written in C with restrict pointers so the
// compiler vectorizes them (Swift cannot prove the buffers do not alias); -fno-math-errno
// lets sqrtf become a vector instruction. Each follows the formula in its header comment.
#include "CCohort.h"
#include <math.h>

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

void cohort_relu_forward(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void cohort_relu_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n) {
    for (long i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

void cohort_add_rows(const float *restrict rows, float *restrict sum, long count, long width) {
    for (long r = 0; r < count; r++) {
        const float *row = rows + r * width;
        for (long c = 0; c < width; c++) sum[c] += row[c];
    }
}
