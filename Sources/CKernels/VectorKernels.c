// Run-time dispatched vector kernels: VectorKernelsBody.h compiled three times (baseline SSE2, AVX2+FMA, AVX-512)
// and entry points that call the path the caller names. See include/CKernels.h for the contracts.
//
// Why C: Swift cannot compile one function for a wider target than the rest of the binary, and the package is
// built for baseline x86-64 so that one binary runs on every node. Clang's per-function `target` attribute lets
// these kernels use AVX2/AVX-512 registers while the binary still runs on a CPU without them.
#include "CKernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "CKernels must not be compiled with -ffast-math"
#endif

// Every operation rounds separately, as torch's CPU kernels and the Swift code do, and as the paths must agree:
// FMA contraction would change the rounding on the paths that have FMA and not on the baseline one.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#define CK_X86 1
#endif

// Adding then subtracting 1.5·2^52 rounds a double of magnitude < 2^51 to an integer (nearest even), and the
// sum's low bits hold that integer in two's complement.
#define CK_ROUND_MAGIC 0x1.8p52
#define CK_ROUND_MAGIC_BITS 0x4338000000000000ll

static const double ck_lane_index[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/// The 16 partial sums added pairwise: (s0 + s8) + (s4 + s12) ..., the same on every path.
static inline double ck_combine16(double *s) {
    for (int w = 8; w >= 1; w /= 2) {
        for (int q = 0; q < w; q++) s[q] = s[q] + s[q + w];
    }
    return s[0];
}

#define CK_SUFFIX baseline
#define CK_TARGET
#define CK_W 4
#include "VectorKernelsBody.h"
#undef CK_SUFFIX
#undef CK_TARGET
#undef CK_W

#ifdef CK_X86
#define CK_SUFFIX avx2
#define CK_TARGET __attribute__((target("avx,avx2,fma,f16c")))
#define CK_W 8
#include "VectorKernelsBody.h"
#undef CK_SUFFIX
#undef CK_TARGET
#undef CK_W

#define CK_SUFFIX avx512
#define CK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx,avx2,fma,f16c")))
#define CK_W 16
#include "VectorKernelsBody.h"
#undef CK_SUFFIX
#undef CK_TARGET
#undef CK_W

#define CK_CALL(name, ...)                                                                                      \
    switch (path) {                                                                                             \
    case CK_PATH_AVX512: name##_avx512(__VA_ARGS__); break;                                                     \
    case CK_PATH_AVX2: name##_avx2(__VA_ARGS__); break;                                                         \
    default: name##_baseline(__VA_ARGS__); break;                                                               \
    }
#define CK_RETURN(name, ...)                                                                                    \
    switch (path) {                                                                                             \
    case CK_PATH_AVX512: return name##_avx512(__VA_ARGS__);                                                     \
    case CK_PATH_AVX2: return name##_avx2(__VA_ARGS__);                                                         \
    default: return name##_baseline(__VA_ARGS__);                                                               \
    }
#else
#define CK_CALL(name, ...) { (void)path; name##_baseline(__VA_ARGS__); }
#define CK_RETURN(name, ...) { (void)path; return name##_baseline(__VA_ARGS__); }
#endif

void ck_adam_update(ck_path path, float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                    float *restrict vmax, size_t n, float sign, float weight_decay, int decoupled, float decay,
                    float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size, int zero_grad) {
    CK_CALL(adam, p, g, m, v, vmax, n, sign, weight_decay, decoupled, decay, w1, beta2, w2, bias2_sqrt, eps, step_size,
            zero_grad)
}

void ck_adam_traffic(ck_path path, float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                     size_t n) {
    CK_CALL(adam_traffic, p, g, m, v, n)
}

void ck_sgd_update(ck_path path, float *restrict p, float *restrict g, float *restrict buf, size_t n, float sign,
                   float weight_decay, float momentum, float keep, int first, int nesterov, float neg_lr, int zero_grad) {
    CK_CALL(sgd, p, g, buf, n, sign, weight_decay, momentum, keep, first, nesterov, neg_lr, zero_grad)
}

void ck_adagrad_update(ck_path path, float *restrict p, float *restrict g, float *restrict sum, size_t n,
                       float sign, float weight_decay, float neg_clr, float eps, int zero_grad) {
    CK_CALL(adagrad, p, g, sum, n, sign, weight_decay, neg_clr, eps, zero_grad)
}

void ck_rmsprop_update(ck_path path, float *restrict p, float *restrict g, float *restrict square_avg,
                       float *restrict buf, float *restrict grad_avg, size_t n, float sign, float weight_decay,
                       float alpha, float one_minus_alpha, float eps, float momentum, float lr, int zero_grad) {
    CK_CALL(rmsprop, p, g, square_avg, buf, grad_avg, n, sign, weight_decay, alpha, one_minus_alpha, eps, momentum, lr,
            zero_grad)
}

double ck_sum_squares(ck_path path, const float *x, size_t n) { CK_RETURN(sum_squares, x, n) }
double ck_sum_magnitudes(ck_path path, const float *x, size_t n) { CK_RETURN(sum_magnitudes, x, n) }
double ck_sum_powers(ck_path path, const float *x, size_t n, double p) { CK_RETURN(sum_powers, x, n, p) }
float ck_max_magnitude(ck_path path, const float *x, size_t n) { CK_RETURN(max_magnitude, x, n) }
int ck_scale_checking_finite(ck_path path, float *x, size_t n, float a) { CK_RETURN(scale_checking_finite, x, n, a) }
int ck_all_finite(ck_path path, const float *x, size_t n) { CK_RETURN(all_finite, x, n) }

void ck_erf(ck_path path, const float *x, float *y, size_t n) { CK_CALL(erf, x, y, n) }
void ck_erf_float(ck_path path, const float *x, float *y, size_t n) { CK_CALL(erf_float, x, y, n) }
void ck_exp(ck_path path, const float *x, float *y, size_t n) { CK_CALL(exp, x, y, n) }
void ck_tanh(ck_path path, const float *x, float *y, size_t n) { CK_CALL(tanh, x, y, n) }

void ck_gelu_forward(ck_path path, int approximate, const float *x, float *y, size_t n, float k0, float k1,
                     float inv_sqrt2) {
    CK_CALL(gelu_forward, approximate, x, y, n, k0, k1, inv_sqrt2)
}

void ck_gelu_backward(ck_path path, int approximate, const float *x, const float *dy, float *dx, size_t n, float k0,
                      float k1, float inv_sqrt2, float inv_sqrt2pi) {
    CK_CALL(gelu_backward, approximate, x, dy, dx, n, k0, k1, inv_sqrt2, inv_sqrt2pi)
}

double ck_sum_exp_shifted(ck_path path, const float *z, size_t k, float m) { CK_RETURN(sum_exp_shifted, z, k, m) }

double ck_softmax_from_log_sum(ck_path path, const float *z, size_t k, double log_sum, float *p) {
    CK_RETURN(softmax_from_log_sum, z, k, log_sum, p)
}

void ck_cross_entropy_backward(ck_path path, const float *p, float *d, size_t rows, size_t k, const int32_t *labels,
                               float on_value, float off_value, float scale) {
    CK_CALL(cross_entropy_backward, p, d, rows, k, labels, on_value, off_value, scale)
}

void ck_layer_norm_forward(ck_path path, const float *x, float *y, size_t rows, size_t d, const float *w,
                           const float *b, float eps, float *mean, float *rstd) {
    CK_CALL(layer_norm_forward, x, y, rows, d, w, b, eps, mean, rstd)
}

void ck_layer_norm_backward(ck_path path, const float *x, const float *dy, size_t rows, size_t d, const float *w,
                            const float *mean, const float *rstd, float *gw, float *gb, float *dx) {
    CK_CALL(layer_norm_backward, x, dy, rows, d, w, mean, rstd, gw, gb, dx)
}

void ck_softmax_backward(ck_path path, const float *p, float *d, size_t rows, size_t k) {
    CK_CALL(softmax_backward, p, d, rows, k)
}

void ck_sum_sources(ck_path path, const float *const *src, size_t sources, float *dst, size_t n) {
    CK_CALL(sum_sources, src, sources, dst, n)
}

void ck_conv_unfold(ck_path path, const float *x, float *cols, size_t channels, size_t height, size_t width, size_t k,
                    size_t s, size_t oh, size_t ow) {
    CK_CALL(conv_unfold, x, cols, channels, height, width, k, s, oh, ow)
}

void ck_conv_fold(ck_path path, const float *cols, float *dx, size_t channels, size_t height, size_t width, size_t k,
                  size_t s, size_t oh, size_t ow, int overwrite, const float *relu_mask) {
    CK_CALL(conv_fold, cols, dx, channels, height, width, k, s, oh, ow, overwrite, relu_mask)
}
