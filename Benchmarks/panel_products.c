// Cohort's row-by-row products (Sources/CCohort/products.c) against cblas_sgemm, one thread, at
// the shapes of the reference workloads: GFLOP/s including the packing, best of 5. Built and run
// by Benchmarks/panel-products.sh; figures quoted in docs/design.md come from it.
#include "products.c"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *random_floats(long n) {
    float *x = malloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    return x;
}

// Best time of 5 of `body`, each repeated to about 0.1 s.
#define BEST(flops, body)                                                          \
    ({                                                                             \
        int reps_ = (int)(1e8 / (flops)) + 1;                                      \
        double best_ = 1e9;                                                        \
        for (int round_ = 0; round_ < 5; round_++) {                               \
            double t0_ = now();                                                    \
            for (int r_ = 0; r_ < reps_; r_++) { body; }                           \
            double t_ = (now() - t0_) / reps_;                                     \
            best_ = t_ < best_ ? t_ : best_;                                       \
        }                                                                          \
        (flops) / best_ / 1e9;                                                     \
    })

int main(void) {
    openblas_set_num_threads(1);
    // rows (batch · positions), in, out, rows per RowBlocks block; the workload they come from
    const struct { long m, in, out, block; const char *what; } shapes[] = {
        {768, 128, 384, 64, "W6 qkv"},      {768, 128, 512, 64, "W6 fc"},   {768, 512, 128, 64, "W6 proj"},
        {2048, 384, 1152, 256, "W7 qkv"},   {2048, 384, 1536, 256, "W7 fc"}, {2048, 1536, 384, 256, "W7 proj"},
        {2048, 256, 63, 64, "W5 head"},     {64, 784, 256, 16, "W1 dense_1"}, {64, 3136, 1024, 16, "W3 dense_1"},
    };
    printf("%-11s %5s %5s %5s | forward: Cohort  sgemm whole  sgemm blocks | input gradient: Cohort  sgemm blocks\n", "shape", "rows",
           "in", "out");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const long M = shapes[s].m, IN = shapes[s].in, OUT = shapes[s].out, B = shapes[s].block;
        float *x = random_floats(M * IN), *w = random_floats(IN * OUT), *dy = random_floats(M * OUT);
        float *y = malloc(sizeof(float) * M * OUT), *dx = malloc(sizeof(float) * M * IN);
        long size = cohort_panels_size(IN, OUT) > cohort_panels_size(OUT, IN) ? cohort_panels_size(IN, OUT) : cohort_panels_size(OUT, IN);
        float *packed = malloc(sizeof(float) * size);
        const double flops = 2.0 * M * IN * OUT;
        const long panels = cohort_panel_count(OUT), inPanels = cohort_panel_count(IN);
        const int small = M <= MC;
        // What PanelProduct.multiply does for one range of rows (Sources/Cohort/Support/PanelProduct.swift).
        double forward = BEST(flops, {
            if (small) {
                cohort_panel_product_streamed(0, M, 0, panels, OUT, IN, x, IN, 1, w, OUT, 0, y, OUT, 0, NULL, packed);
            } else {
                cohort_pack_panels(0, panels, IN, OUT, w, OUT, 0, packed);
                cohort_panel_product(0, M, 0, panels, OUT, IN, x, IN, 1, packed, y, OUT, 0, NULL, 0);
            }
        });
        double whole = BEST(flops, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, OUT, IN, 1, x, IN, w, OUT, 0, y, OUT));
        double blocks = BEST(flops, for (long r = 0; r < M; r += B) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, OUT, IN,
                                                                                  1, x + r * IN, IN, w, OUT, 0, y + r * OUT, OUT));
        double gradient = BEST(flops, {
            if (small) {
                cohort_pack_panels(0, cohort_panel_count(M), OUT, M, dy, OUT, 1, packed);
                cohort_panel_product(0, IN, 0, cohort_panel_count(M), M, OUT, w, OUT, 1, packed, dx, IN, 0, NULL, 1);
            } else {
                cohort_pack_panels(0, inPanels, OUT, IN, w, OUT, 1, packed);
                cohort_panel_product(0, M, 0, inPanels, IN, OUT, dy, OUT, 1, packed, dx, IN, 0, NULL, 0);
            }
        });
        double gradientBlocks = BEST(flops, for (long r = 0; r < M; r += B) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, IN, OUT,
                                                                                          1, dy + r * OUT, OUT, w, OUT, 0, dx + r * IN, IN));
        printf("%-11s %5ld %5ld %5ld | %16.1f %12.1f %13.1f | %23.1f %13.1f\n", shapes[s].what, M, IN, OUT, forward, whole, blocks,
               gradient, gradientBlocks);
        free(x), free(w), free(dy), free(y), free(dx), free(packed);
    }
    return 0;
}
