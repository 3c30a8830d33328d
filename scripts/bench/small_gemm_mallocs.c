/* Counts the mallocs OpenBLAS makes inside cblas_sgemm for attention-like products (P·V: [tq, tk]·[tk, dh], NN;
 * and an NT product of the same operands), contiguous and as head views of a [T, d] row (ld = d), beta 0 and 1.
 * OpenBLAS 0.3.21 (Debian 12) on AVX-512 (Cooperlake kernels): the small-matrix NN kernel mallocs on every call
 * when dh is not a multiple of 16 (8, 24, 36: yes; 16, 32, 64: no); NT never does. Not part of CI.
 *
 *   gcc -O1 scripts/bench/small_gemm_mallocs.c -o /tmp/sgm -lopenblas -I/usr/include/x86_64-linux-gnu/openblas-pthread
 *   TQ=60 TK=60 DH=36 DM=144 OPENBLAS_NUM_THREADS=1 /tmp/sgm
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
extern void *__libc_malloc(size_t);
static int counting = 0, count = 0;
/* every malloc of the process while `counting` (glibc 2.36 has no hooks: interpose) */
void *malloc(size_t s) { if (counting) count++; return __libc_malloc(s); }
int main() {
  int tq = atoi(getenv("TQ")), tk = atoi(getenv("TK")), dh = atoi(getenv("DH")), d = atoi(getenv("DM"));
  float *P = calloc(tq*tk,4), *V = calloc(tk*d,4), *C = calloc(tq*d,4);
  for (int beta = 0; beta < 2; beta++) for (int ld = 0; ld < 2; ld++) {
    int ldb = ld ? d : dh;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, dh, tk, 1, P, tk, V, ldb, beta, C, ld ? d : dh);
    counting = 1; count = 0;
    for (int i = 0; i < 10; i++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, dh, tk, 1, P, tk, V, ldb, beta, C, ld ? d : dh);
    counting = 0;
    printf("NN beta %d strided %d: %d mallocs in 10 calls\n", beta, ld, count);
    counting = 1; count = 0;
    for (int i = 0; i < 10; i++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, tk, dh, 1, C, ld ? d : dh, V, ldb, beta, P, tk);
    counting = 0;
    printf("NT beta %d strided %d: %d mallocs in 10 calls\n", beta, ld, count);
  }
}
