// The kernels of one vector path. VectorKernels.c includes this file once per path, with
//   CK_SUFFIX  baseline | avx2 | avx512   (every function name ends in _<suffix>)
//   CK_TARGET  the function attribute: empty, target("avx,avx2,fma,f16c"), target("avx512f,...")
//   CK_W       floats per register: 4, 8, 16
// VF is one register of floats; VH half of one, which converts to VD, one register of doubles; VI and VL are the
// lane masks that comparisons of VF and VD return. Helpers that take or return vectors are compiled for the same
// target as their callers (the vector calling convention then agrees), and everything is inlined.
//
// Same results on every path: the element-wise code is the same sequence of IEEE operations per element whatever
// the register width (no contraction: `fp contract(off)` in VectorKernels.c), tails run through the same code on a
// padded copy or as scalar code doing the same operations, and a reduction adds element i into partial sum i mod 16
// (a fixed layout for every width) and those 16 sums pairwise in a fixed order.

#define CK_JOIN2(a, b) a##_##b
#define CK_JOIN(a, b) CK_JOIN2(a, b)
#define F(name) CK_JOIN(name, CK_SUFFIX)
#define K static inline __attribute__((always_inline)) CK_TARGET
#define H (CK_W / 2)
#define NACC (16 / H)   // VD accumulators that hold the 16 partial sums

typedef float F(vf) __attribute__((ext_vector_type(CK_W)));
typedef float F(vh) __attribute__((ext_vector_type(CK_W / 2)));
typedef double F(vd) __attribute__((ext_vector_type(CK_W / 2)));
typedef int32_t F(vi) __attribute__((ext_vector_type(CK_W)));
typedef int64_t F(vl) __attribute__((ext_vector_type(CK_W / 2)));
#define VF F(vf)
#define VH F(vh)
#define VD F(vd)
#define VI F(vi)
#define VL F(vl)

K VF F(ldf)(const float *p) { VF v; __builtin_memcpy(&v, p, sizeof v); return v; }
K void F(stf)(float *p, VF v) { __builtin_memcpy(p, &v, sizeof v); }
K VH F(ldh)(const float *p) { VH v; __builtin_memcpy(&v, p, sizeof v); return v; }
K void F(sth)(float *p, VH v) { __builtin_memcpy(p, &v, sizeof v); }
K VD F(ldd)(const double *p) { VD v; __builtin_memcpy(&v, p, sizeof v); return v; }
K VD F(widen)(VH x) { return __builtin_convertvector(x, VD); }
K VH F(narrow)(VD x) { return __builtin_convertvector(x, VH); }   // round to nearest (MXCSR)
K VF F(absf)(VF x) { return (VF)((VI)x & 0x7FFFFFFF); }
K VD F(absd)(VD x) { return (VD)((VL)x & 0x7FFFFFFFFFFFFFFFll); }
/// |m| with the sign of s.
K VD F(withsign)(VD m, VD s) { return (VD)(((VL)m & 0x7FFFFFFFFFFFFFFFll) | ((VL)s & (int64_t)0x8000000000000000ull)); }
/// 2^k for integral k in [-1022, 1023] held in a double.
K VD F(pow2)(VD k) { return (VD)((((VL)(k + CK_ROUND_MAGIC)) - CK_ROUND_MAGIC_BITS + 1023) << 52); }

// ---------------------------------------------------------------------------------------------------------------
// Special functions in double

/// e^x, ≲ 2 ulp of double: x = k·ln2 + r (k = round(x/ln2), Cody–Waite with a two-part ln2), e^r by its Taylor
/// series to degree 13 (|r| ≤ 0.347: truncation < 5e-18), and 2^k applied as 2^⌊k/2⌉·2^(k−⌊k/2⌉) so that the last
/// multiplication rounds once into the subnormals or overflows to inf. Clamping x to [−746, 710] keeps k in range
/// without changing any result; NaN stays NaN.
K VD F(exp_d)(VD x) {
    VD xc = x < -746.0 ? -746.0 : x;
    xc = xc > 710.0 ? 710.0 : xc;
    const VD k = (xc * 0x1.71547652b82fep0 + CK_ROUND_MAGIC) - CK_ROUND_MAGIC;
    const VD r = (xc - k * 0x1.62e42fee00000p-1) - k * 0x1.a39ef35793c76p-33;
    VD p = 1.0 / 6227020800.0;                   // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const VD half = (k * 0.5 + CK_ROUND_MAGIC) - CK_ROUND_MAGIC;
    return (p * F(pow2)(half)) * F(pow2)(k - half);
}

/// erf, ≲ 5e-11 absolute (1e-10 relative): x·Σ_{n≤8} (2/√π)(−1)ⁿx²ⁿ/(n!(2n+1)) for |x| < 0.5 (truncation < 3e-13
/// relative), a degree-20 polynomial in t = (|x| − 2.25)/1.75 on [0.5, 4] (a Chebyshev least-squares fit to
/// erf, converted to monomials; scripts/reference/erf_coefficients.py), 1 − 1.5e-8 at 4 and beyond, which every
/// float rounds to 1. NaN stays NaN.
K VD F(erf_d)(VD x) {
    const VD a = F(absd)(x), s = x * x;
    VD q = 0x1.b9e6c9dc651a3p-20;
    q = q * s - 0x1.f4d25c3e0c2ebp-17;
    q = q * s + 0x1.f9a326f9b89b7p-14;
    q = q * s - 0x1.c02db40040b86p-11;
    q = q * s + 0x1.565bcd0e6a53fp-8;
    q = q * s - 0x1.b82ce31288b51p-6;
    q = q * s + 0x1.ce2f21a042be2p-4;
    q = q * s - 0x1.812746b0379e7p-2;
    q = q * s + 0x1.20dd750429b6dp+0;
    const VD small = x * q;
    const VD t = (a < 4.0 ? a : 4.0) * 0x1.2492492492492p-1 - 0x1.4924924924925p+0;
    VD p = 0x1.cddab5e3f8f90p-16;
    p = p * t - 0x1.a015745140f58p-13;
    p = p * t + 0x1.99373beee742ap-15;
    p = p * t + 0x1.64071219f3688p-10;
    p = p * t - 0x1.cf69c99cff4bep-10;
    p = p * t - 0x1.9f90e1dc140fcp-9;
    p = p * t + 0x1.291e5390492d2p-7;
    p = p * t - 0x1.3d0c9e98d51c9p-9;
    p = p * t - 0x1.3636b2364786cp-6;
    p = p * t + 0x1.fb0fd34efa72fp-6;
    p = p * t - 0x1.8b86b71d7266cp-9;
    p = p * t - 0x1.d2697f9a0295fp-5;
    p = p * t + 0x1.680e905114dbfp-4;
    p = p * t - 0x1.13f6bb273de84p-5;
    p = p * t - 0x1.55aff21f2585bp-4;
    p = p * t + 0x1.663e9351b0d69p-3;
    p = p * t - 0x1.6e8dca2bc5d2fp-3;
    p = p * t + 0x1.dce5cd15d5d81p-4;
    p = p * t - 0x1.932b6afbd810ep-5;
    p = p * t + 0x1.9991b17317cc8p-7;
    p = p * t + 0x1.ff40476018777p-1;
    const VD r = a < 0.5 ? small : F(withsign)(p, x);
    return x != x ? x : r;
}

/// tanh: sign(x)·(e−1)/(e+1) with e = e^{2|x|} (|x| clamped at 20, where tanh is 1 in double), ≲ 1e-13 relative
/// for |x| ≥ 2^-10; x(1 − x²/3 + 2x⁴/15 − 17x⁶/315) below. NaN stays NaN.
K VD F(tanh_d)(VD x) {
    const VD a = F(absd)(x), s = x * x;
    const VD e = F(exp_d)(2.0 * (a < 20.0 ? a : 20.0));
    const VD large = F(withsign)((e - 1.0) / (e + 1.0), x);
    const VD small = x * (1.0 + s * (-1.0 / 3.0 + s * (2.0 / 15.0 + s * (-17.0 / 315.0))));
    const VD r = a < 0x1p-10 ? small : large;
    return x != x ? x : r;
}

/// log for positive normal x (every float is one as a double): x = 2^e·m, m in [√½, √2), log m = 2·atanh(s) with
/// s = (m−1)/(m+1), |s| ≤ 0.172, by its series to s²¹ (truncation < 1e-18).
K VD F(log_d)(VD x) {
    const VL bits = (VL)x;
    VL e = (bits >> 52) - 1023;
    VD m = (VD)((bits & 0x000FFFFFFFFFFFFFll) | 0x3FF0000000000000ll);
    const VL big = m > 0x1.6a09e667f3bcdp0;   // √2
    m = big ? m * 0.5 : m;
    e = e - big;                               // a true mask lane is −1
    const VD ed = (VD)(e + CK_ROUND_MAGIC_BITS) - CK_ROUND_MAGIC;
    const VD s = (m - 1.0) / (m + 1.0), s2 = s * s;
    VD q = 2.0 / 21.0;
    q = q * s2 + 2.0 / 19.0;
    q = q * s2 + 2.0 / 17.0;
    q = q * s2 + 2.0 / 15.0;
    q = q * s2 + 2.0 / 13.0;
    q = q * s2 + 2.0 / 11.0;
    q = q * s2 + 2.0 / 9.0;
    q = q * s2 + 2.0 / 7.0;
    q = q * s2 + 2.0 / 5.0;
    q = q * s2 + 2.0 / 3.0;
    q = q * s2 + 2.0;
    return ed * 0x1.62e42fee00000p-1 + (ed * 0x1.a39ef35793c76p-33 + s * q);
}

/// a^p for a ≥ 0 (or NaN) and p > 0: exp(p·log a), with 0 → 0, inf → inf, NaN → NaN.
K VD F(pow_d)(VD a, double p) {
    VD r = F(exp_d)(p * F(log_d)(a));
    r = a == 0.0 ? 0.0 : r;
    r = a == __builtin_inf() ? __builtin_inf() : r;
    return a != a ? a : r;
}

K VH F(erf_h)(VH x) { return F(narrow)(F(erf_d)(F(widen)(x))); }
K VH F(exp_h)(VH x) { return F(narrow)(F(exp_d)(F(widen)(x))); }
K VH F(tanh_h)(VH x) { return F(narrow)(F(tanh_d)(F(widen)(x))); }

/// Lanes [offset, offset + H) of a 16-lane block that lie before `rest` (the valid values of a tail).
K VL F(lanes_below)(size_t offset, size_t rest) {
    return F(ldd)(ck_lane_index + offset) < (double)rest;
}

// ---------------------------------------------------------------------------------------------------------------
// Optimizers (one register of elements per block; the tail runs the same block on a zero-padded copy). With
// `zero_grad` each block of g is set to 0 right after it was read, while its line is in cache: the separate pass
// that zeroes the gradients after a step (a memset of the whole buffer) is not needed.

K void F(zero_grad)(float *g) { F(stf)(g, (VF)0.0f); }

K void F(adam_block)(float *p, const float *g, float *m, float *v, float *vmax, float sign, float wd, int decoupled,
                     float decay, float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size) {
    VF pv = F(ldf)(p), gv = sign * F(ldf)(g), mv = F(ldf)(m), vv = F(ldf)(v);
    if (wd != 0.0f) {
        if (decoupled) pv = pv * decay; else gv = gv + wd * pv;
    }
    // torch's lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w).
    mv = w1 < 0.5f ? mv + w1 * (gv - mv) : gv - (gv - mv) * (1.0f - w1);
    vv = vv * beta2 + w2 * gv * gv;
    VF denom;
    if (vmax) {
        VF mx = __builtin_elementwise_max(F(ldf)(vmax), vv);
        F(stf)(vmax, mx);
        denom = __builtin_elementwise_sqrt(mx) / bias2_sqrt + eps;
    } else {
        denom = __builtin_elementwise_sqrt(vv) / bias2_sqrt + eps;
    }
    pv = pv + ((-step_size) * mv) / denom;
    F(stf)(p, pv); F(stf)(m, mv); F(stf)(v, vv);
}

static CK_TARGET void F(adam)(float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                              float *restrict vmax, size_t n, float sign, float wd, int decoupled, float decay,
                              float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size,
                              int zero_grad) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        F(adam_block)(p + i, g + i, m + i, v + i, vmax ? vmax + i : 0, sign, wd, decoupled, decay, w1, beta2, w2,
                      bias2_sqrt, eps, step_size);
        if (zero_grad) F(zero_grad)(g + i);
    }
    const size_t rest = n - i;
    if (rest == 0) return;
    float tp[CK_W] = {0}, tg[CK_W] = {0}, tm[CK_W] = {0}, tv[CK_W] = {0}, tx[CK_W] = {0};
    for (size_t j = 0; j < rest; j++) {
        tp[j] = p[i + j]; tg[j] = g[i + j]; tm[j] = m[i + j]; tv[j] = v[i + j];
        if (vmax) tx[j] = vmax[i + j];
    }
    F(adam_block)(tp, tg, tm, tv, vmax ? tx : 0, sign, wd, decoupled, decay, w1, beta2, w2, bias2_sqrt, eps,
                  step_size);
    for (size_t j = 0; j < rest; j++) {
        p[i + j] = tp[j]; m[i + j] = tm[j]; v[i + j] = tv[j];
        if (vmax) vmax[i + j] = tx[j];
        if (zero_grad) g[i + j] = 0.0f;
    }
}

/// Adam's memory traffic without its arithmetic (an add and a multiply per stream), for the benchmark's floor:
/// reads p, g, m, v and writes p, m, v.
static CK_TARGET void F(adam_traffic)(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                                      size_t n) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        const VF gv = F(ldf)(g + i), mv = F(ldf)(m + i) * 0.5f + gv, vv = F(ldf)(v + i) * 0.5f + gv;
        F(stf)(m + i, mv); F(stf)(v + i, vv); F(stf)(p + i, F(ldf)(p + i) + mv * vv);
    }
    for (; i < n; i++) {
        const float mi = m[i] * 0.5f + g[i], vi = v[i] * 0.5f + g[i];
        m[i] = mi; v[i] = vi; p[i] = p[i] + mi * vi;
    }
}

K void F(sgd_block)(float *p, const float *g, float *buf, float sign, float wd, float mu, float keep, int first,
                    int nesterov, float neg_lr) {
    VF pv = F(ldf)(p), gv = sign * F(ldf)(g);
    if (wd != 0.0f) gv = gv + wd * pv;
    if (buf) {
        VF b = first ? gv : mu * F(ldf)(buf) + keep * gv;
        F(stf)(buf, b);
        gv = nesterov ? gv + mu * b : b;
    }
    F(stf)(p, pv + neg_lr * gv);
}

static CK_TARGET void F(sgd)(float *restrict p, float *restrict g, float *restrict buf, size_t n, float sign,
                             float wd, float mu, float keep, int first, int nesterov, float neg_lr, int zero_grad) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        F(sgd_block)(p + i, g + i, buf ? buf + i : 0, sign, wd, mu, keep, first, nesterov, neg_lr);
        if (zero_grad) F(zero_grad)(g + i);
    }
    const size_t rest = n - i;
    if (rest == 0) return;
    float tp[CK_W] = {0}, tg[CK_W] = {0}, tb[CK_W] = {0};
    for (size_t j = 0; j < rest; j++) { tp[j] = p[i + j]; tg[j] = g[i + j]; if (buf) tb[j] = buf[i + j]; }
    F(sgd_block)(tp, tg, buf ? tb : 0, sign, wd, mu, keep, first, nesterov, neg_lr);
    for (size_t j = 0; j < rest; j++) { p[i + j] = tp[j]; if (buf) buf[i + j] = tb[j]; if (zero_grad) g[i + j] = 0.0f; }
}

K void F(adagrad_block)(float *p, const float *g, float *sum, float sign, float wd, float neg_clr, float eps) {
    VF pv = F(ldf)(p), gv = sign * F(ldf)(g);
    if (wd != 0.0f) gv = gv + wd * pv;
    VF s = F(ldf)(sum) + gv * gv;
    F(stf)(sum, s);
    F(stf)(p, pv + (neg_clr * gv) / (__builtin_elementwise_sqrt(s) + eps));
}

static CK_TARGET void F(adagrad)(float *restrict p, float *restrict g, float *restrict sum, size_t n, float sign,
                                 float wd, float neg_clr, float eps, int zero_grad) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        F(adagrad_block)(p + i, g + i, sum + i, sign, wd, neg_clr, eps);
        if (zero_grad) F(zero_grad)(g + i);
    }
    const size_t rest = n - i;
    if (rest == 0) return;
    float tp[CK_W] = {0}, tg[CK_W] = {0}, ts[CK_W] = {0};
    for (size_t j = 0; j < rest; j++) { tp[j] = p[i + j]; tg[j] = g[i + j]; ts[j] = sum[i + j]; }
    F(adagrad_block)(tp, tg, ts, sign, wd, neg_clr, eps);
    for (size_t j = 0; j < rest; j++) { p[i + j] = tp[j]; sum[i + j] = ts[j]; if (zero_grad) g[i + j] = 0.0f; }
}

K void F(rmsprop_block)(float *p, const float *g, float *sq, float *buf, float *gavg, float sign, float wd,
                        float alpha, float wa, float eps, float mu, float lr) {
    VF pv = F(ldf)(p), gv = sign * F(ldf)(g);
    if (wd != 0.0f) gv = gv + wd * pv;
    VF v = F(ldf)(sq) * alpha + wa * gv * gv;
    F(stf)(sq, v);
    VF d;
    if (gavg) {
        VF ga = F(ldf)(gavg);
        ga = wa < 0.5f ? ga + wa * (gv - ga) : gv - (gv - ga) * (1.0f - wa);
        F(stf)(gavg, ga);
        d = __builtin_elementwise_sqrt(v - ga * ga) + eps;
    } else {
        d = __builtin_elementwise_sqrt(v) + eps;
    }
    if (buf) {
        VF b = F(ldf)(buf) * mu + gv / d;
        F(stf)(buf, b);
        pv = pv - lr * b;
    } else {
        pv = pv + ((-lr) * gv) / d;
    }
    F(stf)(p, pv);
}

static CK_TARGET void F(rmsprop)(float *restrict p, float *restrict g, float *restrict sq, float *restrict buf,
                                 float *restrict gavg, size_t n, float sign, float wd, float alpha, float wa,
                                 float eps, float mu, float lr, int zero_grad) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        F(rmsprop_block)(p + i, g + i, sq + i, buf ? buf + i : 0, gavg ? gavg + i : 0, sign, wd, alpha, wa, eps, mu, lr);
        if (zero_grad) F(zero_grad)(g + i);
    }
    const size_t rest = n - i;
    if (rest == 0) return;
    float tp[CK_W] = {0}, tg[CK_W] = {0}, ts[CK_W] = {0}, tb[CK_W] = {0}, ta[CK_W] = {0};
    for (size_t j = 0; j < rest; j++) {
        tp[j] = p[i + j]; tg[j] = g[i + j]; ts[j] = sq[i + j];
        if (buf) tb[j] = buf[i + j];
        if (gavg) ta[j] = gavg[i + j];
    }
    F(rmsprop_block)(tp, tg, ts, buf ? tb : 0, gavg ? ta : 0, sign, wd, alpha, wa, eps, mu, lr);
    for (size_t j = 0; j < rest; j++) {
        p[i + j] = tp[j]; sq[i + j] = ts[j];
        if (buf) buf[i + j] = tb[j];
        if (gavg) gavg[i + j] = ta[j];
        if (zero_grad) g[i + j] = 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reductions: 16 partial sums (NACC registers of H doubles), a scalar tail into the same slots, pairwise at the end.

#define CK_SUM16(name, LANE_EXPR, SCALAR_EXPR, EXTRA_PARAMS, EXTRA_ARGS_UNUSED)                                \
    static CK_TARGET double F(name)(const float *x, size_t n EXTRA_PARAMS) {                                   \
        VD acc[NACC];                                                                                          \
        for (int j = 0; j < NACC; j++) acc[j] = 0.0;                                                           \
        size_t i = 0;                                                                                          \
        for (; i + 16 <= n; i += 16) {                                                                         \
            for (int j = 0; j < NACC; j++) {                                                                   \
                const VD v = F(widen)(F(ldh)(x + i + j * H));                                                  \
                acc[j] = acc[j] + (LANE_EXPR);                                                                 \
            }                                                                                                  \
        }                                                                                                      \
        double part[16];                                                                                       \
        __builtin_memcpy(part, acc, sizeof part);                                                              \
        for (size_t q = 0; i < n; i++, q++) {                                                                  \
            const double s = x[i];                                                                             \
            part[q] = part[q] + (SCALAR_EXPR);                                                                 \
        }                                                                                                      \
        return ck_combine16(part);                                                                             \
    }

CK_SUM16(sum_plain, v, s, , )
CK_SUM16(sum_squares, v * v, s * s, , )
CK_SUM16(sum_magnitudes, F(absd)(v), __builtin_fabs(s), , )

/// Σ|x|^p: the tail goes through the vector pow too (on a padded block whose extra lanes are 0, adding 0), so
/// every term is the same function of its value on every path.
static CK_TARGET double F(sum_powers)(const float *x, size_t n, double p) {
    VD acc[NACC];
    for (int j = 0; j < NACC; j++) acc[j] = 0.0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < NACC; j++) acc[j] = acc[j] + F(pow_d)(F(absd)(F(widen)(F(ldh)(x + i + j * H))), p);
    }
    if (i < n) {
        float t[16] = {0};
        for (size_t q = 0; i + q < n; q++) t[q] = x[i + q];
        for (int j = 0; j < NACC; j++) acc[j] = acc[j] + F(pow_d)(F(absd)(F(widen)(F(ldh)(t + j * H))), p);
    }
    double part[16];
    __builtin_memcpy(part, acc, sizeof part);
    return ck_combine16(part);
}

static CK_TARGET float F(max_magnitude)(const float *x, size_t n) {
    VF mx = 0.0f;
    VI nan = 0;
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        const VF a = F(absf)(F(ldf)(x + i));
        nan |= a != a;
        mx = a > mx ? a : mx;
    }
    if (__builtin_reduce_or(nan)) return __builtin_nanf("");
    float m = __builtin_reduce_max(mx);
    for (; i < n; i++) {
        const float a = __builtin_fabsf(x[i]);
        if (a != a) return __builtin_nanf("");
        if (a > m) m = a;
    }
    return m;
}

static CK_TARGET int F(scale_checking_finite)(float *x, size_t n, float a) {
    VI bad = 0;
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        const VF v = F(ldf)(x + i) * a;
        F(stf)(x + i, v);
        bad |= v * 0.0f != 0.0f;   // x·0 is 0 for finite x, NaN for ±inf and NaN
    }
    int finite = !__builtin_reduce_or(bad);
    for (; i < n; i++) {
        const float v = x[i] * a;
        x[i] = v;
        if (v * 0.0f != 0.0f) finite = 0;
    }
    return finite;
}

static CK_TARGET int F(all_finite)(const float *x, size_t n) {
    VI bad = 0;
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) bad |= F(ldf)(x + i) * 0.0f != 0.0f;
    if (__builtin_reduce_or(bad)) return 0;
    for (; i < n; i++) if (x[i] * 0.0f != 0.0f) return 0;
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// Special functions over buffers (half registers: the work is in double)

#define CK_MAP_HALF(name, BLOCK)                                                                               \
    static CK_TARGET void F(name)(const float *x, float *y, size_t n) {                                        \
        size_t i = 0;                                                                                          \
        for (; i + H <= n; i += H) F(sth)(y + i, BLOCK(F(ldh)(x + i)));                                        \
        if (i == n) return;                                                                                    \
        float t[H] = {0};                                                                                      \
        for (size_t j = 0; i + j < n; j++) t[j] = x[i + j];                                                    \
        F(sth)(t, BLOCK(F(ldh)(t)));                                                                           \
        for (size_t j = 0; i + j < n; j++) y[i + j] = t[j];                                                    \
    }

CK_MAP_HALF(erf, F(erf_h))

CK_MAP_HALF(exp, F(exp_h))
CK_MAP_HALF(tanh, F(tanh_h))

// ---------------------------------------------------------------------------------------------------------------
// Special functions in float (GELU's exact form)

K VF F(withsignf)(VF m, VF s) { return (VF)(((VI)m & 0x7FFFFFFF) | ((VI)s & (int32_t)0x80000000u)); }

/// erf in float32, ≤ 2.6 ulp (2.55 at 0.4516 over every 61st float of [−4.6, 4.6], where x·c₀ lies in the binade
/// above the result; scripts/reference/erf_float_coefficients.py fits and checks it): x·c₀ + (x·x²)·Σ_{n=1..6} cₙx²ⁿ⁻² (Taylor) for |x| < 0.5, degree-12 fits in
/// t = (|x| − c)/h on [0.5, 1.5) and [1.5, 4) (coefficients chosen per lane), ±1 from 4 on. NaN stays NaN.
K VF F(erf_f)(VF x) {
    const VF a = F(absf)(x), s = x * x;
    VF q = 0x1.f9a326p-14f;
    q = q * s + -0x1.c02db4p-11f;
    q = q * s + 0x1.565bcep-8f;
    q = q * s + -0x1.b82ce4p-6f;
    q = q * s + 0x1.ce2f22p-4f;
    q = q * s + -0x1.812746p-2f;
    const VF small = x * 0x1.20dd76p+0f + (x * s) * q;
    const VI upper = a >= 1.5f;
    const VF ac = a < 4.0f ? a : 4.0f;
    const VF t = upper ? ac * 0x1.99999ap-1f - 0x1.19999ap+1f : ac * 0x1.0p+1f - 0x1.0p+1f;
    VF p = (upper ? (VF)-0x1.03082p-14f : (VF)-0x1.7a09a2p-25f);
    p = p * t + (upper ? (VF)-0x1.3d5dcp-15f : (VF)0x1.9da40ap-25f);
    p = p * t + (upper ? (VF)0x1.27b156p-11f : (VF)0x1.3fb564p-20f);
    p = p * t + (upper ? (VF)-0x1.72727cp-11f : (VF)-0x1.ef353p-19f);
    p = p * t + (upper ? (VF)-0x1.26a58p-11f : (VF)-0x1.38fe48p-16f);
    p = p * t + (upper ? (VF)0x1.a14668p-9f : (VF)0x1.f09bbep-14f);
    p = p * t + (upper ? (VF)-0x1.9da9a4p-8f : (VF)0x1.2e43fep-14f);
    p = p * t + (upper ? (VF)0x1.129cc6p-7f : (VF)-0x1.1b6156p-9f);
    p = p * t + (upper ? (VF)-0x1.04b3b8p-7f : (VF)0x1.1b614cp-8f);
    p = p * t + (upper ? (VF)0x1.6191bp-8f : (VF)0x1.1b614cp-6f);
    p = p * t + (upper ? (VF)-0x1.4a2dbap-9f : (VF)-0x1.a911fp-4f);
    p = p * t + (upper ? (VF)0x1.8027a6p-11f : (VF)0x1.a911fp-3f);
    p = p * t + (upper ? (VF)0x1.fff2dp-1f : (VF)0x1.af767ap-1f);
    VF r = F(withsignf)(a < 0.5f ? small : p, x);   // erf(−0) = −0
    r = a >= 4.0f ? F(withsignf)((VF)1.0f, x) : r;
    return x != x ? x : r;
}

/// e^y in float32, ≲ 2 ulp for y in [−87, 88] (GELU calls it with −x²/2 ≤ 0): y = k·ln2 + r (Cody–Waite, ln2 =
/// 0.693359375 − 2.12194440e-4, k·0.693359375 exact for |k| ≤ 127), e^r by its Taylor series to degree 7 (|r| ≤ 0.347:
/// truncation < 2e-9), times 2^k from the exponent bits. 0 below −87 (e^y is then below the normal floats, which
/// FTZ flushes anyway); above 88 it stays e^88. NaN stays NaN.
K VF F(exp_f)(VF y) {
    VF yc = y < -87.0f ? -87.0f : y;
    yc = yc > 88.0f ? 88.0f : yc;
    const VF k = (yc * 0x1.715476p+0f + 0x1.8p23f) - 0x1.8p23f;
    const VF r = (yc - k * 0x1.63p-1f) + k * 0x1.bd0106p-13f;
    VF p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const VF scale = (VF)((__builtin_convertvector(k, VI) + 127) << 23);
    VF e = p * scale;
    e = y < -87.0f ? (VF)0.0f : e;
    return y != y ? y : e;
}


// ---------------------------------------------------------------------------------------------------------------
// GELU (the float operations of GELU.swift, in its order)

K void F(gelu_forward_block)(int approximate, const float *x, float *y, float k0, float k1, float inv_sqrt2) {
    const VH v = F(ldh)(x);
    if (!approximate) {
        F(sth)(y, 0.5f * v * (1.0f + F(erf_h)(v * inv_sqrt2)));
    } else {
        F(sth)(y, 0.5f * v * (1.0f + F(tanh_h)(k0 * (v + k1 * v * v * v))));
    }
}

K void F(gelu_backward_block)(int approximate, const float *x, const float *dy, float *dx, float k0, float k1,
                              float inv_sqrt2, float inv_sqrt2pi) {
    const VH v = F(ldh)(x), g = F(ldh)(dy);
    if (!approximate) {
        const VH cdf = 0.5f * (1.0f + F(erf_h)(v * inv_sqrt2));
        const VH pdf = inv_sqrt2pi * F(exp_h)(-0.5f * v * v);
        F(sth)(dx, g * (cdf + v * pdf));
    } else {
        const VH t = F(tanh_h)(k0 * (v + k1 * v * v * v));
        const float k3 = 3.0f * k1;
        F(sth)(dx, g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * k0 * (1.0f + k3 * v * v)));
    }
}

static CK_TARGET void F(erf_float)(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) F(stf)(y + i, F(erf_f)(F(ldf)(x + i)));
    if (i == n) return;
    float t[CK_W] = {0};
    for (size_t j = 0; i + j < n; j++) t[j] = x[i + j];
    F(stf)(t, F(erf_f)(F(ldf)(t)));
    for (size_t j = 0; i + j < n; j++) y[i + j] = t[j];
}

// The exact form in float32 (erf_f, exp_f), a whole register at a time.
K void F(gelu_forward_exact_block)(const float *x, float *y, float inv_sqrt2) {
    const VF v = F(ldf)(x);
    F(stf)(y, 0.5f * v * (1.0f + F(erf_f)(v * inv_sqrt2)));
}

K void F(gelu_backward_exact_block)(const float *x, const float *dy, float *dx, float inv_sqrt2, float inv_sqrt2pi) {
    const VF v = F(ldf)(x), g = F(ldf)(dy);
    const VF cdf = 0.5f * (1.0f + F(erf_f)(v * inv_sqrt2));
    const VF pdf = inv_sqrt2pi * F(exp_f)(-0.5f * v * v);
    F(stf)(dx, g * (cdf + v * pdf));
}

static CK_TARGET void F(gelu_forward)(int approximate, const float *x, float *y, size_t n, float k0, float k1,
                                      float inv_sqrt2) {
    size_t i = 0;
    if (!approximate) {
        for (; i + CK_W <= n; i += CK_W) F(gelu_forward_exact_block)(x + i, y + i, inv_sqrt2);
        if (i == n) return;
        float tx[CK_W] = {0}, ty[CK_W];
        for (size_t j = 0; i + j < n; j++) tx[j] = x[i + j];
        F(gelu_forward_exact_block)(tx, ty, inv_sqrt2);
        for (size_t j = 0; i + j < n; j++) y[i + j] = ty[j];
        return;
    }
    for (; i + H <= n; i += H) F(gelu_forward_block)(approximate, x + i, y + i, k0, k1, inv_sqrt2);
    if (i == n) return;
    float tx[H] = {0}, ty[H];
    for (size_t j = 0; i + j < n; j++) tx[j] = x[i + j];
    F(gelu_forward_block)(approximate, tx, ty, k0, k1, inv_sqrt2);
    for (size_t j = 0; i + j < n; j++) y[i + j] = ty[j];
}

static CK_TARGET void F(gelu_backward)(int approximate, const float *x, const float *dy, float *dx, size_t n,
                                       float k0, float k1, float inv_sqrt2, float inv_sqrt2pi) {
    size_t i = 0;
    if (!approximate) {
        for (; i + CK_W <= n; i += CK_W) F(gelu_backward_exact_block)(x + i, dy + i, dx + i, inv_sqrt2, inv_sqrt2pi);
        if (i == n) return;
        float tx[CK_W] = {0}, tg[CK_W] = {0}, td[CK_W];
        for (size_t j = 0; i + j < n; j++) { tx[j] = x[i + j]; tg[j] = dy[i + j]; }
        F(gelu_backward_exact_block)(tx, tg, td, inv_sqrt2, inv_sqrt2pi);
        for (size_t j = 0; i + j < n; j++) dx[i + j] = td[j];
        return;
    }
    for (; i + H <= n; i += H) F(gelu_backward_block)(approximate, x + i, dy + i, dx + i, k0, k1, inv_sqrt2, inv_sqrt2pi);
    if (i == n) return;
    float tx[H] = {0}, tg[H] = {0}, td[H];
    for (size_t j = 0; i + j < n; j++) { tx[j] = x[i + j]; tg[j] = dy[i + j]; }
    F(gelu_backward_block)(approximate, tx, tg, td, k0, k1, inv_sqrt2, inv_sqrt2pi);
    for (size_t j = 0; i + j < n; j++) dx[i + j] = td[j];
}

// ---------------------------------------------------------------------------------------------------------------
// Softmax and cross-entropy rows (blocks of 16 into the 16 partial sums; a tail block masks its extra lanes)

static CK_TARGET double F(sum_exp_shifted)(const float *z, size_t k, float m) {
    VD acc[NACC];
    for (int j = 0; j < NACC; j++) acc[j] = 0.0;
    for (size_t i = 0; i < k; i += 16) {
        const size_t rest = k - i < 16 ? k - i : 16;
        float t[16] = {0};
        const float *src = z + i;
        if (rest < 16) { for (size_t q = 0; q < rest; q++) t[q] = z[i + q]; src = t; }
        for (int j = 0; j < NACC; j++) {
            const VD e = F(exp_d)(F(widen)(F(ldh)(src + j * H) - m));
            acc[j] = acc[j] + (rest < 16 ? (F(lanes_below)(j * H, rest) ? e : 0.0) : e);
        }
    }
    double part[16];
    __builtin_memcpy(part, acc, sizeof part);
    return ck_combine16(part);
}

static CK_TARGET double F(softmax_from_log_sum)(const float *z, size_t k, double log_sum, float *p) {
    VD acc[NACC];
    for (int j = 0; j < NACC; j++) acc[j] = 0.0;
    for (size_t i = 0; i < k; i += 16) {
        const size_t rest = k - i < 16 ? k - i : 16;
        float t[16] = {0}, out[16];
        const float *src = z + i;
        float *dst = p + i;
        if (rest < 16) { for (size_t q = 0; q < rest; q++) t[q] = z[i + q]; src = t; dst = out; }
        for (int j = 0; j < NACC; j++) {
            const VD logp = F(widen)(F(ldh)(src + j * H)) - log_sum;
            F(sth)(dst + j * H, F(narrow)(F(exp_d)(logp)));
            acc[j] = acc[j] + (rest < 16 ? (F(lanes_below)(j * H, rest) ? logp : 0.0) : logp);
        }
        if (rest < 16) for (size_t q = 0; q < rest; q++) p[i + q] = out[q];
    }
    double part[16];
    __builtin_memcpy(part, acc, sizeof part);
    return ck_combine16(part);
}

static CK_TARGET void F(cross_entropy_backward)(const float *p, float *d, size_t rows, size_t k,
                                                const int32_t *labels, float on, float off, float scale) {
    for (size_t r = 0; r < rows; r++) {
        const float *pr = p + r * k;
        float *dr = d + r * k;
        size_t j = 0;
        for (; j + CK_W <= k; j += CK_W) F(stf)(dr + j, (F(ldf)(pr + j) - off) * scale);
        for (; j < k; j++) dr[j] = (pr[j] - off) * scale;
        const size_t y = (size_t)labels[r];
        dr[y] = (pr[y] - on) * scale;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// LayerNorm rows (the operations of LayerNorm.swift; its sums in the 16 partial sums)

static CK_TARGET void F(layer_norm_forward)(const float *x, float *y, size_t rows, size_t d, const float *w,
                                            const float *b, float eps, float *mean, float *rstd) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        const double mu = F(sum_plain)(xr, d) / (double)d;
        VD acc[NACC];
        for (int j = 0; j < NACC; j++) acc[j] = 0.0;
        size_t i = 0;
        for (; i + 16 <= d; i += 16) {
            for (int j = 0; j < NACC; j++) {
                const VD c = F(widen)(F(ldh)(xr + i + j * H)) - mu;
                acc[j] = acc[j] + c * c;
            }
        }
        double part[16];
        __builtin_memcpy(part, acc, sizeof part);
        for (size_t q = 0; i < d; i++, q++) { const double c = (double)xr[i] - mu; part[q] = part[q] + c * c; }
        const double var = ck_combine16(part);
        const float inv = (float)(1.0 / __builtin_sqrt(var / (double)d + (double)eps));
        const float m = (float)mu;
        mean[r] = m; rstd[r] = inv;
        size_t j = 0;
        for (; j + CK_W <= d; j += CK_W) F(stf)(yr + j, (F(ldf)(xr + j) - m) * inv * F(ldf)(w + j) + F(ldf)(b + j));
        for (; j < d; j++) yr[j] = (xr[j] - m) * inv * w[j] + b[j];
    }
}

static CK_TARGET void F(layer_norm_backward)(const float *x, const float *dy, size_t rows, size_t d, const float *w,
                                             const float *mean, const float *rstd, float *gw, float *gb, float *dx) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *gr = dy + r * d;
        const float m = mean[r], inv = rstd[r];
        if (gw) {
            size_t j = 0;
            for (; j + CK_W <= d; j += CK_W) {
                const VF g = F(ldf)(gr + j);
                F(stf)(gw + j, F(ldf)(gw + j) + g * (F(ldf)(xr + j) - m) * inv);
                F(stf)(gb + j, F(ldf)(gb + j) + g);
            }
            for (; j < d; j++) { gw[j] += gr[j] * (xr[j] - m) * inv; gb[j] += gr[j]; }
        }
        if (!dx) continue;
        VD sg[NACC], sgx[NACC];
        for (int j = 0; j < NACC; j++) { sg[j] = 0.0; sgx[j] = 0.0; }
        size_t i = 0;
        for (; i + 16 <= d; i += 16) {
            for (int j = 0; j < NACC; j++) {
                const size_t o = i + j * H;
                const VD gh = F(widen)(F(ldh)(gr + o) * F(ldh)(w + o));
                const VD xh = F(widen)((F(ldh)(xr + o) - m) * inv);
                sg[j] = sg[j] + gh;
                sgx[j] = sgx[j] + gh * xh;
            }
        }
        double pg[16], pgx[16];
        __builtin_memcpy(pg, sg, sizeof pg);
        __builtin_memcpy(pgx, sgx, sizeof pgx);
        for (size_t q = 0; i < d; i++, q++) {
            const double gh = (double)(gr[i] * w[i]), xh = (double)((xr[i] - m) * inv);
            pg[q] = pg[q] + gh;
            pgx[q] = pgx[q] + gh * xh;
        }
        const float mean_g = (float)(ck_combine16(pg) / (double)d);
        const float mean_gx = (float)(ck_combine16(pgx) / (double)d);
        float *out = dx + r * d;
        size_t j = 0;
        for (; j + CK_W <= d; j += CK_W) {
            const VF xh = (F(ldf)(xr + j) - m) * inv;
            F(stf)(out + j, inv * (F(ldf)(gr + j) * F(ldf)(w + j) - mean_g - xh * mean_gx));
        }
        for (; j < d; j++) {
            const float xh = (xr[j] - m) * inv;
            out[j] = inv * (gr[j] * w[j] - mean_g - xh * mean_gx);
        }
    }
}

/// Per row of [rows, k]: d ← p ⊙ (d − Σ_j p_j·d_j), the softmax backward (the dot in double, 16 partial sums).
static CK_TARGET void F(softmax_backward)(const float *p, float *d, size_t rows, size_t k) {
    for (size_t r = 0; r < rows; r++) {
        const float *pr = p + r * k;
        float *dr = d + r * k;
        VD acc[NACC];
        for (int j = 0; j < NACC; j++) acc[j] = 0.0;
        size_t i = 0;
        for (; i + 16 <= k; i += 16)
            for (int j = 0; j < NACC; j++) {
                const size_t o = i + j * H;
                acc[j] = acc[j] + F(widen)(F(ldh)(pr + o)) * F(widen)(F(ldh)(dr + o));
            }
        double part[16];
        __builtin_memcpy(part, acc, sizeof part);
        for (size_t q = 0; i < k; i++, q++) part[q] = part[q] + (double)pr[i] * (double)dr[i];
        const float dot = (float)ck_combine16(part);
        size_t j = 0;
        for (; j + CK_W <= k; j += CK_W) F(stf)(dr + j, F(ldf)(pr + j) * (F(ldf)(dr + j) - dot));
        for (; j < k; j++) dr[j] = pr[j] * (dr[j] - dot);
    }
}

/// im2col of one [c, h, w] plane stack for a k×k kernel of stride s (no padding): cols[(ch·k + u)·k + v][i·ow + j]
/// = x[ch][s·i + u][s·j + v].
static CK_TARGET void F(conv_unfold)(const float *restrict x, float *restrict cols, size_t channels, size_t height,
                                     size_t width, size_t k, size_t s, size_t oh, size_t ow) {
    float *row = cols;
    for (size_t ch = 0; ch < channels; ch++) {
        const float *plane = x + ch * height * width;
        for (size_t u = 0; u < k; u++)
            for (size_t v = 0; v < k; v++) {
                for (size_t i = 0; i < oh; i++) {
                    const float *restrict src = plane + (s * i + u) * width + v;
                    float *restrict dst = row + i * ow;
                    if (s == 1) for (size_t j = 0; j < ow; j++) dst[j] = src[j];
                    else if (s == 2) for (size_t j = 0; j < ow; j++) dst[j] = src[2 * j];
                    else for (size_t j = 0; j < ow; j++) dst[j] = src[s * j];
                }
                row += oh * ow;
            }
    }
}

/// dst[i] = ((src[0][i] + src[1][i]) + src[2][i]) + … in that order (the shared-memory gradient sum); dst may be
/// one of the sources (each element is read before it is written).
static CK_TARGET void F(sum_sources)(const float *const *src, size_t sources, float *dst, size_t n) {
    size_t i = 0;
    for (; i + CK_W <= n; i += CK_W) {
        VF acc = F(ldf)(src[0] + i);
        for (size_t k = 1; k < sources; k++) acc = acc + F(ldf)(src[k] + i);
        F(stf)(dst + i, acc);
    }
    for (; i < n; i++) {
        float acc = src[0][i];
        for (size_t k = 1; k < sources; k++) acc = acc + src[k][i];
        dst[i] = acc;
    }
}

/// One channel plane of col2im: plane[s·i + u][s·j + v] += the k·k rows of `row` (each oh·ow long). For the usual
/// k = 3, s = 2 the three kernel columns v of a row are added in one interleaved pass (even outputs get v = 0 and the
/// previous v = 2, odd ones v = 1), which vectorises; other shapes add one v at a time.
K void F(fold_plane)(const float *restrict row, float *restrict plane, size_t width, size_t k, size_t s, size_t oh,
                     size_t ow) {
    const size_t n = oh * ow;
    for (size_t u = 0; u < k; u++) {
        if (k == 3 && s == 2 && ow >= 1) {
            const float *c0 = row, *c1 = row + n, *c2 = row + 2 * n;
            for (size_t i = 0; i < oh; i++) {
                float *restrict dst = plane + (2 * i + u) * width;
                const float *restrict r0 = c0 + i * ow, *restrict r1 = c1 + i * ow, *restrict r2 = c2 + i * ow;
                dst[0] += r0[0];
                dst[1] += r1[0];
                for (size_t j = 1; j < ow; j++) {
                    dst[2 * j] += r0[j] + r2[j - 1];
                    dst[2 * j + 1] += r1[j];
                }
                dst[2 * ow] += r2[ow - 1];
            }
            row += 3 * n;
            continue;
        }
        for (size_t v = 0; v < k; v++) {
            for (size_t i = 0; i < oh; i++) {
                float *restrict dst = plane + (s * i + u) * width + v;
                const float *restrict src = row + i * ow;
                for (size_t j = 0; j < ow; j++) dst[s * j] += src[j];
            }
            row += n;
        }
    }
}

/// col2im, the adjoint of conv_unfold: dx[ch][s·i + u][s·j + v] += cols[(ch·k + u)·k + v][i·ow + j], one channel
/// plane at a time while it is in cache: with `overwrite` the plane is zeroed first (dx = the fold, no memset of the
/// whole tensor before it), and with `relu_mask` (shaped as dx: the output y of the ReLU whose input gradient dx is)
/// each element then becomes 0 where y ≤ 0, as torch's threshold_backward (a NaN y keeps the gradient).
static CK_TARGET void F(conv_fold)(const float *restrict cols, float *restrict dx, size_t channels, size_t height,
                                   size_t width, size_t k, size_t s, size_t oh, size_t ow, int overwrite,
                                   const float *restrict relu_mask) {
    const size_t area = height * width;
    for (size_t ch = 0; ch < channels; ch++) {
        float *plane = dx + ch * area;
        if (overwrite) {
            size_t e = 0;
            for (; e + CK_W <= area; e += CK_W) F(stf)(plane + e, (VF)0.0f);
            for (; e < area; e++) plane[e] = 0.0f;
        }
        F(fold_plane)(cols + ch * k * k * oh * ow, plane, width, k, s, oh, ow);
        if (relu_mask) {
            const float *mask = relu_mask + ch * area;
            size_t e = 0;
            for (; e + CK_W <= area; e += CK_W) {
                const VI off = F(ldf)(mask + e) <= 0.0f;   // all ones where y ≤ 0
                F(stf)(plane + e, (VF)((VI)F(ldf)(plane + e) & ~off));
            }
            for (; e < area; e++) plane[e] = mask[e] <= 0.0f ? 0.0f : plane[e];
        }
    }
}

#undef CK_JOIN2
#undef CK_JOIN
#undef F
#undef K
#undef H
#undef NACC
#undef VF
#undef VH
#undef VD
#undef VI
#undef VL
#undef CK_SUM16
#undef CK_MAP_HALF
