/* Linear's float32 weight gradient g[N, K] += dy[M, N]ᵀ · x[M, K]: OpenBLAS sgemm (TN, beta 1; what Linear used before
   2026-12-07) against our own kernel f32_linear_weight_gradient (Sources/CKernels), which also sums the squares of
   the new g (the clipping norm's share of it, GradientNormTally) — so its time includes what the norm's pass over
   g used to cost separately. g is evicted from the caches before every call (a 64 MB write), as a training step
   finds it; calls alternate; medians of 21. One thread. Also checks both results agree and the sum of squares.
   Build: clang -O2 -I Sources/CKernels/include scripts/bench/weight_gradient.c Sources/CKernels/bf16_gemm.c \
            -o /tmp/weight_gradient -lopenblas -lm
   Run:   OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell /tmp/weight_gradient   (an AVX-512 CPU; on a Zen 4
   speechain-mpi restarts OpenBLAS with OPENBLAS_CORETYPE=Haswell, so set it the same way to compare) */
#include "BF16GEMM.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(void) {
    if (!f32_linear_supported()) { fprintf(stderr, "this CPU has no AVX-512F\n"); return 1; }
    size_t shapes[][3] = {{64, 512, 2048}, {64, 2048, 2048}, {64, 2048, 512}, {16, 2048, 2048}, {256, 2048, 2048}, {1184, 256, 256}, {1184, 1024, 256}, {1184, 256, 1024}};
    float *scr = malloc(64 << 20);
    for (int s = 0; s < 8; s++) {
        size_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *dy = aligned_alloc(64, M * N * 4 + 64), *x = aligned_alloc(64, M * K * 4 + 64);
        float *g1 = aligned_alloc(64, N * K * 4 + 64), *g2 = aligned_alloc(64, N * K * 4 + 64);
        void *ws = aligned_alloc(64, f32_linear_weight_gradient_workspace_bytes(M, K, N) + 64);
        for (size_t i = 0; i < M * N; i++) dy[i] = (float)((i * 2654435761u) % 1000) / 1000 - 0.5f;
        for (size_t i = 0; i < M * K; i++) x[i] = (float)((i * 40503u) % 977) / 977 - 0.5f;
        memset(g1, 0, N * K * 4); memset(g2, 0, N * K * 4);
        double to[21], tb[21], ss = 0;
        for (int r = 0; r < 21; r++) {
            memset(scr, r, 64 << 20);
            double t = now(); f32_linear_weight_gradient(dy, x, g1, M, K, N, ws, &ss); to[r] = now() - t;
            memset(scr, r, 64 << 20);
            t = now(); cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1, dy, N, x, K, 1, g2, K); tb[r] = now() - t;
        }
        double maxd = 0, ref = 0;
        for (size_t i = 0; i < N * K; i++) { double d = fabs(g1[i] - g2[i]); if (d > maxd) maxd = d; ref += (double)g2[i] * g2[i]; }
        qsort(to, 21, 8, cmp); qsort(tb, 21, 8, cmp);
        double fl = 2.0 * M * N * K;
        printf("%4zu x %4zu -> %4zu: own %.3f ms (%.1f GFLOP/s)  openblas %.3f ms (%.1f)  max|diff| %.2g  sumsq rel %.2g\n", M, K, N,
               to[10] * 1e3, fl / to[10] / 1e9, tb[10] * 1e3, fl / tb[10] / 1e9, maxd, fabs(ss - ref) / ref);
    }
}
