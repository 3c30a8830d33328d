#ifndef SPEECHAIN_BF16GEMM_H
#define SPEECHAIN_BF16GEMM_H
#include <stddef.h>

/// The three products of a Linear layer under bfloat16 autocast, computed with AVX512_BF16 (vdpbf16ps): the float32
/// operands are rounded to bfloat16 (round to nearest even, NaN kept quiet; the same rounding as ck_round_bf16),
/// multiplied exactly and accumulated in float32. All matrices are row-major and dense (leading dimension = width).
///
///   forward         y[M, N]  = x[M, K] · w[N, K]ᵀ (+ bias[N])            (bias added as given, in float32)
///   input gradient  dx[M, K] = dy[M, N] · w[N, K]                       (not rounded; the caller rounds dx)
///   weight gradient g[N, K] += bf16(dy[M, N]ᵀ · x[M, K])               (the product rounded, then added in float32)
///
/// Only the order of the float32 additions differs from float32 sgemm over the rounded values; the instruction also
/// treats bfloat16 subnormal inputs as zero and flushes subnormal sums to zero whatever MXCSR says.
/// `workspace` must hold bf16_linear_workspace_bytes(M, K, N) bytes, aligned to 64. The functions may only be called
/// when bf16_gemm_supported() is non-zero. Single-threaded.

/// 1 when the CPU and the OS run the kernels (AVX512F, AVX512BW, AVX512_BF16 and ZMM state enabled); 0 otherwise.
int bf16_gemm_supported(void);

size_t bf16_linear_workspace_bytes(size_t M, size_t K, size_t N);

void bf16_linear_forward(const float *x, const float *w, const float *bias, float *y,
                         size_t M, size_t K, size_t N, void *workspace);
void bf16_linear_input_gradient(const float *dy, const float *w, float *dx,
                                size_t M, size_t K, size_t N, void *workspace);
void bf16_linear_accumulate_weight_gradient(const float *dy, const float *x, float *g,
                                            size_t M, size_t K, size_t N, void *workspace);

/// Linear's float32 forward for small batches (M up to a few hundred rows), w read in place (never packed):
///   y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])   — each sum over k in order (one FMA per step), then the bias added.
/// `workspace`: f32_linear_forward_workspace_bytes(M, K, N) bytes, aligned to 64. Call only when
/// f32_linear_supported() is non-zero (AVX512F with the ZMM state enabled). Single-threaded.
int f32_linear_supported(void);
size_t f32_linear_forward_workspace_bytes(size_t M, size_t K, size_t N);
void f32_linear_forward(const float *x, const float *w, const float *bias, float *y,
                        size_t M, size_t K, size_t N, void *workspace);

/// Linear's float32 weight gradient, accumulated: g[N, K] += dy[M, N]ᵀ · x[M, K] — each sum over the M rows in
/// order (one FMA per step), then added to g — and, when sum_squares is not NULL, *sum_squares = Σ g² over the whole
/// new g (the squares summed in float32 within each 6 × 64 tile, the tiles' sums in double).
/// `workspace`: f32_linear_weight_gradient_workspace_bytes(M, K, N) bytes, aligned to 64. Call only when
/// f32_linear_supported(). Single-threaded.
size_t f32_linear_weight_gradient_workspace_bytes(size_t M, size_t K, size_t N);
void f32_linear_weight_gradient(const float *dy, const float *x, float *g, size_t M, size_t K, size_t N,
                                void *workspace, double *sum_squares);

/// A float32 convolution of one utterance (square kernel k, stride s, no padding; torch.nn.Conv2d):
///   y[o][i][j] = bias[o] + Σ_{c,u,v} w[o][c][u][v] · x[c][s·i + u][s·j + v]   (then 0 where ≤ 0 when relu; NaN kept)
/// x [Cin][H][W], y [Cout][oh][ow]; each sum over (c, u, v) in order, one FMA per step, then the bias added.
/// `workspace`: f32_conv_forward_workspace_bytes(Cin, k, Cout) bytes, aligned to 64, into which
/// f32_conv_forward_pack(w, Cout, Cin·k·k, workspace) has packed w (once for any number of utterances).
/// Call only when f32_linear_supported().
size_t f32_conv_forward_workspace_bytes(size_t in_channels, size_t kernel, size_t cout);
void f32_conv_forward_pack(const float *w, size_t cout, size_t K, void *workspace);
void f32_conv_forward(const float *x, size_t channels, size_t height, size_t width, size_t kernel, size_t stride,
                      size_t oh, size_t ow, size_t cout, const float *bias, int relu, float *y, void *workspace);

/// The weight gradient of such a convolution for one utterance, accumulated:
///   g[o][c][u][v] += Σ_{i,j} dy[o][i][j] · x[c][s·i + u][s·j + v]
/// each sum over the positions (i, j) in order, one FMA per step, then added to g. dy [Cout][oh][ow], g [Cout][Cin·k·k].
/// `workspace`: f32_conv_weight_gradient_workspace_bytes(Cin, k, oh·ow, Cout) bytes, aligned to 64. Call only when
/// f32_linear_supported().
size_t f32_conv_weight_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout);
void f32_conv_weight_gradient(const float *x, size_t channels, size_t height, size_t width, size_t kernel, size_t stride,
                              size_t oh, size_t ow, const float *dy, size_t cout, float *g, void *workspace);

/// dst[c][r] = src[r][c] for a row-major src [rows][cols] (dst [cols][rows]). Call only when f32_linear_supported().
void f32_transpose(const float *src, size_t rows, size_t cols, float *dst);

/// The input gradient of such a convolution for one utterance, given wt = Wᵀ [Cin·k·k][Cout] (f32_transpose of W):
///   dx[c][h][w] = Σ_{o,i,j,u,v: s·i+u = h, s·j+v = w} W[o][c][u][v] · dy[o][i][j]   (dx overwritten)
/// each patch entry's sum over o in order (one FMA per step), then folded as ck_conv_fold does (on `fold_path`, a
/// ck_path), which also zeroes dx where relu_mask ≤ 0 (relu_mask may be NULL; shaped as dx).
/// `workspace`: f32_conv_input_gradient_workspace_bytes(Cin, k, oh·ow, Cout) bytes, aligned to 64. Call only when
/// f32_linear_supported().
size_t f32_conv_input_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout);
void f32_conv_input_gradient(const float *wt, const float *dy, size_t cout, size_t channels, size_t height,
                             size_t width, size_t kernel, size_t stride, size_t oh, size_t ow, const float *relu_mask,
                             float *dx, int fold_path, void *workspace);

/// 1 when every one of the n values is a bfloat16 value (its low 16 bits are zero), so that rounding it is exact.
int bf16_all_representable(const float *x, size_t n);

#endif
