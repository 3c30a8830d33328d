/* Conv2d's three float32 products for a batch of utterances, our kernels (Sources/CKernels/bf16_gemm.c) against
   im2col/col2im + OpenBLAS sgemm, x and dy cold in memory as in a training step (64 MB written between runs):
     forward          y = W·cols + bias, ReLU      f32_conv_forward (+ f32_conv_forward_pack once)  | unfold + sgemm NN
     weight gradient  g += dy·colsᵀ                f32_conv_weight_gradient                          | unfold + sgemm NT
     input gradient   dx = fold(Wᵀ·dy), ReLU mask  f32_conv_input_gradient (+ f32_transpose once)    | sgemm TN + fold
   Default shape: the ASR prenet's second convolution (Cin 256, 3×3, stride 2, 149×39 in → 74×19 positions, Cout 256),
   16 utterances. Medians of 7 runs of the whole batch; the largest difference between the two results is printed.
   Build: clang -O2 -I Sources/CKernels/include scripts/bench/conv_products.c Sources/CKernels/bf16_gemm.c \
            Sources/CKernels/VectorKernels.c Sources/CKernels/CPUFeatures.c -o /tmp/conv_products -lopenblas -lm
   Run:   OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell /tmp/conv_products [Cin H W Cout stride batch] */
#include "BF16GEMM.h"
#include "CKernels.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
static float *floats(size_t n) { return aligned_alloc(64, (n * 4 + 127) / 64 * 64); }
static double max_diff(const float *a, const float *b, size_t n, double *mag) {
    double m = 0; *mag = 0;
    for (size_t i = 0; i < n; i++) { const double d = fabs(a[i] - b[i]); if (d > m) m = d; if (fabs(b[i]) > *mag) *mag = fabs(b[i]); }
    return m;
}
enum { REPS = 7 };
int main(int argc, char **argv) {
    if (!f32_linear_supported()) { fprintf(stderr, "this CPU has no AVX-512F\n"); return 1; }
    size_t C = 256, H = 149, W = 39, k = 3, s = 2, O = 256, B = 16;
    if (argc > 1) { C = atoi(argv[1]); H = atoi(argv[2]); W = atoi(argv[3]); O = atoi(argv[4]); s = atoi(argv[5]); B = atoi(argv[6]); }
    const size_t oh = (H - k) / s + 1, ow = (W - k) / s + 1, n = oh * ow, K = C * k * k, X = C * H * W;
    const ck_path path = ck_best_path();
    float *x = floats(B * X), *dy = floats(B * O * n), *mask = floats(B * X), *w = floats(O * K), *bias = floats(O);
    float *y1 = floats(B * O * n), *y2 = floats(B * O * n), *g1 = floats(O * K), *g2 = floats(O * K);
    float *dx1 = floats(B * X), *dx2 = floats(B * X), *cols = floats(K * n), *wt = floats(O * K);
    void *wf = floats(f32_conv_forward_workspace_bytes(C, k, O) / 4), *ww = floats(f32_conv_weight_gradient_workspace_bytes(C, k, n, O) / 4);
    void *wx = floats(f32_conv_input_gradient_workspace_bytes(C, k, n, O) / 4);
    for (size_t i = 0; i < B * X; i++) { x[i] = (float)((i * 2654435761u) % 1000) / 1000 - 0.5f; mask[i] = (float)((i * 7919u) % 13) - 4; }
    for (size_t i = 0; i < B * O * n; i++) dy[i] = (float)((i * 40503u) % 977) / 977 - 0.5f;
    for (size_t i = 0; i < O * K; i++) w[i] = (float)((i * 69069u) % 991) / 991 - 0.5f;
    for (size_t i = 0; i < O; i++) bias[i] = (float)i / O - 0.5f;
    const size_t junk_bytes = 64u << 20;
    char *junk = malloc(junk_bytes);
    double t[6][REPS];
    for (int r = 0; r < REPS; r++) {
        double t0;
        memset(junk, r, junk_bytes); t0 = now();
        f32_conv_forward_pack(w, O, K, wf);
        for (size_t b = 0; b < B; b++) f32_conv_forward(x + b * X, C, H, W, k, s, oh, ow, O, bias, 1, y1 + b * O * n, wf);
        t[0][r] = now() - t0;
        memset(junk, r, junk_bytes); t0 = now();
        for (size_t b = 0; b < B; b++) {
            float *yb = y2 + b * O * n;
            ck_conv_unfold(path, x + b * X, cols, C, H, W, k, s, oh, ow);
            for (size_t o = 0; o < O; o++) for (size_t p = 0; p < n; p++) yb[o * n + p] = bias[o];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, n, K, 1, w, K, cols, n, 1, yb, n);
            for (size_t i = 0; i < O * n; i++) yb[i] = yb[i] <= 0 ? 0 : yb[i];
        }
        t[1][r] = now() - t0;
        memset(g1, 0, O * K * 4); memset(g2, 0, O * K * 4);
        memset(junk, r, junk_bytes); t0 = now();
        for (size_t b = 0; b < B; b++) f32_conv_weight_gradient(x + b * X, C, H, W, k, s, oh, ow, dy + b * O * n, O, g1, ww);
        t[2][r] = now() - t0;
        memset(junk, r, junk_bytes); t0 = now();
        for (size_t b = 0; b < B; b++) {
            ck_conv_unfold(path, x + b * X, cols, C, H, W, k, s, oh, ow);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, O, K, n, 1, dy + b * O * n, n, cols, n, 1, g2, K);
        }
        t[3][r] = now() - t0;
        memset(junk, r, junk_bytes); t0 = now();
        f32_transpose(w, O, K, wt);
        for (size_t b = 0; b < B; b++)
            f32_conv_input_gradient(wt, dy + b * O * n, O, C, H, W, k, s, oh, ow, mask + b * X, dx1 + b * X, (int)path, wx);
        t[4][r] = now() - t0;
        memset(junk, r, junk_bytes); t0 = now();
        for (size_t b = 0; b < B; b++) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, n, O, 1, w, K, dy + b * O * n, n, 0, cols, n);
            ck_conv_fold(path, cols, dx2 + b * X, C, H, W, k, s, oh, ow, 1, mask + b * X);
        }
        t[5][r] = now() - t0;
    }
    for (int i = 0; i < 6; i++) qsort(t[i], REPS, 8, cmp);
    const double fl = 2.0 * O * K * n * B;
    const char *names[3] = {"forward", "weight gradient", "input gradient"};
    const char *theirs[3] = {"unfold + sgemm", "unfold + sgemm", "sgemm + fold"};
    double mag[3], diff[3] = {max_diff(y1, y2, B * O * n, &mag[0]), max_diff(g1, g2, O * K, &mag[1]), max_diff(dx1, dx2, B * X, &mag[2])};
    printf("Cin %zu, %zux%zu -> Cout %zu, k %zu s %zu, %zu positions, %zu utterances (medians of %d, x cold)\n", C, H, W, O, k, s, n, B, REPS);
    for (int i = 0; i < 3; i++)
        printf("%-16s own %7.1f ms (%5.1f GFLOP/s)   %-15s %7.1f ms (%5.1f)   max|diff| %.2g of %.2g\n", names[i],
               t[2 * i][REPS / 2] * 1e3, fl / t[2 * i][REPS / 2] / 1e9, theirs[i], t[2 * i + 1][REPS / 2] * 1e3,
               fl / t[2 * i + 1][REPS / 2] / 1e9, diff[i], mag[i]);
}
