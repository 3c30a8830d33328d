#ifndef SPEECHAIN_CKERNELS_H
#define SPEECHAIN_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

// This is the module's umbrella header (SwiftPM's `umbrella header` for a header named after the target): the
// other headers of include/ reach Swift only through it.
#if __has_include("Denormals.h")
#include "Denormals.h"
#endif
#if __has_include("BF16GEMM.h")
#include "BF16GEMM.h"
#endif

// ---------------------------------------------------------------------------------------------------------------
// CPU features and vector paths.
//
// The package is compiled for baseline x86-64. Every kernel below exists three times, built from one source with
// clang's per-function `target` attribute: an AVX-512 path (AVX512F/BW/VL/DQ, 16 floats per register), an AVX2+FMA
// path (8 floats) and a baseline path (SSE2, 4 floats). The caller passes the path (`ck_path`); Swift picks it once
// from `ck_cpu_features()` (see Numerics/CPUFeatures.swift). The three paths perform the same IEEE operations in
// the same order on every element (no contraction into FMAs, reductions into the same 16 partial sums), so their
// results are bitwise identical: nodes of one job may run different paths and still hold identical replicas.

/// Feature bits: what CPUID reports, and for the register-state features, what XGETBV says the OS saves.
enum {
    CK_CPU_SSE42 = 1u << 0,
    CK_CPU_AVX = 1u << 1,
    CK_CPU_AVX2 = 1u << 2,
    CK_CPU_FMA = 1u << 3,
    CK_CPU_F16C = 1u << 4,
    CK_CPU_AVX512F = 1u << 5,
    CK_CPU_AVX512BW = 1u << 6,
    CK_CPU_AVX512VL = 1u << 7,
    CK_CPU_AVX512DQ = 1u << 8,
    CK_CPU_AVX512_BF16 = 1u << 9,
    CK_CPU_AVX512_FP16 = 1u << 10,
    CK_CPU_AMX_TILE = 1u << 11,
    CK_CPU_AMX_BF16 = 1u << 12,
    CK_CPU_AMX_INT8 = 1u << 13,
};
unsigned ck_cpu_features(void);

typedef enum { CK_PATH_BASELINE = 0, CK_PATH_AVX2 = 1, CK_PATH_AVX512 = 2 } ck_path;
/// 1 when this CPU and OS run `path`: avx2 needs AVX, AVX2, FMA and F16C; avx512 needs those and AVX512F/BW/VL/DQ.
int ck_path_supported(ck_path path);
/// The widest supported path.
ck_path ck_best_path(void);

// ---------------------------------------------------------------------------------------------------------------
// Optimizer updates over n elements (torch.optim single-tensor algorithms; the equations are in Adam.swift, SGD.swift,
// Adagrad.swift and RMSprop.swift, whose element-wise operations and their order these reproduce). The gradient the
// algorithm sees is `sign`·g (sign = ±1 for maximize, times a pending 1/world size and a clipping coefficient).
// Optional state pointers are NULL when the variant has no such state. With `zero_grad` non-zero, g is set to 0 as
// it is consumed (the gradients' zeroing after a step, fused into the update's pass).

void ck_adam_update(ck_path path, float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                    float *restrict vmax, size_t n, float sign, float weight_decay, int decoupled, float decay,
                    float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size, int zero_grad);
/// Adam's memory traffic (read p, g, m, v; write p, m, v) with an add and a multiply per element: a benchmark's floor.
void ck_adam_traffic(ck_path path, float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                     size_t n);
void ck_sgd_update(ck_path path, float *restrict p, float *restrict g, float *restrict buf, size_t n, float sign,
                   float weight_decay, float momentum, float keep, int first, int nesterov, float neg_lr, int zero_grad);
void ck_adagrad_update(ck_path path, float *restrict p, float *restrict g, float *restrict sum, size_t n,
                       float sign, float weight_decay, float neg_clr, float eps, int zero_grad);
void ck_rmsprop_update(ck_path path, float *restrict p, float *restrict g, float *restrict square_avg,
                       float *restrict buf, float *restrict grad_avg, size_t n, float sign, float weight_decay,
                       float alpha, float one_minus_alpha, float eps, float momentum, float lr, int zero_grad);

// ---------------------------------------------------------------------------------------------------------------
// Reductions for clipping and the finite checks. Sums accumulate squares/magnitudes/powers in double, element i into
// partial sum i mod 16, and the 16 partial sums are added pairwise at the end.

double ck_sum_squares(ck_path path, const float *x, size_t n);
double ck_sum_magnitudes(ck_path path, const float *x, size_t n);
/// Σ |x|^p for p > 0 (pow as exp(p·log|x|) in double, ≲ 1e-15 relative per term).
double ck_sum_powers(ck_path path, const float *x, size_t n, double p);
/// max |x|; NaN if any value is NaN.
float ck_max_magnitude(ck_path path, const float *x, size_t n);
/// x *= a; returns 1 when every result is finite.
int ck_scale_checking_finite(ck_path path, float *x, size_t n, float a);
int ck_all_finite(ck_path path, const float *x, size_t n);

// ---------------------------------------------------------------------------------------------------------------
// Special functions of float arguments, evaluated in double and rounded once to float (so within ~0.5 ulp + 1e-9
// relative of the exact value). `x` and `y` may be the same buffer.

/// erf: x·P(x²) (Taylor, 9 terms) for |x| < 0.5, a degree-20 fit on [0.5, 4], ±1 beyond; see VectorKernelsBody.h.
void ck_erf(ck_path path, const float *x, float *y, size_t n);
/// erf in float32 arithmetic (≤ 2.6 ulp), the one GELU's exact form uses; same bits on every path.
void ck_erf_float(ck_path path, const float *x, float *y, size_t n);
void ck_exp(ck_path path, const float *x, float *y, size_t n);
void ck_tanh(ck_path path, const float *x, float *y, size_t n);

// ---------------------------------------------------------------------------------------------------------------
// Layers (see GELU.swift, CrossEntropy.swift and LayerNorm.swift for the formulas; the float operations and their
// order are those of the Swift code, with erf, exp and tanh from the functions above). `dx` may be `dy`.

/// approximate: 0 exact (erf), 1 tanh. Constants are passed in so that they are Swift's float values bit for bit.
void ck_gelu_forward(ck_path path, int approximate, const float *x, float *y, size_t n, float k0, float k1,
                     float inv_sqrt2);
void ck_gelu_backward(ck_path path, int approximate, const float *x, const float *dy, float *dx, size_t n, float k0,
                      float k1, float inv_sqrt2, float inv_sqrt2pi);

/// Σ_j exp(double(z_j − m)) over one row of logits.
double ck_sum_exp_shifted(ck_path path, const float *z, size_t k, float m);
/// p_j = float(exp(double(z_j) − log_sum)); returns Σ_j (double(z_j) − log_sum), the sum of log-probabilities.
double ck_softmax_from_log_sum(ck_path path, const float *z, size_t k, double log_sum, float *p);
/// d = (p − target)·scale over [rows, k], target = on_value at the label, off_value elsewhere.
void ck_cross_entropy_backward(ck_path path, const float *p, float *d, size_t rows, size_t k, const int32_t *labels,
                               float on_value, float off_value, float scale);

/// Per row of [rows, d]: mean and biased variance in double, rstd = float(1/√(var + eps)), y = (x − μ)·rstd·w + b.
void ck_layer_norm_forward(ck_path path, const float *x, float *y, size_t rows, size_t d, const float *w,
                           const float *b, float eps, float *mean, float *rstd);
/// gw += dy·(x − μ)·rstd, gb += dy (when gw is not NULL); dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) (when dx is not NULL).
void ck_layer_norm_backward(ck_path path, const float *x, const float *dy, size_t rows, size_t d, const float *w,
                            const float *mean, const float *rstd, float *gw, float *gb, float *dx);

/// Per row of [rows, k]: d ← p ⊙ (d − Σ_j p_j·d_j) (softmax backward; the dot in double over 16 partial sums).
void ck_softmax_backward(ck_path path, const float *p, float *d, size_t rows, size_t k);

/// dst[i] = ((src[0][i] + src[1][i]) + src[2][i]) + … over `sources` buffers, in that order on every path; dst may be
/// one of the sources.
void ck_sum_sources(ck_path path, const float *const *src, size_t sources, float *dst, size_t n);

/// im2col for one utterance: x [channels, height, width] → cols [channels·k·k, oh·ow], kernel k, stride s, no padding.
void ck_conv_unfold(ck_path path, const float *x, float *cols, size_t channels, size_t height, size_t width, size_t k,
                    size_t s, size_t oh, size_t ow);
/// col2im (the adjoint): dx [channels, height, width] += the columns folded back, one channel plane at a time; with
/// `overwrite` each plane is zeroed first (dx = the fold), and with `relu_mask` (shaped as dx, the output y of the
/// ReLU whose input gradient dx is) each folded element becomes 0 where y <= 0 (torch's threshold_backward).
void ck_conv_fold(ck_path path, const float *cols, float *dx, size_t channels, size_t height, size_t width, size_t k,
                  size_t s, size_t oh, size_t ow, int overwrite, const float *relu_mask);

// ---------------------------------------------------------------------------------------------------------------
// Rounding of float32 buffers to IEEE binary16 (float16) or bfloat16, returned as float32 values: round to nearest,
// ties to even; float16 keeps subnormals and overflows to ±inf at 65520; NaN stays NaN (quiet, sign and leading
// payload kept, as vcvtps2ph / vcvtneps2bf16 do). `src` and `dst` may be the same buffer (in place) but must not
// otherwise overlap. Paths: avx512 (vcvtps2ph zmm, AVX-512 integer rounding), avx2 (F16C, AVX2 integer rounding),
// baseline (a portable C loop); all three give the same bits.

void ck_round_f16(ck_path path, const float *src, float *dst, size_t n);
void ck_round_bf16(ck_path path, const float *src, float *dst, size_t n);
/// dst[i] += round(src[i]): the reduced-precision gradient of a weight added into its float32 accumulation buffer.
void ck_accumulate_rounded_f16(ck_path path, const float *src, float *dst, size_t n);
void ck_accumulate_rounded_bf16(ck_path path, const float *src, float *dst, size_t n);

#endif
