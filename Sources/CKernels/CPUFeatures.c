// What the CPU offers, from CPUID, and for the features with register state (AVX's YMM, AVX-512's ZMM and opmask,
// AMX's tiles) whether the OS saves that state (XGETBV), without which the instructions fault.
#include "CKernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned detect(void) {
    unsigned a, b, c, d, features = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned max_leaf = __get_cpuid_max(0, 0);
    if (c & (1u << 20)) features |= CK_CPU_SSE42;
    unsigned long long xcr0 = 0;
    if (c & (1u << 27)) {   // OSXSAVE: XGETBV is available
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    const int ymm = (xcr0 & 0x6) == 0x6;                  // SSE and AVX state
    const int zmm = ymm && (xcr0 & 0xE0) == 0xE0;         // opmask, ZMM_Hi256, Hi16_ZMM
    const int tiles = (xcr0 & 0x60000ull) == 0x60000ull;  // XTILECFG, XTILEDATA
    if (ymm) {
        if (c & (1u << 28)) features |= CK_CPU_AVX;
        if (c & (1u << 12)) features |= CK_CPU_FMA;
        if (c & (1u << 29)) features |= CK_CPU_F16C;
    }
    if (max_leaf < 7) return features;
    unsigned b7, c7, d7;
    __cpuid_count(7, 0, a, b7, c7, d7);
    const unsigned leaf7_subleaves = a;
    if (ymm && (b7 & (1u << 5))) features |= CK_CPU_AVX2;
    if (zmm) {
        if (b7 & (1u << 16)) features |= CK_CPU_AVX512F;
        if (b7 & (1u << 17)) features |= CK_CPU_AVX512DQ;
        if (b7 & (1u << 30)) features |= CK_CPU_AVX512BW;
        if (b7 & (1u << 31)) features |= CK_CPU_AVX512VL;
        if (d7 & (1u << 23)) features |= CK_CPU_AVX512_FP16;
        if (leaf7_subleaves >= 1) {
            unsigned a1, b1, c1, d1;
            __cpuid_count(7, 1, a1, b1, c1, d1);
            if (a1 & (1u << 5)) features |= CK_CPU_AVX512_BF16;
        }
    }
    if (tiles) {
        if (d7 & (1u << 24)) features |= CK_CPU_AMX_TILE;
        if (d7 & (1u << 22)) features |= CK_CPU_AMX_BF16;
        if (d7 & (1u << 25)) features |= CK_CPU_AMX_INT8;
    }
    (void)c7;
    return features;
}
#else
static unsigned detect(void) { return 0; }
#endif

// Detected once; a race at worst computes the same value twice.
static unsigned cached = 0;
static int cached_valid = 0;

unsigned ck_cpu_features(void) {
    if (__atomic_load_n(&cached_valid, __ATOMIC_ACQUIRE)) return __atomic_load_n(&cached, __ATOMIC_RELAXED);
    unsigned f = detect();
    __atomic_store_n(&cached, f, __ATOMIC_RELAXED);
    __atomic_store_n(&cached_valid, 1, __ATOMIC_RELEASE);
    return f;
}

int ck_path_supported(ck_path path) {
#if defined(__x86_64__)
    const unsigned f = ck_cpu_features();
    const unsigned avx2 = CK_CPU_AVX | CK_CPU_AVX2 | CK_CPU_FMA | CK_CPU_F16C;
    const unsigned avx512 = avx2 | CK_CPU_AVX512F | CK_CPU_AVX512BW | CK_CPU_AVX512VL | CK_CPU_AVX512DQ;
    switch (path) {
    case CK_PATH_BASELINE: return 1;
    case CK_PATH_AVX2: return (f & avx2) == avx2;
    case CK_PATH_AVX512: return (f & avx512) == avx512;
    }
    return 0;
#else
    return path == CK_PATH_BASELINE;
#endif
}

ck_path ck_best_path(void) {
    if (ck_path_supported(CK_PATH_AVX512)) return CK_PATH_AVX512;
    if (ck_path_supported(CK_PATH_AVX2)) return CK_PATH_AVX2;
    return CK_PATH_BASELINE;
}
