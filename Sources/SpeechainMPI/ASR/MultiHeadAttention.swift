import CKernels
import Foundation

/// SpeeChain's `transformer.attention.MultiHeadedAttention`: for each head h of size d_h = d_model/H,
///
///     Q = q_layer(query), K = k_layer(kv), V = v_layer(kv)                      (Linear with bias, [N, d_model])
///     S_h = s · Q_h·K_hᵀ,  s = 1/√d_model (SpeeChain's default; 1/√d_h with scale_dp_by_head)
///     P_h = softmax(S_h) over the keys not masked (padded keys, and with `causal` keys after the query)
///     C_h = dropout(P_h)·V_h,  output = output_layer([C_1 … C_H])
///
/// backward, per head: dV = P′ᵀ·dC, dP′ = dC·Vᵀ, dP = dropout mask ⊙ dP′, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
/// dQ = s·dS·K, dK = s·dSᵀ·Q. All products go through sgemm on strided head views ([B, T, H, d_h] row-major,
/// leading dimension d_model), so no head is copied out.
///
/// Under autocast p (docs/amp-arasr.md): Q, K, V, C and the output are p-valued; S = p(p(Q_h·K_hᵀ)·s) (matmul, then
/// the scaling, each rounded), the softmax and the attention dropout run in float32, C_h = p(p(P′)·V_h). Backward:
/// dV = p(p(P′)ᵀ·dC), dP′ = p(dC·Vᵀ), the softmax backward in float32 then p(dS), dS₀ = p(s·dS),
/// dQ = p(dS₀·K), dK = p(dS₀ᵀ·Q); the Linears round their own input gradients.
public final class MultiHeadAttention {
    public let dModel: Int
    public let heads: Int
    public let headSize: Int
    public let scale: Float
    public let dropoutP: Float
    let qLayer: Linear, kLayer: Linear, vLayer: Linear, outLayer: Linear
    private let q = FloatBuffer(count: 0), k = FloatBuffer(count: 0), v = FloatBuffer(count: 0)
    private let probs = FloatBuffer(count: 0)       // P, [B, H, Tq, Tk]
    private let dropped = FloatBuffer(count: 0)     // P′ = P ⊙ mask/(1 − p), when dropout is active
    private let keepMask = FloatBuffer(count: 0)
    private let ctx = FloatBuffer(count: 0)
    let output = FloatBuffer(count: 0)
    private let dctx = FloatBuffer(count: 0), dq = FloatBuffer(count: 0), dk = FloatBuffer(count: 0), dv = FloatBuffer(count: 0)
    private let dscores = FloatBuffer(count: 0), scratch = FloatBuffer(count: 0)
    private let castWeights = FloatBuffer(count: 0) // p(P′) under autocast
    private var batch = 0, tq = 0, tk = 0, dropoutActive = false
    private var precision: ReducedPrecision?
    private var query: UnsafePointer<Float>?, keyValue: UnsafePointer<Float>?

    public init(dModel: Int, heads: Int, dropout: Float, scaleByHead: Bool = false) throws {
        guard heads >= 1, dModel % heads == 0 else {
            throw ConfigError.invalidValue(context: "attention", key: "num_heads", reason: "d_model \(dModel) is not divisible by num_heads \(heads)")
        }
        self.dModel = dModel; self.heads = heads; headSize = dModel / heads
        scale = 1 / Float(scaleByHead ? headSize : dModel).squareRoot()
        dropoutP = dropout
        qLayer = Linear(dModel, dModel); kLayer = Linear(dModel, dModel)
        vLayer = Linear(dModel, dModel); outLayer = Linear(dModel, dModel)
    }

    /// SpeeChain's attribute order: k_layer, v_layer, q_layer, output_layer.
    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        kLayer.declareParameters(in: store, prefix: prefix + "k_layer.", module: module)
        vLayer.declareParameters(in: store, prefix: prefix + "v_layer.", module: module)
        qLayer.declareParameters(in: store, prefix: prefix + "q_layer.", module: module)
        outLayer.declareParameters(in: store, prefix: prefix + "output_layer.", module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        for l in [kLayer, vLayer, qLayer, outLayer] { l.initialize(in: store, rng: &rng) }
    }

    /// query [B, Tq, d], keyValue [B, Tk, d] → `output` [B, Tq, d]. Keys at or past keyLengths[b] are masked.
    public func forward(query: UnsafePointer<Float>, keyValue: UnsafePointer<Float>, batch: Int, queryFrames: Int,
                        keyFrames: Int, keyLengths: [Int], causal: Bool, context: ForwardContext) {
        self.batch = batch; tq = queryFrames; tk = keyFrames
        self.query = query; self.keyValue = keyValue
        precision = context.amp
        let amp = context.amp
        let nq = batch * tq, nk = batch * tk, d = dModel
        q.resize(to: nq * d); k.resize(to: nk * d); v.resize(to: nk * d); ctx.resize(to: nq * d); output.resize(to: nq * d)
        qLayer.forward(Matrix(UnsafeMutablePointer(mutating: query), rows: nq, cols: d), Matrix(q.pointer, rows: nq, cols: d), context: context)
        kLayer.forward(Matrix(UnsafeMutablePointer(mutating: keyValue), rows: nk, cols: d), Matrix(k.pointer, rows: nk, cols: d), context: context)
        vLayer.forward(Matrix(UnsafeMutablePointer(mutating: keyValue), rows: nk, cols: d), Matrix(v.pointer, rows: nk, cols: d), context: context)
        if let amp { amp.round(q.pointer, count: nq * d); amp.round(k.pointer, count: nk * d); amp.round(v.pointer, count: nk * d) }
        let plane = tq * tk
        probs.resize(to: batch * heads * plane)
        if amp != nil { castWeights.resize(to: probs.count) }
        dropoutActive = context.training && dropoutP > 0
        if dropoutActive { dropped.resize(to: probs.count); keepMask.resize(to: probs.count) }
        for b in 0..<batch {
            let valid = keyLengths[b]
            for h in 0..<heads {
                let p = probs.pointer + (b * heads + h) * plane
                BLAS.sgemm(transposeA: false, transposeB: true, m: tq, n: tk, k: headSize, alpha: amp == nil ? scale : 1,
                           a: q.pointer + b * tq * d + h * headSize, lda: d, b: k.pointer + b * tk * d + h * headSize, ldb: d,
                           beta: 0, c: p, ldc: tk)
                if let amp {   // the matmul's output, then the scaling (an op of its own), each in p
                    amp.round(p, count: plane); Kernels.scale(p, count: plane, by: scale); amp.round(p, count: plane)
                }
                for i in 0..<tq {
                    Self.maskedSoftmax(p + i * tk, count: tk, valid: causal ? min(valid, i + 1) : valid)
                }
                var weights = UnsafePointer(p)
                if dropoutActive {
                    let m = keepMask.pointer + (b * heads + h) * plane, o = dropped.pointer + (b * heads + h) * plane
                    let keep = 1 / (1 - dropoutP)
                    for j in 0..<plane { m[j] = context.rng.nextUnitFloat() < dropoutP ? 0 : keep }
                    Kernels.multiply(p, m, into: o, count: plane)
                    weights = UnsafePointer(o)
                }
                if let amp {   // the matmul casts the float32 probabilities to p
                    let c = castWeights.pointer + (b * heads + h) * plane
                    amp.round(weights, into: c, count: plane)
                    weights = UnsafePointer(c)
                }
                BLAS.sgemm(transposeA: false, transposeB: false, m: tq, n: headSize, k: tk,
                           a: weights, lda: tk, b: v.pointer + b * tk * d + h * headSize, ldb: d,
                           beta: 0, c: ctx.pointer + b * tq * d + h * headSize, ldc: d)
            }
        }
        amp?.round(ctx.pointer, count: nq * d)
        outLayer.forward(Matrix(ctx.pointer, rows: nq, cols: d), Matrix(output.pointer, rows: nq, cols: d), context: context)
        amp?.round(output.pointer, count: nq * d)
    }

    /// Softmax of x[0..<valid] in place, zeros after (torch's −inf mask); valid ≥ 1. The vector kernels of the
    /// cross-entropy: p = float(exp(double(x) − log Σ exp(double(x − m)))).
    @inline(__always) static func maskedSoftmax(_ x: UnsafeMutablePointer<Float>, count: Int, valid: Int) {
        var m = -Float.infinity
        for j in 0..<valid where x[j] > m { m = x[j] }
        let path = VectorPath.current.ck
        let logSum = Double(m) + Foundation.log(ck_sum_exp_shifted(path, x, valid, m))
        _ = ck_softmax_from_log_sum(path, x, valid, logSum, x)
        if valid < count { Kernels.fill(x + valid, count: count - valid, value: 0) }
    }

    /// dOutput [B, Tq, d] → dQuery (overwritten) and dKeyValue (added into), parameter gradients when `accumulate`.
    /// For self-attention pass the same buffer for both. Under autocast dOutput must be p-valued (the gradient of a
    /// p tensor); dQuery and the added terms of dKeyValue are then p-valued too.
    public func backward(dOutput: UnsafePointer<Float>, dQuery: UnsafeMutablePointer<Float>,
                         dKeyValue: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let nq = batch * tq, nk = batch * tk, d = dModel, plane = tq * tk
        let amp = precision
        dctx.resize(to: nq * d); dq.resize(to: nq * d); dk.resize(to: nk * d); dv.resize(to: nk * d)
        dscores.resize(to: plane); scratch.resize(to: nk * d)
        outLayer.backward(x: Matrix(ctx.pointer, rows: nq, cols: d), y: Matrix(output.pointer, rows: nq, cols: d),
                          dy: Matrix(UnsafeMutablePointer(mutating: dOutput), rows: nq, cols: d), dx: Matrix(dctx.pointer, rows: nq, cols: d),
                          accumulate: accumulate)
        for b in 0..<batch {
            for h in 0..<heads {
                let off = (b * heads + h) * plane
                let p = probs.pointer + off
                let weights = amp != nil ? UnsafePointer(castWeights.pointer + off)
                    : dropoutActive ? UnsafePointer(dropped.pointer + off) : UnsafePointer(p)
                let dcb = dctx.pointer + b * tq * d + h * headSize
                let vb = v.pointer + b * tk * d + h * headSize
                BLAS.sgemm(transposeA: true, transposeB: false, m: tk, n: headSize, k: tq,
                           a: weights, lda: tk, b: dcb, ldb: d, beta: 0, c: dv.pointer + b * tk * d + h * headSize, ldc: d)
                let ds = dscores.pointer
                BLAS.sgemm(transposeA: false, transposeB: true, m: tq, n: tk, k: headSize,
                           a: dcb, lda: d, b: vb, ldb: d, beta: 0, c: ds, ldc: tk)
                amp?.round(ds, count: plane)
                if dropoutActive { Kernels.multiply(ds, keepMask.pointer + off, into: ds, count: plane) }
                ck_softmax_backward(VectorPath.current.ck, p, ds, tq, tk)
                if let amp {   // dS of the upcast P scores, then through the scaling, each in p
                    amp.round(ds, count: plane); Kernels.scale(ds, count: plane, by: scale); amp.round(ds, count: plane)
                }
                let alpha: Float = amp == nil ? scale : 1
                BLAS.sgemm(transposeA: false, transposeB: false, m: tq, n: headSize, k: tk, alpha: alpha,
                           a: ds, lda: tk, b: k.pointer + b * tk * d + h * headSize, ldb: d,
                           beta: 0, c: dq.pointer + b * tq * d + h * headSize, ldc: d)
                BLAS.sgemm(transposeA: true, transposeB: false, m: tk, n: headSize, k: tq, alpha: alpha,
                           a: ds, lda: tk, b: q.pointer + b * tq * d + h * headSize, ldb: d,
                           beta: 0, c: dk.pointer + b * tk * d + h * headSize, ldc: d)
            }
        }
        if let amp { amp.round(dv.pointer, count: nk * d); amp.round(dq.pointer, count: nq * d); amp.round(dk.pointer, count: nk * d) }
        let xq = Matrix(UnsafeMutablePointer(mutating: query!), rows: nq, cols: d)
        let xkv = Matrix(UnsafeMutablePointer(mutating: keyValue!), rows: nk, cols: d)
        // dKeyValue may be dQuery (self-attention): write the query path first, then add the key and value paths.
        qLayer.backward(x: xq, y: Matrix(q.pointer, rows: nq, cols: d), dy: Matrix(dq.pointer, rows: nq, cols: d),
                        dx: Matrix(dQuery, rows: nq, cols: d), accumulate: accumulate)
        kLayer.backward(x: xkv, y: Matrix(k.pointer, rows: nk, cols: d), dy: Matrix(dk.pointer, rows: nk, cols: d),
                        dx: Matrix(scratch.pointer, rows: nk, cols: d), accumulate: accumulate)
        Kernels.add(scratch.pointer, into: dKeyValue, count: nk * d)
        vLayer.backward(x: xkv, y: Matrix(v.pointer, rows: nk, cols: d), dy: Matrix(dv.pointer, rows: nk, cols: d),
                        dx: Matrix(scratch.pointer, rows: nk, cols: d), accumulate: accumulate)
        Kernels.add(scratch.pointer, into: dKeyValue, count: nk * d)
    }
}
