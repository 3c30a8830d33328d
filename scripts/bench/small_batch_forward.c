/* Linear's float32 forward for a small batch: OpenBLAS sgemm as yᵀ = W·xᵀ (the orientation Linear uses with OpenBLAS
   for ≤ 256 rows; its transpose pass not counted) against our own kernel f32_linear_forward (Sources/CKernels,
   bias and transpose included). W is evicted from the caches before every call (a 64 MB write), as a training step
   finds it after the optimizer's pass; calls alternate; medians of 21. One thread.
   Build: clang -O2 -I Sources/CKernels/include scripts/bench/small_batch_forward.c Sources/CKernels/bf16_gemm.c \
            -o /tmp/small_batch_forward -lopenblas -lm
   Run:   OPENBLAS_NUM_THREADS=1 /tmp/small_batch_forward IN OUT ROWS   (e.g. 2048 2048 64)
   (speechain-mpi restarts OpenBLAS with OPENBLAS_CORETYPE=Haswell on a Zen 4: set it the same way to compare.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include "BF16GEMM.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s IN OUT ROWS\n", argv[0]); return 2; }
    if (!f32_linear_supported()) { fprintf(stderr, "this CPU lacks AVX-512F: only OpenBLAS runs here\n"); return 1; }
    const size_t in = atoi(argv[1]), out = atoi(argv[2]), rows = atoi(argv[3]);
    float *w = aligned_alloc(64, 4 * in * out), *x = aligned_alloc(64, 4 * rows * in), *b = malloc(4 * out);
    float *y1 = malloc(4 * rows * out), *y2 = malloc(4 * rows * out);
    void *ws = aligned_alloc(64, (f32_linear_forward_workspace_bytes(rows, in, out) + 63) / 64 * 64);
    char *flush = malloc(64 << 20);
    for (size_t i = 0; i < in * out; i++) w[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    for (size_t i = 0; i < rows * in; i++) x[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    for (size_t i = 0; i < out; i++) b[i] = 0;
    double t[2][21];
    for (int r = 0; r < 21; r++)
        for (int m = 0; m < 2; m++) {
            memset(flush, r + m, 64 << 20);
            const double t0 = now();
            if (m == 0) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, out, rows, in, 1, w, in, x, in, 0, y1, rows);
            else f32_linear_forward(x, w, b, y2, rows, in, out, ws);
            t[m][r] = now() - t0;
        }
    double worst = 0;   // y2 = (y1)ᵀ up to the order of the sums
    for (size_t i = 0; i < rows; i++)
        for (size_t o = 0; o < out; o++) worst = fmax(worst, fabs(y2[i * out + o] - y1[o * rows + i]));
    const char *name[2] = {"OpenBLAS yT = W.xT", "own f32_linear_forward"};
    for (int m = 0; m < 2; m++) {
        qsort(t[m], 21, sizeof(double), cmp);
        printf("%zu rows x %zu -> %zu  %-24s %.3f ms %.1f GFLOP/s\n", rows, in, out, name[m], t[m][10] * 1e3,
               2.0 * rows * in * out / t[m][10] / 1e9);
    }
    printf("largest difference %.3g\n", worst);
    return 0;
}
