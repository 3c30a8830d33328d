// A model of the optimizer phase in C over the benchmark MLP's 10,492,416 parameters (four buffers θ, g, m, v),
// one thread, best of 8 passes per variant, repeated 3 times:
//   traffic only       Adam's memory traffic (read θ g m v, write θ m v) with an add and a multiply per element
//   adam               torch's Adam per element (lerp, a square root and two divisions), AVX-512
//   adam + memset      the update, then zeroing g in a pass of its own (the phase before 2026-12-07)
//   adam zeroing g     the update writing g = 0 as it goes (the phase since)
//   scale+adam+memset  with grad_clip: a clipping pass first (before), against `adam zeroing g` (since)
//   clang -O2 -mavx512f scripts/bench/adam_passes.c -o /tmp/adam_passes && /tmp/adam_passes     (an AVX-512 CPU)
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

__attribute__((noinline)) static void traffic(float *restrict p, const float *restrict g, float *restrict m,
                                              float *restrict v, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __m512 gi = _mm512_load_ps(g + i);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(m + i), _mm512_set1_ps(0.5f)), gi);
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(v + i), _mm512_set1_ps(0.5f)), gi);
        _mm512_store_ps(m + i, mi); _mm512_store_ps(v + i, vi);
        _mm512_store_ps(p + i, _mm512_add_ps(_mm512_load_ps(p + i), _mm512_mul_ps(mi, vi)));
    }
}

__attribute__((noinline)) static void adam(float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                                           size_t n, int zero) {
    for (size_t i = 0; i < n; i += 16) {
        __m512 gi = _mm512_load_ps(g + i), mi = _mm512_load_ps(m + i), vi = _mm512_load_ps(v + i), pi = _mm512_load_ps(p + i);
        mi = _mm512_add_ps(mi, _mm512_mul_ps(_mm512_set1_ps(0.1f), _mm512_sub_ps(gi, mi)));
        vi = _mm512_add_ps(_mm512_mul_ps(vi, _mm512_set1_ps(0.999f)), _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.001f), gi), gi));
        __m512 d = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(0.7f)), _mm512_set1_ps(1e-8f));
        pi = _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(-0.001f), mi), d));
        _mm512_store_ps(p + i, pi); _mm512_store_ps(m + i, mi); _mm512_store_ps(v + i, vi);
        if (zero) _mm512_store_ps(g + i, _mm512_setzero_ps());
    }
}

__attribute__((noinline)) static void scale(float *g, size_t n, float a) { for (size_t i = 0; i < n; i++) g[i] *= a; }

int main(void) {
    const size_t n = 10492416;
    float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4), *m = aligned_alloc(64, n * 4), *v = aligned_alloc(64, n * 4);
    for (size_t i = 0; i < n; i++) { p[i] = 1; g[i] = 0.001f; m[i] = 0; v[i] = 0; }
    for (int rep = 0; rep < 3; rep++) {
        double b[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
        for (int r = 0; r < 8; r++) {
            double t = now(); traffic(p, g, m, v, n); t = now() - t; if (t < b[0]) b[0] = t;
            t = now(); adam(p, g, m, v, n, 0); t = now() - t; if (t < b[1]) b[1] = t;
            t = now(); adam(p, g, m, v, n, 0); memset(g, 0, n * 4); t = now() - t; if (t < b[2]) b[2] = t;
            t = now(); adam(p, g, m, v, n, 1); t = now() - t; if (t < b[3]) b[3] = t;
            t = now(); scale(g, n, 0.5f); adam(p, g, m, v, n, 0); memset(g, 0, n * 4); t = now() - t; if (t < b[4]) b[4] = t;
        }
        printf("traffic only %.2f ms (%.1f GB/s) | adam %.2f | adam + memset %.2f | adam zeroing g %.2f | scale+adam+memset %.2f ms\n",
               b[0] * 1e3, 7.0 * n * 4 / b[0] / 1e9, b[1] * 1e3, b[2] * 1e3, b[3] * 1e3, b[4] * 1e3);
    }
    return 0;
}
