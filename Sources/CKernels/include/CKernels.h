#ifndef SPEECHAIN_CKERNELS_H
#define SPEECHAIN_CKERNELS_H
#include <stddef.h>

/// Rounding of float32 buffers to IEEE binary16 (float16) or bfloat16, returned as float32 values: round to nearest,
/// ties to even; float16 keeps subnormals and overflows to ±inf at 65520; NaN stays NaN (quiet, sign and leading
/// payload kept, as vcvtps2ph / vcvtneps2bf16 do). `src` and `dst` may be the same buffer (in place) but must not
/// otherwise overlap.
///
/// The unsuffixed entry points dispatch once per process on the CPU: F16C+AVX (float16) and AVX2 (bfloat16) when
/// CPUID and XGETBV report them, a portable C loop (auto-vectorised for the baseline target) otherwise. The build
/// never needs -march/-target-cpu, so one binary runs on any x86-64 (and on other architectures, portably).

void ck_round_f16(const float *src, float *dst, size_t n);
void ck_round_bf16(const float *src, float *dst, size_t n);
/// dst[i] += round(src[i]): the reduced-precision gradient of a weight added into its float32 accumulation buffer.
void ck_accumulate_rounded_f16(const float *src, float *dst, size_t n);
void ck_accumulate_rounded_bf16(const float *src, float *dst, size_t n);

/// The two implementations behind each entry point, for tests and benchmarks. The `_simd` ones may only be called
/// when `ck_simd_supported()` is non-zero.
void ck_round_f16_portable(const float *src, float *dst, size_t n);
void ck_round_bf16_portable(const float *src, float *dst, size_t n);
void ck_accumulate_rounded_f16_portable(const float *src, float *dst, size_t n);
void ck_accumulate_rounded_bf16_portable(const float *src, float *dst, size_t n);
void ck_round_f16_simd(const float *src, float *dst, size_t n);
void ck_round_bf16_simd(const float *src, float *dst, size_t n);
void ck_accumulate_rounded_f16_simd(const float *src, float *dst, size_t n);
void ck_accumulate_rounded_bf16_simd(const float *src, float *dst, size_t n);

/// 1 when this CPU and OS run the `_simd` kernels (x86-64 with AVX, AVX2 and F16C enabled); 0 otherwise.
int ck_simd_supported(void);
/// Which implementation the dispatching entry points use: "f16c+avx2" or "portable".
const char *ck_kernel_name(void);

/// One torch.optim.Adam / AdamW update over n elements (the equation is in Adam.swift; the operations and their
/// order are the same). In C because Swift's square root on SIMD vectors keeps libm's errno path and runs one lane
/// at a time; clang's elementwise square root does not. `vmax` is NULL unless amsgrad.
void ck_adam_update(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                    float *restrict vmax, size_t n, float sign, float weight_decay, int decoupled, float decay,
                    float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size);

#endif
