#include "CKernels.h"

// Every operation rounds separately, as torch's CPU kernels and the Swift code do: no fused multiply-adds.
#pragma clang fp contract(off)

// Four lanes: the baseline x86-64 (SSE) register, so that these helpers pass vectors without an ABI that needs AVX.
typedef float v4 __attribute__((ext_vector_type(4)));

static inline v4 load4(const float *p) { v4 x; __builtin_memcpy(&x, p, sizeof x); return x; }
static inline void store4(float *p, v4 x) { __builtin_memcpy(p, &x, sizeof x); }

/// torch's lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w).
static inline v4 lerp4(v4 start, v4 end, float w) {
    return w < 0.5f ? start + w * (end - start) : end - (end - start) * (1.0f - w);
}

/// The update of four elements; the tail goes through the same code on a padded copy.
static inline void adam4(float *p, const float *g, float *m, float *v, float *vmax, float sign, float wd,
                         int decoupled, float decay, float w1, float beta2, float w2, float bias2_sqrt, float eps,
                         float step_size) {
    v4 pv = load4(p), gv = sign * load4(g), mv = load4(m), vv = load4(v);
    if (wd != 0.0f) {
        if (decoupled) pv = pv * decay; else gv = gv + wd * pv;
    }
    mv = lerp4(mv, gv, w1);
    vv = vv * beta2 + w2 * gv * gv;
    v4 denom;
    if (vmax) {
        v4 mx = load4(vmax);
        mx = __builtin_elementwise_max(mx, vv);
        store4(vmax, mx);
        denom = __builtin_elementwise_sqrt(mx) / bias2_sqrt + eps;
    } else {
        denom = __builtin_elementwise_sqrt(vv) / bias2_sqrt + eps;
    }
    pv = pv + ((-step_size) * mv) / denom;
    store4(p, pv); store4(m, mv); store4(v, vv);
}

void ck_adam_update(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                    float *restrict vmax, size_t n, float sign, float weight_decay, int decoupled, float decay,
                    float w1, float beta2, float w2, float bias2_sqrt, float eps, float step_size) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        adam4(p + i, g + i, m + i, v + i, vmax ? vmax + i : 0, sign, weight_decay, decoupled, decay, w1, beta2, w2,
              bias2_sqrt, eps, step_size);
    }
    size_t rest = n - i;
    if (rest == 0) return;
    float tp[4] = {0}, tg[4] = {0}, tm[4] = {0}, tv[4] = {0}, tx[4] = {0};
    for (size_t j = 0; j < rest; j++) {
        tp[j] = p[i + j]; tg[j] = g[i + j]; tm[j] = m[i + j]; tv[j] = v[i + j];
        if (vmax) tx[j] = vmax[i + j];
    }
    adam4(tp, tg, tm, tv, vmax ? tx : 0, sign, weight_decay, decoupled, decay, w1, beta2, w2, bias2_sqrt, eps, step_size);
    for (size_t j = 0; j < rest; j++) {
        p[i + j] = tp[j]; m[i + j] = tm[j]; v[i + j] = tv[j];
        if (vmax) vmax[i + j] = tx[j];
    }
}
