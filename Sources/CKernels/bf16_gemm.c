// Products in our own AVX-512 kernels (see include/BF16GEMM.h for the contracts): Linear's three bfloat16 products
// with AVX512_BF16, and (further down) the float32 forward and weight gradient of Linear for small batches and the
// three float32 products of Conv2d (forward, weight gradient, input gradient).
//
// vdpbf16ps adds, in each of 16 float32 lanes, a[2i]·b[2i] + a[2i+1]·b[2i+1] over bfloat16 pairs: every operand is
// packed as 32-bit words holding two bfloat16 values that are consecutive along the reduction. The micro-kernel
// keeps an MR × (NV·16) tile of float32 sums in registers; A is read one pair per row and broadcast, B comes as a
// panel [pair][NV·16 columns] (zero-padded, 64-byte aligned). Operands are rounded and packed on the way in, from
// float32, so no bfloat16 copy of a weight ever goes through memory:
//
//   forward   yᵀ = w·xᵀ: A = MR rows of w (their pairs run along w's rows: rounding is the whole packing, done per
//             block of MR rows, which stays in L1), B = x packed once per call; yᵀ goes to the workspace and is
//             transposed into y 16 × 16 at a time, the bias added on the way (y is small: batch × out).
//   dx        dx = dy·w: A = dy's rows, B = a panel of w's columns, pairs from two consecutive rows, taken from
//             chunks of 256 rows of w (contiguous memory, few pages); the chunks' sums are added in dx.
//   dW        g += bf16(dyᵀ·x): A = dy and B = x, pairs from two consecutive rows (batch); the rounding and the
//             float32 addition into g happen as the tile leaves the registers.
//
// w and g are read from memory once per product; the kernel prefetches the next block's lines into L2 while it
// computes. On the benchmark MLP's shapes (batch 64, 512→2048→2048→2048→512, AMD EPYC family 26) the kernels run at
// 280–380 GFLOP/s against OpenBLAS sgemm's ~100; dW is bound by g's read and write.
//
// Only functions marked BF16_TARGET use AVX-512; they run only after bf16_gemm_supported() said yes, so the package
// is never compiled for one CPU.
#include "BF16GEMM.h"
#include "CKernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#include <cpuid.h>
#include <immintrin.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define BF16_INLINE static inline __attribute__((always_inline)) BF16_TARGET
// the float32 forward and the helpers it shares with the bfloat16 kernels need AVX-512F only
#define F32_TARGET __attribute__((target("avx512f")))
#define F32_INLINE static inline __attribute__((always_inline)) F32_TARGET

// Tiles of 6 × 64: 24 of the 32 vector registers hold sums (the kernel alone runs at 300–340 GFLOP/s here).
enum { MRF = 6, NVF = 4 };    // forward: 6 rows of w × 64 rows of x
enum { MRX = 6, NVX = 4, KCX = 256 };    // dx: 6 rows of dy × 64 columns of w, chunks of 256 rows of w
enum { MRW = 6, NVW = 4 };    // dW: 6 rows of g × 64 columns of g
enum { NRF = NVF * 16, NRX = NVX * 16, NRW = NVW * 16 };
enum { MRMAX = 6 };

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// float32 bits rounded to bfloat16 (the upper 16 bits), as round_bf16_one in ReducedPrecision.c.
BF16_INLINE __m512i round_bits(__m512i u) {
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                  _mm512_set1_epi32(0x7F800000));
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u));
}

// 32 consecutive floats (n ≤ 32 of them real, the rest zero) → 16 pairs.
BF16_INLINE __m512i pairs_along_row(const float *src, size_t n) {
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    const __m512i lo = round_bits(_mm512_castps_si512(_mm512_maskz_loadu_ps(m0, src)));
    const __m512i hi = round_bits(_mm512_castps_si512(_mm512_maskz_loadu_ps(m1, src + 16)));
    // the upper halves (odd 16-bit words) of the 32 values, in order
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                         31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(lo, odd, hi);
}

// 16 columns of two rows (r1 may be NULL: zeros), n ≤ 16 of them real → 16 pairs (r0[c], r1[c]).
BF16_INLINE __m512i pairs_across_rows(const float *r0, const float *r1, size_t n) {
    const __mmask16 m = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __m512i a = round_bits(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r0)));
    const __m512i b = r1 ? round_bits(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r1))) : _mm512_setzero_si512();
    return _mm512_or_si512(_mm512_srli_epi32(a, 16), b);
}

// dst[p] for p < ceil(k/2): the pairs of one row of k floats.
BF16_TARGET static void pack_row(const float *src, size_t k, uint32_t *dst) {
    size_t c = 0;
    for (; c + 32 <= k; c += 32) _mm512_storeu_si512(dst + c / 2, pairs_along_row(src + c, 32));
    if (c < k) {
        const size_t pairs = (k - c + 1) / 2;
        _mm512_mask_storeu_epi32(dst + c / 2, (__mmask16)((1u << pairs) - 1), pairs_along_row(src + c, k - c));
    }
}

// A panel [rows/2 pairs][NR]: pairs of consecutive rows of src (ld floats apart) over columns c0 ..< c0 + n (n ≤ NR),
// zero beyond n and beyond the last row.
BF16_TARGET static void pack_panel_across_rows(const float *src, size_t ld, size_t rows, size_t c0, size_t n,
                                               size_t nv, uint32_t *dst) {
    const size_t pairs = (rows + 1) / 2;
    for (size_t p = 0; p < pairs; p++) {
        const float *r0 = src + 2 * p * ld + c0;
        const float *r1 = 2 * p + 1 < rows ? r0 + ld : NULL;
        for (size_t v = 0; v < nv; v++) {
            const size_t cols = n > v * 16 ? n - v * 16 : 0;
            const __m512i w = cols ? pairs_across_rows(r0 + v * 16, r1 ? r1 + v * 16 : NULL, cols) : _mm512_setzero_si512();
            _mm512_store_si512(dst + (p * nv + v) * 16, w);
        }
    }
}

// Lines of memory a kernel call prefetches into L2 while it computes (the operand the next block will pack):
// line i is at base + (i >> shift)·stride + (i mod 2^shift)·64, for i in first ..< first + count.
typedef struct { const char *base; size_t stride; unsigned shift; size_t first, count; } prefetch_t;

static prefetch_t prefetch_share(const void *base, size_t stride, unsigned shift, size_t lines, size_t part,
                                 size_t parts) {
    const size_t each = (lines + parts - 1) / parts, first = part * each;
    prefetch_t pf = { (const char *)base, stride, shift, first, first < lines ? (lines - first < each ? lines - first : each) : 0 };
    return pf;
}

// Lines (64 bytes) of the block of rows after rows done ..< done + block of a matrix of `total` rows of k floats, which a
// kernel prefetches while it computes the current block: 0 after the last block.
static size_t next_block_lines(size_t done, size_t total, size_t block, size_t k) {
    const size_t rows = done < total ? (total - done < block ? total - done : block) : 0;
    return (rows * k * 4 + 63) / 64;
}

// The step loop of a tile kernel: STEP(i) for i < STEPS, prefetching pf's lines (one per step) during the first ones.
#define TILE_STEPS(STEPS, PF, STEP)                                                                            \
    do {                                                                                                       \
        size_t i_ = 0;                                                                                         \
        const size_t np_ = (PF).count < (STEPS) ? (PF).count : (STEPS);                                        \
        const size_t low_ = ((size_t)1 << (PF).shift) - 1;                                                     \
        for (; i_ < np_; i_++) {                                                                               \
            const size_t l_ = (PF).first + i_;                                                                 \
            __builtin_prefetch((PF).base + (l_ >> (PF).shift) * (PF).stride + ((l_ & low_) << 6), 0, 2);      \
            STEP(i_);                                                                                          \
        }                                                                                                      \
        for (; i_ < (STEPS); i_++) STEP(i_);                                                                   \
    } while (0)

// A tile's MR × NV sums out of the registers: c[r·ldc + v·16 …] (64-byte aligned).
#define TILE_STORE(MR, NV, acc, c, ldc)                                                                        \
    do {                                                                                                       \
        for (int r_ = 0; r_ < (MR); r_++)                                                                      \
            for (int v_ = 0; v_ < (NV); v_++) _mm512_store_ps((c) + r_ * (ldc) + v_ * 16, (acc)[r_][v_]);      \
    } while (0)

// TILE(R) for the row count mr (1…6) as a compile-time constant, so that each is unrolled with its sums in registers.
#define FOR_ROWS(mr, TILE)                                                                                     \
    switch (mr) {                                                                                              \
    case 1: TILE(1); break;                                                                                    \
    case 2: TILE(2); break;                                                                                    \
    case 3: TILE(3); break;                                                                                    \
    case 4: TILE(4); break;                                                                                    \
    case 5: TILE(5); break;                                                                                    \
    default: TILE(6); break;                                                                                   \
    }

// c[r·ldc + ·] (r < MR, NV·16 floats each, 64-byte aligned) = Σ_p a[r·sr + p·sp] ⊙ b[p][·]  (bfloat16 pairs,
// float32 sums).
BF16_INLINE void kernel(int MR, int NV, const uint32_t *restrict a, size_t sr, size_t sp,
                        const uint32_t *restrict b, size_t pairs, float *restrict c, size_t ldc, prefetch_t pf) {
    __m512 acc[MRMAX][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
#define BF16_STEP(p)                                                                                           \
    do {                                                                                                       \
        __m512bh bv[4];                                                                                        \
        for (int v = 0; v < NV; v++) bv[v] = (__m512bh)_mm512_load_si512(b + ((p) * NV + v) * 16);          \
        for (int r = 0; r < MR; r++) {                                                                         \
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * sr + (p) * sp]);                       \
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);                 \
        }                                                                                                      \
    } while (0)
    TILE_STEPS(pairs, pf, BF16_STEP);
#undef BF16_STEP
    TILE_STORE(MR, NV, acc, c, ldc);
}

// One kernel per row count, so that every loop above is unrolled with the accumulators in registers.
#define BF16_TILE(R) kernel(R, nv_, a, sr, sp, b, pairs, c, ldc, pf)
#define BF16_KERNEL_FOR_ROWS(NAME, NV)                                                                        \
    BF16_TARGET static void NAME(int mr, const uint32_t *a, size_t sr, size_t sp, const uint32_t *b,          \
                                 size_t pairs, float *c, size_t ldc, prefetch_t pf) {                          \
        enum { nv_ = NV };                                                                                     \
        FOR_ROWS(mr, BF16_TILE)                                                                                \
    }
BF16_KERNEL_FOR_ROWS(kernel_nv4, 4)
_Static_assert(NVF == 4 && NVX == 4 && NVW == 4 && MRF <= MRMAX && MRX <= MRMAX && MRW <= MRMAX, "tile shapes");

F32_INLINE __mmask16 first_lanes(size_t n) { return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1); }

// dst[c·ld + r] = src[r·ls + c] + bias[r] for r < rows ≤ 16, c < cols ≤ 16 (bias may be NULL).
F32_TARGET static void transpose16(const float *src, size_t ls, size_t rows, size_t cols, const float *bias,
                                    float *dst, size_t ld) {
    __m512 r[16], t[16];
    const __mmask16 cm = first_lanes(cols), rm = first_lanes(rows);
    for (size_t i = 0; i < 16; i++) r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * ls) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
    }
    const __m512 b = bias ? _mm512_maskz_loadu_ps(rm, bias) : _mm512_setzero_ps();
    for (size_t c = 0; c < cols; c++) _mm512_mask_storeu_ps(dst + c * ld, rm, bias ? _mm512_add_ps(r[c], b) : r[c]);
}

// y[M, N] = (yᵀ)ᵀ + bias from yᵀ [N][ldt], 16 × 16 at a time (bias may be NULL).
F32_TARGET static void transpose_out(const float *yt, size_t ldt, size_t M, size_t N, const float *bias, float *y) {
    for (size_t n0 = 0; n0 < N; n0 += 16) {
        const float *b16 = bias ? bias + n0 : NULL;   // the bias of these 16 outputs
        for (size_t m0 = 0; m0 < M; m0 += 16)
            transpose16(yt + n0 * ldt + m0, ldt, N - n0 < 16 ? N - n0 : 16, M - m0 < 16 ? M - m0 : 16, b16,
                        y + m0 * N + n0, N);
    }
}

// Workspace layout of each product (in 32-bit words, every part 64-byte aligned).
static size_t forward_words(size_t M, size_t K, size_t N) {
    return round_up(M, NRF) * ((K + 1) / 2) + MRF * round_up((K + 1) / 2, 16) + round_up(N, 16) * round_up(M, NRF);
}
static size_t input_gradient_words(size_t M, size_t N) {
    return round_up(M * ((N + 1) / 2), 16) + KCX / 2 * NRX + MRX * NRX;
}
static size_t weight_gradient_words(size_t M, size_t K, size_t N) {
    return round_up(((M + 1) / 2) * N, 16) + round_up(K, NRW) * ((M + 1) / 2) + MRW * NRW;
}

size_t bf16_linear_workspace_bytes(size_t M, size_t K, size_t N) {
    size_t w = forward_words(M, K, N);
    const size_t x = input_gradient_words(M, N), g = weight_gradient_words(M, K, N);
    if (x > w) w = x;
    if (g > w) w = g;
    return w * 4;
}

BF16_TARGET void bf16_linear_forward(const float *x, const float *w, const float *bias, float *y,
                                     size_t M, size_t K, size_t N, void *workspace) {
    const size_t pairs = (K + 1) / 2, lda = round_up(pairs, 16);
    const size_t panels = (M + NRF - 1) / NRF, ldt = panels * NRF;
    uint32_t *xp = workspace;                         // [panel][pair][NRF]: x's rows as columns
    uint32_t *wp = xp + panels * pairs * NRF;         // [MRF][lda]: a block of w's rows
    float *yt = (float *)(wp + MRF * lda);            // [N][ldt]: yᵀ
    // x: each row's pairs, written down a column of its panel
    uint32_t row[16];
    memset(xp, 0, panels * pairs * NRF * 4);
    for (size_t m = 0; m < M; m++) {
        uint32_t *col = xp + (m / NRF) * pairs * NRF + m % NRF;
        const float *src = x + m * K;
        for (size_t c = 0; c < K; c += 32) {
            const size_t n = K - c < 32 ? K - c : 32;
            _mm512_storeu_si512(row, pairs_along_row(src + c, n));
            for (size_t i = 0; i < (n + 1) / 2; i++) col[(c / 2 + i) * NRF] = row[i];
        }
    }
    for (size_t n0 = 0; n0 < N; n0 += MRF) {
        const size_t mr = N - n0 < MRF ? N - n0 : MRF;
        for (size_t r = 0; r < mr; r++) pack_row(w + (n0 + r) * K, K, wp + r * lda);
        // while this block computes, the next block of w's rows (contiguous) comes into L2
        const size_t lines = next_block_lines(n0 + mr, N, MRF, K);
        for (size_t j = 0; j < panels; j++)
            kernel_nv4((int)mr, wp, lda, 1, xp + j * pairs * NRF, pairs, yt + n0 * ldt + j * NRF, ldt,
                       prefetch_share(w + (n0 + mr) * K, 64, 0, lines, j, panels));
    }
    transpose_out(yt, ldt, M, N, bias, y);
}

BF16_TARGET void bf16_linear_input_gradient(const float *dy, const float *w, float *dx,
                                            size_t M, size_t K, size_t N, void *workspace) {
    const size_t pairs = (N + 1) / 2;
    uint32_t *dyp = workspace;                                  // [M][pairs]
    uint32_t *panel = dyp + round_up(M * pairs, 16);            // [KCX / 2][NRX]: columns of a chunk of w's rows
    float *tile = (float *)(panel + KCX / 2 * NRX);             // [MRX][NRX]
    const size_t tiles = (M + MRX - 1) / MRX;
    for (size_t m = 0; m < M; m++) pack_row(dy + m * N, N, dyp + m * pairs);
    // dx = Σ over chunks of KCX rows of w of dy[:, chunk]·w[chunk, :]: each chunk is contiguous in memory, so
    // packing a panel of its columns stays within a few hundred pages
    for (size_t k0 = 0; k0 < N; k0 += KCX) {
        const size_t rows = N - k0 < KCX ? N - k0 : KCX, chunk_pairs = (rows + 1) / 2;
        const float *wc = w + k0 * K;
        for (size_t c0 = 0; c0 < K; c0 += NRX) {
            const size_t nc = K - c0 < NRX ? K - c0 : NRX;
            pack_panel_across_rows(wc, K, rows, c0, nc, NVX, panel);
            // while this panel computes, the next one's lines come into L2 (4 of each row, the next chunk's first)
            const int last = c0 + NRX >= K;
            const size_t lines = last ? (k0 + KCX < N ? (N - k0 - KCX < KCX ? N - k0 - KCX : KCX) * 4 : 0) : rows * 4;
            const float *next = last ? w + (k0 + KCX) * K : wc + c0 + NRX;
            for (size_t m0 = 0, t = 0; m0 < M; m0 += MRX, t++) {
                const size_t mr = M - m0 < MRX ? M - m0 : MRX;
                kernel_nv4((int)mr, dyp + m0 * pairs + k0 / 2, pairs, 1, panel, chunk_pairs, tile, NRX,
                           prefetch_share(next, K * 4, 2, lines, t, tiles));
                for (size_t r = 0; r < mr; r++)
                    for (size_t v = 0; v < NVX && v * 16 < nc; v++) {
                        float *dst = dx + (m0 + r) * K + c0 + v * 16;
                        const __mmask16 mask = first_lanes(nc - v * 16);
                        __m512 t = _mm512_load_ps(tile + r * NRX + v * 16);
                        if (k0 > 0) t = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), t);
                        _mm512_mask_storeu_ps(dst, mask, t);
                    }
            }
        }
    }
}

BF16_TARGET void bf16_linear_accumulate_weight_gradient(const float *dy, const float *x, float *g,
                                                        size_t M, size_t K, size_t N, void *workspace) {
    const size_t pairs = (M + 1) / 2;
    const size_t panels = (K + NRW - 1) / NRW;
    uint32_t *dyp = workspace;                                  // [pair][N]: pairs of dy's rows
    uint32_t *xp = dyp + round_up(pairs * N, 16);               // [panel][pair][NRW]: pairs of x's rows
    float *tile = (float *)(xp + panels * pairs * NRW);         // [MRW][NRW]
    for (size_t c0 = 0; c0 < N; c0 += 16) {
        const size_t n = N - c0 < 16 ? N - c0 : 16;
        for (size_t p = 0; p < pairs; p++) {
            const float *r0 = dy + 2 * p * N + c0;
            _mm512_mask_storeu_epi32(dyp + p * N + c0, first_lanes(n), pairs_across_rows(r0, 2 * p + 1 < M ? r0 + N : NULL, n));
        }
    }
    for (size_t j = 0; j < panels; j++) {
        const size_t c0 = j * NRW;
        pack_panel_across_rows(x, K, M, c0, K - c0 < NRW ? K - c0 : NRW, NVW, xp + j * pairs * NRW);
    }
    for (size_t o0 = 0; o0 < N; o0 += MRW) {
        const size_t mr = N - o0 < MRW ? N - o0 : MRW;
        // while these rows of g compute, the next rows (contiguous) come into L2
        const size_t lines = next_block_lines(o0 + mr, N, MRW, K);
        for (size_t j = 0; j < panels; j++) {
            const size_t c0 = j * NRW, nc = K - c0 < NRW ? K - c0 : NRW;
            kernel_nv4((int)mr, dyp + o0, 1, N, xp + j * pairs * NRW, pairs, tile, NRW,
                       prefetch_share(g + (o0 + mr) * K, 64, 0, lines, j, panels));
            // g += bf16(tile): the reduced-precision gradient added into its float32 buffer
            for (size_t r = 0; r < mr; r++)
                for (size_t v = 0; v < NVW && v * 16 < nc; v++) {
                    const __mmask16 mask = first_lanes(nc - v * 16);
                    float *dst = g + (o0 + r) * K + c0 + v * 16;
                    const __m512 t = _mm512_castsi512_ps(round_bits(_mm512_load_si512(tile + r * NRW + v * 16)));
                    _mm512_mask_storeu_ps(dst, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), t));
                }
        }
    }
}

// CPUID leaf 7 subleaf `sub` (ebx in b, eax in a) when the OS saves the ZMM state (XMM, YMM, opmask and both halves of
// the ZMM registers); 0 otherwise, or when the CPU has no leaf 7.
static int avx512_leaf7(unsigned sub, unsigned *a, unsigned *b) {
    unsigned c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    if (!__get_cpuid(1, a, b, &c, &d) || !(c & (1u << 27))) return 0;          // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0xE6u) != 0xE6u) return 0;
    __cpuid_count(7, sub, *a, *b, c, d);
    return 1;
}

static int detect(void) {
    unsigned a, b;
    const unsigned f = 1u << 16, bw = 1u << 30, vl = 1u << 31;
    if (!avx512_leaf7(0, &a, &b) || (b & (f | bw | vl)) != (f | bw | vl)) return 0;
    return avx512_leaf7(1, &a, &b) && (a & (1u << 5)) ? 1 : 0;        // AVX512_BF16
}

// ---- float32 forward for small batches: y[M, N] = x[M, K]·w[N, K]ᵀ + bias, M ≤ a few hundred rows ----
//
// OpenBLAS packs all of w (the operand it sees transposed) on every call, and for a batch of 64 rows that copy costs
// a fifth of the product. Here w is never copied: the kernel broadcasts its elements straight from 6 rows of w (six
// sequential streams, the next block's rows prefetched into L2 while this one computes) against a panel of 64 rows
// of x transposed [k][64] (64-byte aligned, zero beyond M), keeping 6 × 64 float32 sums in 24 of the 32 vector
// registers; each sum runs over k in order with one FMA per step. yᵀ goes through the workspace and is transposed
// 16 × 16 into y with the bias added, as in the bfloat16 forward above.

// acc[r][·] (r < MR, NV vectors) = Σ_k a[r·lda + k] · b[k][·]  (b's rows 64 apart, 64-byte aligned), one FMA per
// step, pf's lines prefetched meanwhile: the float32 tile kernels' sums (acc declared by the caller).
#define F32_TILE_SUMS(MR, NV, a, lda, b, K, pf, acc)                                                           \
    do {                                                                                                       \
        for (int r_ = 0; r_ < (MR); r_++)                                                                      \
            for (int v_ = 0; v_ < (NV); v_++) (acc)[r_][v_] = _mm512_setzero_ps();                             \
        TILE_STEPS(K, pf, F32_STEP);                                                                           \
    } while (0)
#define F32_STEP(k)                                                                                            \
    do {                                                                                                       \
        __m512 bv[4];                                                                                          \
        for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + (k) * 64 + v * 16);                          \
        for (int r = 0; r < MR; r++) {                                                                         \
            const __m512 av = _mm512_set1_ps(a[r * lda + (k)]);                                                \
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                   \
        }                                                                                                      \
    } while (0)

// c[r·ldc + ·] (r < MR, NV·16 floats each, 64-byte aligned) = Σ_k a[r·lda + k] · b[k][·]  (b's rows 64 apart)
F32_INLINE void f32_kernel(int MR, int NV, const float *restrict a, size_t lda, const float *restrict b, size_t K,
                           float *restrict c, size_t ldc, prefetch_t pf) {
    __m512 acc[MRMAX][4];
    F32_TILE_SUMS(MR, NV, a, lda, b, K, pf, acc);
    TILE_STORE(MR, NV, acc, c, ldc);
}

// One kernel per row count and width (16, 32, 48 or 64 columns of the panel), each unrolled with its sums in
// registers: a last panel of few rows computes only the vectors it has.
#define F32_TILE(R) f32_kernel(R, nv_, a, lda, b, K, c, ldc, pf)
#define F32_KERNEL_FOR_ROWS(NAME, NV)                                                                          \
    F32_TARGET static void NAME(int mr, const float *a, size_t lda, const float *b, size_t K, float *c,        \
                                size_t ldc, prefetch_t pf) {                                                   \
        enum { nv_ = NV };                                                                                     \
        FOR_ROWS(mr, F32_TILE)                                                                                 \
    }
F32_KERNEL_FOR_ROWS(f32_kernel_nv1, 1)
F32_KERNEL_FOR_ROWS(f32_kernel_nv2, 2)
F32_KERNEL_FOR_ROWS(f32_kernel_nv3, 3)
F32_KERNEL_FOR_ROWS(f32_kernel_nv4, 4)
typedef void (*f32_kernel_fn)(int, const float *, size_t, const float *, size_t, float *, size_t, prefetch_t);
// by the panel's width in vectors, minus one
static const f32_kernel_fn f32_kernel_by_width[4] = {f32_kernel_nv1, f32_kernel_nv2, f32_kernel_nv3, f32_kernel_nv4};

// The same tile with its sums added into c (row stride ldc, nc ≤ NV·16 columns, any alignment) as they leave the
// registers, the squares of the new values summed into *squares.
F32_INLINE void f32_kernel_acc(int MR, int NV, const float *restrict a, size_t lda, const float *restrict b,
                               size_t K, float *restrict c, size_t ldc, size_t nc, prefetch_t pf, __m512 *squares) {
    __m512 acc[MRMAX][4];
    F32_TILE_SUMS(MR, NV, a, lda, b, K, pf, acc);
    __m512 sq = *squares;
    for (int v = 0; v < NV; v++) {
        const __mmask16 mask = first_lanes(nc > (size_t)v * 16 ? nc - (size_t)v * 16 : 0);
        for (int r = 0; r < MR; r++) {
            float *dst = c + r * ldc + v * 16;
            const __m512 t = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), acc[r][v]);
            _mm512_mask_storeu_ps(dst, mask, t);
            sq = _mm512_fmadd_ps(t, t, sq);
        }
    }
    *squares = sq;
}
#define F32_TILE_ACC(R) f32_kernel_acc(R, nv_, a, lda, b, K, c, ldc, nc, pf, squares)
#define F32_ACC_KERNEL_FOR_ROWS(NAME, NV)                                                                      \
    F32_TARGET static void NAME(int mr, const float *a, size_t lda, const float *b, size_t K, float *c,        \
                                size_t ldc, size_t nc, prefetch_t pf, __m512 *squares) {                       \
        enum { nv_ = NV };                                                                                     \
        FOR_ROWS(mr, F32_TILE_ACC)                                                                             \
    }
F32_ACC_KERNEL_FOR_ROWS(f32_acc_kernel_nv1, 1)
F32_ACC_KERNEL_FOR_ROWS(f32_acc_kernel_nv2, 2)
F32_ACC_KERNEL_FOR_ROWS(f32_acc_kernel_nv3, 3)
F32_ACC_KERNEL_FOR_ROWS(f32_acc_kernel_nv4, 4)
typedef void (*f32_acc_kernel_fn)(int, const float *, size_t, const float *, size_t, float *, size_t, size_t, prefetch_t,
                                  __m512 *);
static const f32_acc_kernel_fn f32_acc_kernel_by_width[4] = {f32_acc_kernel_nv1, f32_acc_kernel_nv2, f32_acc_kernel_nv3,
                                                             f32_acc_kernel_nv4};

enum { F32_NR = 64 };

size_t f32_linear_forward_workspace_bytes(size_t M, size_t K, size_t N) {
    const size_t ldt = round_up(M, F32_NR);
    return (ldt * K + round_up(N, 16) * ldt) * 4;
}

F32_TARGET void f32_linear_forward(const float *x, const float *w, const float *bias, float *y,
                                   size_t M, size_t K, size_t N, void *workspace) {
    const size_t panels = (M + F32_NR - 1) / F32_NR, ldt = panels * F32_NR;
    float *xp = workspace;                  // [panel][k][64]: x's rows as columns
    float *yt = xp + ldt * K;               // [N][ldt]: yᵀ
    if (M % F32_NR) memset(xp + (panels - 1) * K * F32_NR, 0, K * F32_NR * 4);   // the last panel's missing rows
    for (size_t m0 = 0; m0 < M; m0 += 16)
        for (size_t k0 = 0; k0 < K; k0 += 16)
            transpose16(x + m0 * K + k0, K, M - m0 < 16 ? M - m0 : 16, K - k0 < 16 ? K - k0 : 16, NULL,
                        xp + (m0 / F32_NR) * K * F32_NR + k0 * F32_NR + m0 % F32_NR, F32_NR);
    for (size_t n0 = 0; n0 < N; n0 += MRMAX) {
        const size_t mr = N - n0 < MRMAX ? N - n0 : MRMAX;
        // while this block computes, the next block of w's rows (contiguous) comes into L2
        const size_t lines = next_block_lines(n0 + mr, N, MRMAX, K);
        for (size_t j = 0; j < panels; j++) {
            const size_t cols = M - j * F32_NR < F32_NR ? M - j * F32_NR : F32_NR;   // rows of x in this panel
            f32_kernel_by_width[(cols + 15) / 16 - 1]((int)mr, w + n0 * K, K, xp + j * K * F32_NR, K,
                                                      yt + n0 * ldt + j * F32_NR, ldt,
                                                      prefetch_share(w + (n0 + mr) * K, 64, 0, lines, j, panels));
        }
    }
    transpose_out(yt, ldt, M, N, bias, y);
}

// ---- float32 weight gradient of Linear: g[N, K] += dy[M, N]ᵀ · x[M, K], with the sum of the squares of the new g ----
//
// The forward's kernel again, with dyᵀ's rows as its broadcast rows (dy transposed once, N × M floats) and x's rows
// as the panel, packed 64 columns wide: each 6 × 64 tile of g is the sum over the M rows of the batch, added into g
// as it leaves the registers, g's next tile prefetched meanwhile. The tile's new values are in registers anyway: their
// squares are summed there (float32 per tile, double across tiles), so the clipping norm needs no pass over g
// afterwards (GradientNormTally). g is read and written once; no packed copy of it or of dy's columns.
size_t f32_linear_weight_gradient_workspace_bytes(size_t M, size_t K, size_t N) {
    return (round_up(N * M, 16) + round_up(K, F32_NR) * M) * 4;
}

F32_TARGET void f32_linear_weight_gradient(const float *dy, const float *x, float *g, size_t M, size_t K, size_t N,
                                           void *workspace, double *sum_squares) {
    const size_t panels = (K + F32_NR - 1) / F32_NR;
    float *dyt = workspace;                            // [N][M]: dyᵀ
    float *xp = dyt + round_up(N * M, 16);             // [panel][M][64]: x's rows, 64 columns at a time
    for (size_t m0 = 0; m0 < M; m0 += 16)
        for (size_t n0 = 0; n0 < N; n0 += 16)
            transpose16(dy + m0 * N + n0, N, M - m0 < 16 ? M - m0 : 16, N - n0 < 16 ? N - n0 : 16, NULL,
                        dyt + n0 * M + m0, M);
    for (size_t j = 0; j < panels; j++) {
        const size_t c0 = j * F32_NR, nc = K - c0 < F32_NR ? K - c0 : F32_NR;
        for (size_t m = 0; m < M; m++)
            for (size_t v = 0; v < 4; v++)
                _mm512_store_ps(xp + (j * M + m) * F32_NR + v * 16,
                                _mm512_maskz_loadu_ps(first_lanes(nc > v * 16 ? nc - v * 16 : 0), x + m * K + c0 + v * 16));
    }
    __m512d total = _mm512_setzero_pd();
    for (size_t o0 = 0; o0 < N; o0 += MRMAX) {
        const size_t mr = N - o0 < MRMAX ? N - o0 : MRMAX;
        for (size_t j = 0; j < panels; j++) {
            const size_t c0 = j * F32_NR, nc = K - c0 < F32_NR ? K - c0 : F32_NR;
            // the lines of g's next tile: these rows' next 64 columns, or the first 64 of the next rows
            const size_t next_rows = j + 1 < panels ? mr : (N - o0 - mr < MRMAX ? N - o0 - mr : MRMAX);
            const float *next = j + 1 < panels ? g + o0 * K + c0 + F32_NR : g + (o0 + mr) * K;
            const prefetch_t pf = prefetch_share(next, K * 4, 2, next_rows * 4, 0, 1);
            __m512 squares = _mm512_setzero_ps();
            f32_acc_kernel_by_width[(nc + 15) / 16 - 1]((int)mr, dyt + o0 * M, M, xp + j * M * F32_NR, M, g + o0 * K + c0, K,
                                                        nc, pf, &squares);
            total = _mm512_add_pd(total, _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(squares)),
                                                       _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(squares), 1)))));
        }
    }
    if (sum_squares) *sum_squares = _mm512_reduce_add_pd(total);
}

// row[k]: where patch entry k = (c, u, v) of output position (0, 0) is in x [channels][height][width].
static void patch_offsets(int32_t *row, size_t channels, size_t height, size_t width, size_t kernel) {
    for (size_t ch = 0, k = 0; ch < channels; ch++)
        for (size_t u = 0; u < kernel; u++)
            for (size_t v = 0; v < kernel; v++, k++) row[k] = (int32_t)(ch * height * width + u * width + v);
}

// ---- float32 convolution forward, one utterance: y[o][p] = bias[o] + Σ_k W[o][k] · patch_k(p), optionally ReLU'd ----
//
// A tile kernel with the roles of the Linear forward's swapped: 6 output positions × 64 output channels, the
// positions' patch values broadcast straight from x (one base pointer per position, the patch entry's offset from a
// table: any kernel size and stride, no unfolded copy and no panel of it), W packed once per call as Wᵀ panels
// [64 channels][K][64] (f32_conv_forward_pack; a panel is 590 KB for the ASR prenet and stays in L2 while all the
// positions pass). The lines of x 24 patch entries ahead are prefetched into L1 (they come from L2: one output
// row's patches are 150 KB): without that the broadcasts' misses cost 8% (110 against 102 GFLOP/s on the prenet's
// second convolution with x in L3, Zen 4). Four output rows at a time go through all the panels (x read from memory once; 107 against
// 104 GFLOP/s with each panel over the whole utterance, x cold). The 6 × 64 tile is written to y transposed with the
// bias and the ReLU on the way.
size_t f32_conv_forward_workspace_bytes(size_t in_channels, size_t kernel, size_t cout) {
    const size_t K = in_channels * kernel * kernel;
    return (round_up(cout, F32_NR) * K + MRMAX * F32_NR + round_up(K, 16)) * 4;
}

F32_TARGET void f32_conv_forward_pack(const float *w, size_t cout, size_t K, void *workspace) {
    float *packed = workspace;
    const size_t blocks = (cout + F32_NR - 1) / F32_NR;
    if (cout % F32_NR) memset(packed + (blocks - 1) * K * F32_NR, 0, K * F32_NR * 4);   // the last panel's missing channels
    for (size_t o0 = 0; o0 < cout; o0 += 16)
        for (size_t k0 = 0; k0 < K; k0 += 16)
            transpose16(w + o0 * K + k0, K, cout - o0 < 16 ? cout - o0 : 16, K - k0 < 16 ? K - k0 : 16, NULL,
                        packed + (o0 / F32_NR) * K * F32_NR + k0 * F32_NR + o0 % F32_NR, F32_NR);
}

// tile[r][·] (r < MR, 64 channels) = Σ_k base[r][row[k]] · wt[k][·], in k order, one FMA per step (the forward: r a
// position, k a patch entry; the weight gradient: r a patch entry, k a position).
#define CONV_STEP(k)                                                                                           \
    do {                                                                                                       \
        const int32_t at_ = row[k];                                                                            \
        __m512 bv[4];                                                                                          \
        for (int v = 0; v < 4; v++) bv[v] = _mm512_load_ps(wt + (size_t)(k) * F32_NR + v * 16);               \
        for (int r = 0; r < MR; r++) {                                                                         \
            const __m512 av = _mm512_set1_ps(base[r][at_]);                                                    \
            for (int v = 0; v < 4; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                     \
        }                                                                                                      \
    } while (0)
enum { CONV_PREFETCH = 24 };   // steps ahead (8 kernel rows of a 3 × 3 kernel in the forward)
enum { CONV_GROUP_ROWS = 4 };  // output rows through all the panels before the next
F32_INLINE void conv_tile(int MR, const float *const *base, const int32_t *restrict row, const float *restrict wt,
                          size_t K, float *restrict tile) {
    __m512 acc[MRMAX][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + CONV_PREFETCH + 3 <= K; k += 3) {
        // the first and the last row's line (the forward's 6 positions span at most two lines of a row of x)
        _mm_prefetch((const char *)(base[0] + row[k + CONV_PREFETCH]), _MM_HINT_T0);
        _mm_prefetch((const char *)(base[MR - 1] + row[k + CONV_PREFETCH]), _MM_HINT_T0);
        CONV_STEP(k);
        CONV_STEP(k + 1);
        CONV_STEP(k + 2);
    }
    for (; k < K; k++) CONV_STEP(k);
    TILE_STORE(MR, 4, acc, tile, F32_NR);
}
#undef CONV_STEP
#define CONV_TILE(R) conv_tile(R, base, row, wt, K, tile)
F32_TARGET static void conv_tile_for_rows(int mr, const float *const *base, const int32_t *row, const float *wt, size_t K,
                                          float *tile) {
    FOR_ROWS(mr, CONV_TILE)
}

F32_TARGET void f32_conv_forward(const float *x, size_t channels, size_t height, size_t width, size_t kernel,
                                 size_t stride, size_t oh, size_t ow, size_t cout, const float *bias, int relu, float *y,
                                 void *workspace) {
    const size_t K = channels * kernel * kernel, n = oh * ow, blocks = (cout + F32_NR - 1) / F32_NR;
    const float *packed = workspace;                               // [block][K][64]: Wᵀ (f32_conv_forward_pack)
    float *tile = (float *)workspace + blocks * K * F32_NR;        // [6][64]
    int32_t *row = (int32_t *)(tile + MRMAX * F32_NR);             // [K]: each patch entry's offset in x
    patch_offsets(row, channels, height, width, kernel);
    // a few output rows at a time through every panel: their part of x (360 KB for the ASR prenet) comes from memory
    // once and from cache for the other panels, not once per panel
    const size_t group = CONV_GROUP_ROWS * ow;
    for (size_t g0 = 0; g0 < n; g0 += group) {
      const size_t g1 = n - g0 < group ? n : g0 + group;
      for (size_t j = 0; j < blocks; j++) {
        const size_t c0 = j * F32_NR, nc = cout - c0 < F32_NR ? cout - c0 : F32_NR;
        for (size_t p0 = g0; p0 < g1; p0 += MRMAX) {
            const size_t mr = g1 - p0 < MRMAX ? g1 - p0 : MRMAX;
            const float *base[MRMAX];
            for (size_t r = 0; r < MRMAX; r++) {
                const size_t p = p0 + (r < mr ? r : 0);
                base[r] = x + stride * (p / ow) * width + stride * (p % ow);
            }
            conv_tile_for_rows((int)mr, base, row, packed + j * K * F32_NR, K, tile);
            for (size_t o = 0; o < nc; o++) {
                const float b = bias ? bias[c0 + o] : 0.0f;
                float *dst = y + (c0 + o) * n + p0;
                for (size_t r = 0; r < mr; r++) {
                    const float t = tile[r * F32_NR + o] + b;
                    dst[r] = relu && t <= 0.0f ? 0.0f : t;   // a NaN stays NaN, as torch.relu keeps it
                }
            }
        }
      }
    }
}

// ---- float32 convolution weight gradient, one utterance: g[o][k] += Σ_p dy[o][p] · patch_k(p) ----
//
// The forward's kernel again, reducing over the positions: tiles of 6 patch entries × 64 output channels, the entries'
// values broadcast straight from x (one base pointer per entry, each position's offset from a table) and dy packed
// once per utterance as dyᵀ panels [64 channels][positions][64] (360 KB each for the ASR prenet, in L2 while its
// tiles pass). A few input channels at a time go through all the panels, so that x comes from memory once. Each tile
// is added into g transposed as it leaves the registers. No unfolded copy of the utterance and no transposed panel
// of it (both cost the kernel we had before 12%).
enum { WGRAD_GROUP_CHANNELS = 8 };   // input channels through all the panels before the next

size_t f32_conv_weight_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout) {
    const size_t K = in_channels * kernel * kernel;
    return (round_up(cout, F32_NR) * positions + MRMAX * F32_NR + round_up(K, 16) + round_up(positions, 16)) * 4;
}

F32_TARGET void f32_conv_weight_gradient(const float *x, size_t channels, size_t height, size_t width, size_t kernel,
                                         size_t stride, size_t oh, size_t ow, const float *dy, size_t cout, float *g,
                                         void *workspace) {
    const size_t kk = kernel * kernel, K = channels * kk, n = oh * ow, blocks = (cout + F32_NR - 1) / F32_NR;
    float *packed = workspace;                                 // [block][n][64]: dyᵀ
    float *tile = packed + blocks * n * F32_NR;                // [6][64]
    int32_t *row = (int32_t *)(tile + MRMAX * F32_NR);         // [K]: each patch entry's offset in x
    int32_t *at = row + round_up(K, 16);                       // [n]: each position's offset in a plane
    patch_offsets(row, channels, height, width, kernel);
    for (size_t p = 0; p < n; p++) at[p] = (int32_t)(stride * (p / ow) * width + stride * (p % ow));
    if (cout % F32_NR) memset(packed + (blocks - 1) * n * F32_NR, 0, n * F32_NR * 4);   // the missing channels
    for (size_t o0 = 0; o0 < cout; o0 += 16)
        for (size_t p0 = 0; p0 < n; p0 += 16)
            transpose16(dy + o0 * n + p0, n, cout - o0 < 16 ? cout - o0 : 16, n - p0 < 16 ? n - p0 : 16, NULL,
                        packed + (o0 / F32_NR) * n * F32_NR + p0 * F32_NR + o0 % F32_NR, F32_NR);
    const size_t group = WGRAD_GROUP_CHANNELS * kk;
    for (size_t g0 = 0; g0 < K; g0 += group) {
        const size_t g1 = K - g0 < group ? K : g0 + group;
        for (size_t j = 0; j < blocks; j++) {
            const size_t c0 = j * F32_NR, nc = cout - c0 < F32_NR ? cout - c0 : F32_NR;
            for (size_t k0 = g0; k0 < g1; k0 += MRMAX) {
                const size_t mr = g1 - k0 < MRMAX ? g1 - k0 : MRMAX;
                const float *base[MRMAX];
                for (size_t r = 0; r < MRMAX; r++) base[r] = x + row[k0 + (r < mr ? r : 0)];
                conv_tile_for_rows((int)mr, base, at, packed + j * n * F32_NR, n, tile);
                for (size_t o = 0; o < nc; o++) {
                    float *dst = g + (c0 + o) * K + k0;
                    for (size_t r = 0; r < mr; r++) dst[r] += tile[r * F32_NR + o];
                }
            }
        }
    }
}

// ---- float32 convolution input gradient, one utterance: dx = fold(Wᵀ·dy), then the ReLU mask ----
//
// The forward's tile kernel with Wᵀ's rows (the patch entries) as its broadcast rows and dy, packed 64 positions
// wide, as its panel: dcols[k][p] = Σ_o W[o][k]·dy[o][p]. dcols is made for a few input channels at a time (all
// their patch entries × all positions, 100 KB for the ASR prenet, in L2) and folded into those channels' planes of
// dx at once (ck_conv_fold, which zeroes each plane first and applies the ReLU mask): no 13 MB dcols of the whole
// utterance goes to memory and back, and no sgemm packs dy or Wᵀ on every call.
F32_TARGET void f32_transpose(const float *src, size_t rows, size_t cols, float *dst) {
    for (size_t r0 = 0; r0 < rows; r0 += 16)
        for (size_t c0 = 0; c0 < cols; c0 += 16)
            transpose16(src + r0 * cols + c0, cols, rows - r0 < 16 ? rows - r0 : 16, cols - c0 < 16 ? cols - c0 : 16,
                        NULL, dst + c0 * rows + r0, rows);
}

// Input channels per block: patch entries a multiple of the 6-row tiles where that is possible.
static size_t input_gradient_group(size_t kk) {
    size_t a = kk, b = MRMAX;
    while (b) { const size_t t = a % b; a = b; b = t; }
    return MRMAX / a;   // 6 / gcd(k·k, 6)
}

size_t f32_conv_input_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout) {
    const size_t kk = kernel * kernel, group = input_gradient_group(kk);
    (void)in_channels;
    return (round_up(positions, F32_NR) * cout + group * kk * positions + F32_NR + MRMAX * F32_NR) * 4;
}

F32_TARGET void f32_conv_input_gradient(const float *wt, const float *dy, size_t cout, size_t channels, size_t height,
                                        size_t width, size_t kernel, size_t stride, size_t oh, size_t ow,
                                        const float *relu_mask, float *dx, int fold_path, void *workspace) {
    const size_t n = oh * ow, kk = kernel * kernel, group = input_gradient_group(kk), blocks = (n + F32_NR - 1) / F32_NR;
    const size_t area = height * width;
    float *packed = workspace;                                  // [block][cout][64]: dy, 64 positions at a time
    float *dcols = packed + blocks * cout * F32_NR;             // [group·k·k][n]
    float *tile = dcols + round_up(group * kk * n, 16);         // [6][64]
    const prefetch_t none = {NULL, 0, 0, 0, 0};
    for (size_t j = 0; j < blocks; j++) {
        const size_t p0 = j * F32_NR, nc = n - p0 < F32_NR ? n - p0 : F32_NR;
        for (size_t o = 0; o < cout; o++)
            for (size_t v = 0; v < 4; v++)
                _mm512_store_ps(packed + (j * cout + o) * F32_NR + v * 16,
                                _mm512_maskz_loadu_ps(first_lanes(nc > v * 16 ? nc - v * 16 : 0), dy + o * n + p0 + v * 16));
    }
    for (size_t c0 = 0; c0 < channels; c0 += group) {
        const size_t g = channels - c0 < group ? channels - c0 : group, rows = g * kk;
        for (size_t j = 0; j < blocks; j++) {
            const size_t p0 = j * F32_NR, nc = n - p0 < F32_NR ? n - p0 : F32_NR, nv = (nc + 15) / 16;
            for (size_t r0 = 0; r0 < rows; r0 += MRMAX) {
                const size_t mr = rows - r0 < MRMAX ? rows - r0 : MRMAX;
                f32_kernel_by_width[nv - 1]((int)mr, wt + (c0 * kk + r0) * cout, cout, packed + j * cout * F32_NR, cout,
                                            tile, F32_NR, none);
                for (size_t r = 0; r < mr; r++)
                    for (size_t v = 0; v < nv; v++)
                        _mm512_mask_storeu_ps(dcols + (r0 + r) * n + p0 + v * 16, first_lanes(nc - v * 16),
                                              _mm512_load_ps(tile + r * F32_NR + v * 16));
            }
        }
        ck_conv_fold((ck_path)fold_path, dcols, dx + c0 * area, g, height, width, kernel, stride, oh, ow, 1,
                     relu_mask ? relu_mask + c0 * area : NULL);
    }
}

static int detect_f32(void) {
    unsigned a, b;
    return avx512_leaf7(0, &a, &b) && (b & (1u << 16)) ? 1 : 0;      // AVX512F
}

#else   // not x86-64 with clang: no native kernels; callers keep the emulation

static int detect(void) { return 0; }
static int detect_f32(void) { return 0; }
size_t f32_conv_forward_workspace_bytes(size_t in_channels, size_t kernel, size_t cout) {
    (void)in_channels; (void)kernel; (void)cout; return 0;
}
void f32_conv_forward_pack(const float *w, size_t cout, size_t K, void *ws) { (void)w; (void)cout; (void)K; (void)ws; }
size_t f32_conv_input_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout) {
    (void)in_channels; (void)kernel; (void)positions; (void)cout; return 0;
}
void f32_transpose(const float *src, size_t rows, size_t cols, float *dst) {
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}
void f32_conv_input_gradient(const float *wt, const float *dy, size_t cout, size_t channels, size_t height, size_t width,
                             size_t kernel, size_t stride, size_t oh, size_t ow, const float *relu_mask, float *dx,
                             int fold_path, void *ws) {
    (void)wt; (void)dy; (void)cout; (void)channels; (void)height; (void)width; (void)kernel; (void)stride; (void)oh;
    (void)ow; (void)relu_mask; (void)dx; (void)fold_path; (void)ws;
}
size_t f32_conv_weight_gradient_workspace_bytes(size_t in_channels, size_t kernel, size_t positions, size_t cout) {
    (void)in_channels; (void)kernel; (void)positions; (void)cout; return 0;
}
void f32_conv_weight_gradient(const float *x, size_t channels, size_t height, size_t width, size_t kernel, size_t stride,
                              size_t oh, size_t ow, const float *dy, size_t cout, float *g, void *ws) {
    (void)x; (void)channels; (void)height; (void)width; (void)kernel; (void)stride; (void)oh; (void)ow; (void)dy;
    (void)cout; (void)g; (void)ws;
}
void f32_conv_forward(const float *x, size_t channels, size_t height, size_t width, size_t kernel, size_t stride,
                      size_t oh, size_t ow, size_t cout, const float *bias, int relu, float *y, void *ws) {
    (void)x; (void)channels; (void)height; (void)width; (void)kernel; (void)stride; (void)oh; (void)ow;
    (void)cout; (void)bias; (void)relu; (void)y; (void)ws;
}
size_t f32_linear_forward_workspace_bytes(size_t M, size_t K, size_t N) { (void)M; (void)K; (void)N; return 0; }
size_t f32_linear_weight_gradient_workspace_bytes(size_t M, size_t K, size_t N) { (void)M; (void)K; (void)N; return 0; }
void f32_linear_weight_gradient(const float *dy, const float *x, float *g, size_t M, size_t K, size_t N, void *ws,
                                double *sum_squares) {
    (void)dy; (void)x; (void)g; (void)M; (void)K; (void)N; (void)ws; (void)sum_squares;
}
void f32_linear_forward(const float *x, const float *w, const float *bias, float *y, size_t M, size_t K, size_t N,
                        void *ws) { (void)x; (void)w; (void)bias; (void)y; (void)M; (void)K; (void)N; (void)ws; }
size_t bf16_linear_workspace_bytes(size_t M, size_t K, size_t N) { (void)M; (void)K; (void)N; return 0; }
void bf16_linear_forward(const float *x, const float *w, const float *bias, float *y, size_t M, size_t K, size_t N,
                         void *ws) { (void)x; (void)w; (void)bias; (void)y; (void)M; (void)K; (void)N; (void)ws; }
void bf16_linear_input_gradient(const float *dy, const float *w, float *dx, size_t M, size_t K, size_t N, void *ws) {
    (void)dy; (void)w; (void)dx; (void)M; (void)K; (void)N; (void)ws;
}
void bf16_linear_accumulate_weight_gradient(const float *dy, const float *x, float *g, size_t M, size_t K, size_t N,
                                            void *ws) { (void)dy; (void)x; (void)g; (void)M; (void)K; (void)N; (void)ws; }

#endif

int bf16_all_representable(const float *x, size_t n) {
    uint32_t low = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        low |= u & 0xFFFFu;
    }
    return low == 0;
}

// *state: −1 until `detect` has run once, then its answer.
static int detected(int *state, int (*detect_fn)(void)) {
    int s = __atomic_load_n(state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = detect_fn();
        __atomic_store_n(state, s, __ATOMIC_RELAXED);
    }
    return s;
}

static int bf16_state = -1, f32_state = -1;

int bf16_gemm_supported(void) { return detected(&bf16_state, detect); }

int f32_linear_supported(void) { return detected(&f32_state, detect_f32); }
