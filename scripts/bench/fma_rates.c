// One core's peak rate of the two multiply-add instructions the products can use, measured with 16 independent
// accumulators in registers (no memory operands): vfmadd231ps (16 float32 multiply-adds, 32 FLOP) and, where the
// CPU has AVX512_BF16, vdpbf16ps (32 bfloat16 products summed pairwise into 16 float32 lanes, 64 FLOP). Whether
// native bfloat16 products can beat float32 sgemm on a CPU is decided here: on an Intel Xeon family 6 model 207
// (2026-12-07) vdpbf16ps retired at half the rate of vfmadd231ps, so its FLOP rate only equals float32's.
//   clang -O2 scripts/bench/fma_rates.c -o /tmp/fma_rates && /tmp/fma_rates       (Swift's clang: /opt/swift/usr/bin)
#include <cpuid.h>
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define R(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)(i) * 1e-3f);
#define RESET(i) c##i = _mm512_set1_ps((float)(i) * 1e-3f);
#define SUM(i) s += _mm512_reduce_add_ps(c##i);
#define DP(i) c##i = _mm512_dpbf16_ps(c##i, a, b);
#define FM(i) c##i = _mm512_fmadd_ps(fa, fb, c##i);

__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) static void run(int bf16) {
    R(DECL)
    const long n = 200000000 / 16;
    float s = 0;
    if (bf16) {
        __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3c003c00);
        double t = now();
        for (long k = 0; k < n; k++) { R(DP) __asm__ volatile("" ::"v"(a), "v"(b)); }
        t = now() - t; R(SUM)
        printf("vdpbf16ps   %.2f G instructions/s = %6.1f GFLOP/s (checksum %g)\n", n * 16 / t / 1e9, n * 16 * 64 / t / 1e9, s);
    }
    R(RESET)
    s = 0;
    __m512 fa = _mm512_set1_ps(1.0001f), fb = _mm512_set1_ps(0.9999f);
    double t = now();
    for (long k = 0; k < n; k++) { R(FM) __asm__ volatile("" ::"v"(fa), "v"(fb)); }
    t = now() - t; R(SUM)
    printf("vfmadd231ps %.2f G instructions/s = %6.1f GFLOP/s (checksum %g)\n", n * 16 / t / 1e9, n * 16 * 32 / t / 1e9, s);
}

int main(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) { printf("no AVX-512F on this CPU\n"); return 0; }
    int bf16 = __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
    if (!bf16) printf("no AVX512_BF16 on this CPU: float32 only\n");
    run(bf16);
    return 0;
}
