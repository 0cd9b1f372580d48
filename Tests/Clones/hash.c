// The clone check's harness (launch/check-clones.sh): runs every kernel whose arithmetic can
// round (GELU, e^x, the softmax and its backward, the loss, attention's and the layers' products,
// layer norm, the LSTM steps, the optimizers, the sums) on fixed inputs and prints an FNV-1a hash
// of each group's outputs. The script builds it once per x86-64 level, with the kernels compiled
// for that level alone, and once against the dispatched kernels; the hashes must all be equal.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CCohort.h"

static unsigned long long hash = 1469598103934665603ULL;

static void mix(const void *p, long bytes) {
    const unsigned char *c = p;
    for (long i = 0; i < bytes; i++) { hash ^= c[i]; hash *= 1099511628211ULL; }
}

// One line per group, then a fresh hash: a group that rounds differently is named alone.
static void report(const char *group) {
    printf("%-18s %016llx\n", group, hash);
    hash = 1469598103934665603ULL;
}

// n floats, uniform on [lo, hi) from a fixed linear congruential sequence (not rand(): the same everywhere).
static float *filled(long n, float lo, float hi, unsigned seed) {
    float *x = malloc(n * sizeof(float));
    if (!x) { fprintf(stderr, "hash: out of memory\n"); exit(2); }
    unsigned state = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(state >> 8) / 16777216.0f;
    }
    return x;
}

#define N (1L << 20)

int main(void) {
    float *x = filled(N, -8, 8, 1), *dy = filled(N, -1, 1, 2), *y = filled(N, 0, 0, 3), *s = filled(N, 0, 0, 4),
          *z = filled(N, 0, 0, 5);

    cohort_gelu_forward(x, y, N); mix(y, N * 4);
    cohort_gelu_backward(x, dy, z, N); mix(z, N * 4);
    cohort_gelu_forward_slope(x, y, s, N); mix(y, N * 4); mix(s, N * 4);
    cohort_multiply(dy, s, z, N); mix(z, N * 4);
    report("gelu");
    cohort_gelu_tanh_forward(x, y, N); mix(y, N * 4);
    cohort_gelu_tanh_backward(x, dy, z, N); mix(z, N * 4);
    cohort_gelu_tanh_forward_slope(x, y, s, N); mix(y, N * 4); mix(s, N * 4);
    report("gelu_tanh");
    float *wide = filled(N, -90, 90, 6);
    cohort_exp(wide, y, N); mix(y, N * 4);
    report("exp");

    // Every causal prefix of rows up to 70 long, then both backward forms over them.
    for (long T = 1; T <= 70; T++) {
        float *rows = filled(T * T, -30, 30, (unsigned)T), *dp = filled(T * T, -1, 1, (unsigned)T + 100),
              *ds = filled(T * T, 0, 0, 1);
        for (long i = 0; i < T; i++) cohort_softmax_prefix(rows + i * T, i + 1, T);
        mix(rows, T * T * 4);
        cohort_softmax_backward(rows, dp, ds, T, T, 1, T); mix(ds, T * T * 4);
        cohort_softmax_backward(rows, dp, ds, T, T, 0, T > 3 ? T - 2 : T); mix(ds, T * T * 4);
        free(rows); free(dp); free(ds);
    }
    report("softmax");
    int labels[37];
    for (int i = 0; i < 37; i++) labels[i] = (i * 7) % 63;
    long right = 0;
    double loss = cohort_softmax_cross_entropy(x, labels, 37, 63, 0.9f, 0.1f / 62, z, 0.5f, &right);
    mix(&loss, sizeof loss); mix(&right, sizeof right); mix(z, 37 * 63 * 4);
    report("cross_entropy");

    // Attention's products: full and partial tiles, both layouts of A, every span.
    float *padded = filled(64 * 16 * 4, 0, 0, 9);
    const long Ms[] = {64, 13, 5}, Ns[] = {64, 32, 20}, Ks[] = {32, 64, 7};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int span = 0; span < 4; span++) {
                    memset(z, 0, 64 * 200 * 4);
                    cohort_attention_product(Ms[a], Ns[b], Ks[c], 0.17f, x, 200, 1, dy, 100, z, 200, span, padded);
                    mix(z, 64 * 200 * 4);
                    cohort_attention_product(Ms[a], Ns[b], Ks[c], 1.0f, x, 1, 200, dy, 100, z, 200, span, padded);
                    mix(z, 64 * 200 * 4);
                }
    cohort_transpose(x, 384, 64, 32, z); mix(z, 64 * 32 * 4);
    report("attention");

    const long R = 96, W = 131;
    float *gamma = filled(W, 0.5f, 1.5f, 11), *beta = filled(W, -1, 1, 12), *mean = filled(R, 0, 0, 1),
          *inverse = filled(R, 0, 0, 1), *dgamma = filled(W, 0, 0, 1), *dbeta = filled(W, 0, 0, 1);
    cohort_layer_norm_forward(x, gamma, beta, y, mean, inverse, 0, R, W, 1e-5f);
    mix(y, R * W * 4); mix(mean, R * 4); mix(inverse, R * 4);
    cohort_layer_norm_backward(x, dy, gamma, mean, inverse, z, dgamma, dbeta, R, W, 0, R, 0, W);
    mix(z, R * W * 4); mix(dgamma, W * 4); mix(dbeta, W * 4);
    report("layer_norm");

    // The layers' products: a partial last panel, both packings, bias, accumulate, streamed.
    const long K = 300, P = 200, M = 150;
    float *packed = filled(cohort_panels_size(K, P), 0, 0, 1), *bias = filled(P, -1, 1, 13),
          *scratch = filled(cohort_panels_size(K, P), 0, 0, 1);
    for (int transposed = 0; transposed < 2; transposed++) {
        const long ldb = transposed ? K : P, panels = cohort_panel_count(P);
        cohort_pack_panels(0, panels, K, P, dy, ldb, transposed, packed);
        memcpy(z, y, M * P * 4);
        cohort_panel_product(0, M, 0, panels, P, K, x, K, 1, packed, z, P, 0, bias, 0); mix(z, M * P * 4);
        memcpy(z, y, M * P * 4);
        cohort_panel_product(0, M, 0, panels, P, K, x, 1, M, packed, z, P, 1, NULL, 0); mix(z, M * P * 4);
        memcpy(z, y, M * P * 4);
        cohort_panel_product_streamed(0, cohort_panel_rows(), 0, panels, P, K, x, K, 1, dy, ldb, transposed, z, P, 1, NULL,
                                      scratch);
        mix(z, M * P * 4);
    }
    report("products");

    const long H = 40, B = 7;
    float *weights = filled(4 * H * H, -0.3f, 0.3f, 14), *forward = filled(cohort_lstm_forward_panels(H) * H * 32, 0, 0, 1),
          *backward = filled(cohort_lstm_backward_panels(H) * 4 * H * 32, 0, 0, 1);
    cohort_lstm_pack_forward(weights, forward, H);
    cohort_lstm_pack_backward(weights, backward, H);
    float *lstmBias = filled(4 * H, -0.5f, 0.5f, 15), *previous = filled(B * H, -1, 1, 16), *gates = filled(B * 4 * H, -2, 2, 17),
          *previousCell = filled(B * H, -1, 1, 18), *cell = filled(B * H, 0, 0, 1), *hidden = filled(B * H, 0, 0, 1);
    cohort_lstm_forward_step(forward, lstmBias, H, B, 0, cohort_lstm_forward_panels(H), previous, H, gates, 4 * H, previousCell,
                             H, cell, hidden, H);
    mix(gates, B * 4 * H * 4); mix(cell, B * H * 4); mix(hidden, B * H * 4);
    float *nextGates = filled(B * 4 * H, -1, 1, 19), *dgates = filled(B * 4 * H, 0, 0, 1), *dh = filled(B * H, -1, 1, 20),
          *dc = filled(B * H, -0.5f, 0.5f, 21);
    cohort_lstm_backward_step(backward, H, B, 0, cohort_lstm_backward_panels(H), nextGates, 4 * H, dgates, gates, 4 * H, cell,
                              previousCell, H, H, dh, H, dc);
    mix(dgates, B * 4 * H * 4); mix(dc, B * H * 4);
    report("lstm");

    const long n = 100003;
    float *theta = filled(n, -1, 1, 22), *m = filled(n, -0.1f, 0.1f, 23), *v = filled(n, 0, 0.01f, 24);
    cohort_adam_update(theta, dy, m, v, 1, n, 0.9f, 0.999f, 1e-3f, 1e-8f, 0, 1e-4f);
    mix(theta, n * 4); mix(m, n * 4); mix(v, n * 4);
    cohort_sgd_update(theta, dy, m, 1, n, 0.05f, 0.9f, 1, 1e-4f);
    mix(theta, n * 4); mix(m, n * 4);
    report("optimizers");

    float *sum = filled(W, 0, 0, 1);
    cohort_add_rows(x, sum, 97, W); mix(sum, W * 4);
    const float total = cohort_sum(x, 100001); mix(&total, sizeof total);
    const double squares = cohort_sum_squares(x, 100001); mix(&squares, sizeof squares);
    cohort_add(x, dy, z, N); mix(z, N * 4);
    report("sums");
    return 0;
}
