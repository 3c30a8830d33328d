/* Conv2d's float32 weight gradient for one utterance, g += dy·colsᵀ: our f32_conv_weight_gradient (Sources/CKernels;
   panels of 64 patch entries unfolded just in time) against a plain-C unfold + OpenBLAS sgemm NT (beta 1). Default
   shape: the ASR prenet's second convolution (Cin 256, 3×3, stride 2, 149×39 in → 74×19 positions, Cout 256).
   Medians of 11; the unfold here is scalar C, slower than Conv2d's own (conv_unfold): compare the products with
   `bench-asr`'s by-shape lines, which time sgemm alone.
   Build: clang -O2 -I Sources/CKernels/include scripts/bench/conv_weight_gradient.c Sources/CKernels/bf16_gemm.c \
            -o /tmp/conv_weight_gradient -lopenblas -lm
   Run:   OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell /tmp/conv_weight_gradient [Cin H W Cout stride] */
#include "BF16GEMM.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    if (!f32_linear_supported()) { fprintf(stderr, "this CPU has no AVX-512F\n"); return 1; }
    size_t C = 256, H = 149, W = 39, k = 3, s = 2, O = 256;
    if (argc > 1) { C = atoi(argv[1]); H = atoi(argv[2]); W = atoi(argv[3]); O = atoi(argv[4]); s = atoi(argv[5]); }
    size_t oh = (H - k) / s + 1, ow = (W - k) / s + 1, n = oh * ow, K = C * k * k;
    float *x = aligned_alloc(64, C * H * W * 4 + 64), *dy = aligned_alloc(64, O * n * 4 + 64);
    float *g1 = aligned_alloc(64, O * K * 4 + 64), *g2 = aligned_alloc(64, O * K * 4 + 64), *cols = aligned_alloc(64, K * n * 4 + 64);
    void *ws = aligned_alloc(64, f32_conv_weight_gradient_workspace_bytes(C, k, n) + 64);
    for (size_t i = 0; i < C * H * W; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000 - 0.5f;
    for (size_t i = 0; i < O * n; i++) dy[i] = (float)((i * 40503u) % 977) / 977 - 0.5f;
    memset(g1, 0, O * K * 4); memset(g2, 0, O * K * 4);
    double to[11], tb[11];
    for (int r = 0; r < 11; r++) {
        double t = now(); f32_conv_weight_gradient(x, C, H, W, k, s, oh, ow, dy, O, g1, ws); to[r] = now() - t;
        t = now();
        for (size_t c = 0, q = 0; c < C; c++) for (size_t u = 0; u < k; u++) for (size_t v = 0; v < k; v++, q++)
            for (size_t i = 0; i < oh; i++) for (size_t j = 0; j < ow; j++) cols[q * n + i * ow + j] = x[c * H * W + (s * i + u) * W + s * j + v];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, O, K, n, 1, dy, n, cols, n, 1, g2, K);
        tb[r] = now() - t;
    }
    double maxd = 0, mag = 0;
    for (size_t i = 0; i < O * K; i++) { double d = fabs(g1[i] - g2[i]); if (d > maxd) maxd = d; if (fabs(g2[i]) > mag) mag = fabs(g2[i]); }
    qsort(to, 11, 8, cmp); qsort(tb, 11, 8, cmp);
    double fl = 2.0 * O * K * n;
    printf("Cin %zu %zux%zu -> %zu (n %zu): own %.2f ms (%.1f GFLOP/s)  unfold+sgemm %.2f ms (%.1f)  max|diff| %.2g of %.2g\n", C, H, W, O, n,
           to[5] * 1e3, fl / to[5] / 1e9, tb[5] * 1e3, fl / tb[5] / 1e9, maxd, mag);
}
