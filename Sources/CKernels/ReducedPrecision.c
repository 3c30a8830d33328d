// Float32 -> float16/bfloat16 -> float32 rounding over contiguous buffers, on three paths: AVX-512, F16C/AVX2 and a
// portable loop. See include/CKernels.h for the contract.
//
// Why C: Swift cannot compile one function for a wider target than the rest of the binary, and Swift's Float16
// conversions compiled for the baseline x86-64 call a software routine (~0.7 GB/s here). Clang's per-function
// `target` attribute lets the fast kernels use vcvtps2ph/vcvtph2ps and wide integer ops while the binary still
// runs on a CPU without them: the caller passes the path chosen once from CPUID (CPUFeatures.c).
#include "CKernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define CK_X86 1
#include <immintrin.h>
#endif

// The subnormal rounding below relies on IEEE float addition (round to nearest even, no reassociation).
#if defined(__FAST_MATH__)
#error "CKernels must not be compiled with -ffast-math"
#endif

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

// ---------------------------------------------------------------------------------------------------------------
// Portable scalar definitions (branch-free, so that compilers vectorise the loops over them). They are also the
// tails of the SIMD kernels, so both paths share one definition of every rounding.

// binary16 has 10 fraction bits, exponents -14...15, subnormals spaced 2^-24, max finite 65504.
static inline float round_f16_one(float x) {
    const uint32_t u = bits_of(x);
    const int32_t a = (int32_t)(u & 0x7FFFFFFFu);           // |x| as bits; fits in int32 for signed compares
    const uint32_t sign = u & 0x80000000u;
    // |x| >= 2^-14: round the 23 fraction bits to 10, ties to even (add 0xFFF plus the kept lowest bit, then
    // truncate); a carry out of the fraction moves into the exponent, which is exactly the next binade.
    const uint32_t normal = (u + 0x0FFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
    // |x| < 2^-14: binary16 spacing is 2^-24 everywhere there, which is the ulp of floats in [0.5, 1), so adding and
    // removing 0.5 rounds |x| to it (the FPU rounds to nearest even; the subtraction is exact by Sterbenz).
    const float rounded = (float_of((uint32_t)a) + 0.5f) - 0.5f;
    const uint32_t subnormal = sign | bits_of(rounded);
    uint32_t r = a >= 0x38800000 ? normal : subnormal;
    r = a >= 0x477FF000 ? (sign | 0x7F800000u) : r;          // |x| >= 65520 rounds past 65504: ±inf (inf stays inf)
    r = a > 0x7F800000 ? ((u | 0x00400000u) & 0xFFFFE000u) : r;   // NaN: quiet, sign and leading 10 payload bits
    return float_of(r);
}

// bfloat16 is the upper half of a float32: 7 fraction bits, the same exponent range (so float32 subnormals stay
// subnormals and only values at or past (2 - 2^-8)·2^127 overflow, which the carry into the exponent produces).
static inline float round_bf16_one(float x) {
    const uint32_t u = bits_of(x);
    const int32_t a = (int32_t)(u & 0x7FFFFFFFu);
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    r = a > 0x7F800000 ? ((u | 0x00400000u) & 0xFFFF0000u) : r;   // NaN: quiet, sign and leading 7 payload bits
    return float_of(r);
}

// In place (src == dst) gets its own loop: a vectoriser's run-time overlap check would otherwise reject it.
#define CK_PORTABLE_ROUND(name, one)                                                                     \
    static void name(const float *src, float *dst, size_t n) {                                                  \
        if (src == dst) {                                                                                \
            for (size_t i = 0; i < n; i++) dst[i] = one(dst[i]);                                         \
        } else {                                                                                         \
            const float *restrict s = src;                                                               \
            float *restrict d = dst;                                                                     \
            for (size_t i = 0; i < n; i++) d[i] = one(s[i]);                                             \
        }                                                                                                \
    }
#define CK_PORTABLE_ACCUMULATE(name, one)                                                                \
    static void name(const float *src, float *dst, size_t n) {                                                  \
        const float *restrict s = src;                                                                   \
        float *restrict d = dst;                                                                         \
        for (size_t i = 0; i < n; i++) d[i] += one(s[i]);                                                \
    }

CK_PORTABLE_ROUND(ck_round_f16_portable, round_f16_one)
CK_PORTABLE_ROUND(ck_round_bf16_portable, round_bf16_one)
CK_PORTABLE_ACCUMULATE(ck_accumulate_rounded_f16_portable, round_f16_one)
CK_PORTABLE_ACCUMULATE(ck_accumulate_rounded_bf16_portable, round_bf16_one)

// ---------------------------------------------------------------------------------------------------------------
// x86-64 SIMD kernels: 16 values per iteration, scalar definitions above for the tail.
#ifdef CK_X86

#define CK_F16_TARGET __attribute__((target("avx,f16c")))
#define CK_BF16_TARGET __attribute__((target("avx,avx2")))

// vcvtps2ph with an immediate rounding mode of "nearest even" (independent of MXCSR), then back with vcvtph2ps.
CK_F16_TARGET static inline __m256 f16_roundtrip8(__m256 v) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

CK_F16_TARGET static void ck_round_f16_simd(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(src + i), b = _mm256_loadu_ps(src + i + 8);
        _mm256_storeu_ps(dst + i, f16_roundtrip8(a));
        _mm256_storeu_ps(dst + i + 8, f16_roundtrip8(b));
    }
    for (; i < n; i++) dst[i] = round_f16_one(src[i]);
}

CK_F16_TARGET static void ck_accumulate_rounded_f16_simd(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = f16_roundtrip8(_mm256_loadu_ps(src + i)), b = f16_roundtrip8(_mm256_loadu_ps(src + i + 8));
        _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), a));
        _mm256_storeu_ps(dst + i + 8, _mm256_add_ps(_mm256_loadu_ps(dst + i + 8), b));
    }
    for (; i < n; i++) dst[i] += round_f16_one(src[i]);
}

CK_BF16_TARGET static inline __m256i bf16_round8(__m256i u) {
    const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u), magnitude = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i inf = _mm256_set1_epi32(0x7F800000), quiet = _mm256_set1_epi32(0x00400000);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, bias), lsb), high);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, magnitude), inf);
    __m256i quieted = _mm256_and_si256(_mm256_or_si256(u, quiet), high);
    return _mm256_blendv_epi8(r, quieted, nan);
}

CK_BF16_TARGET static void ck_round_bf16_simd(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 8));
        _mm256_storeu_si256((__m256i *)(dst + i), bf16_round8(a));
        _mm256_storeu_si256((__m256i *)(dst + i + 8), bf16_round8(b));
    }
    for (; i < n; i++) dst[i] = round_bf16_one(src[i]);
}

CK_BF16_TARGET static void ck_accumulate_rounded_bf16_simd(const float *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_castsi256_ps(bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i))));
        __m256 b = _mm256_castsi256_ps(bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i + 8))));
        _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), a));
        _mm256_storeu_ps(dst + i + 8, _mm256_add_ps(_mm256_loadu_ps(dst + i + 8), b));
    }
    for (; i < n; i++) dst[i] += round_bf16_one(src[i]);
}

// AVX-512: 16 values per register. The float16 round trip is vcvtps2ph/vcvtph2ps on zmm (AVX512F); bfloat16 is the
// integer rounding above on 16 lanes with a mask blend for NaN (not vcvtneps2bf16 of AVX512_BF16, which treats
// subnormal inputs as zero). The tail is one masked load and store.
#define CK_512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx,avx2,f16c")))

CK_512_TARGET static inline __m512 f16_roundtrip16(__m512 v) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

CK_512_TARGET static inline __m512 bf16_round16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), high);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                 _mm512_set1_epi32(0x7F800000));
    const __m512i quieted = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x00400000)), high);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, r, quieted));
}

#define CK_512_KERNELS(suffix, ROUND)                                                                          \
    CK_512_TARGET static void ck_round_##suffix##_avx512(const float *src, float *dst, size_t n) {             \
        size_t i = 0;                                                                                          \
        for (; i + 32 <= n; i += 32) {                                                                         \
            const __m512 a = _mm512_loadu_ps(src + i), b = _mm512_loadu_ps(src + i + 16);                      \
            _mm512_storeu_ps(dst + i, ROUND(a));                                                               \
            _mm512_storeu_ps(dst + i + 16, ROUND(b));                                                          \
        }                                                                                                      \
        for (; i < n; i += 16) {                                                                               \
            const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);            \
            _mm512_mask_storeu_ps(dst + i, k, ROUND(_mm512_maskz_loadu_ps(k, src + i)));                       \
        }                                                                                                      \
    }                                                                                                          \
    CK_512_TARGET static void ck_accumulate_rounded_##suffix##_avx512(const float *src, float *dst, size_t n) { \
        size_t i = 0;                                                                                          \
        for (; i + 32 <= n; i += 32) {                                                                         \
            const __m512 a = ROUND(_mm512_loadu_ps(src + i)), b = ROUND(_mm512_loadu_ps(src + i + 16));        \
            _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), a));                             \
            _mm512_storeu_ps(dst + i + 16, _mm512_add_ps(_mm512_loadu_ps(dst + i + 16), b));                   \
        }                                                                                                      \
        for (; i < n; i += 16) {                                                                               \
            const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);            \
            const __m512 r = ROUND(_mm512_maskz_loadu_ps(k, src + i));                                         \
            _mm512_mask_storeu_ps(dst + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dst + i), r));            \
        }                                                                                                      \
    }

CK_512_KERNELS(f16, f16_roundtrip16)
CK_512_KERNELS(bf16, bf16_round16)

#define CK_PICK(name, src, dst, n)                                                                             \
    switch (path) {                                                                                            \
    case CK_PATH_AVX512: name##_avx512(src, dst, n); break;                                                    \
    case CK_PATH_AVX2: name##_simd(src, dst, n); break;                                                        \
    default: name##_portable(src, dst, n); break;                                                              \
    }

#else   // not x86: the portable kernels are the only ones (compilers vectorise them for NEON etc.)

#define CK_PICK(name, src, dst, n) { (void)path; name##_portable(src, dst, n); }

#endif

void ck_round_f16(ck_path path, const float *src, float *dst, size_t n) { CK_PICK(ck_round_f16, src, dst, n) }
void ck_round_bf16(ck_path path, const float *src, float *dst, size_t n) { CK_PICK(ck_round_bf16, src, dst, n) }
void ck_accumulate_rounded_f16(ck_path path, const float *src, float *dst, size_t n) {
    CK_PICK(ck_accumulate_rounded_f16, src, dst, n)
}
void ck_accumulate_rounded_bf16(ck_path path, const float *src, float *dst, size_t n) {
    CK_PICK(ck_accumulate_rounded_bf16, src, dst, n)
}
