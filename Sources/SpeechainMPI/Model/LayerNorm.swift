import CKernels

/// torch.nn.LayerNorm over the last dimension with affine weight and bias:
/// x̂ = (x − μ)/√(σ² + ε) (biased variance), y = x̂·w + b;
/// dx = (1/σ̂)·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = dy·w.
public final class LayerNorm: Layer {
    public let features: Int
    public let eps: Float
    private var store: ParameterStore!   // strong: a layer keeps the buffers it reads and writes alive
    private var weightOffset = 0
    private var biasOffset = 0
    private var rstd = FloatBuffer(count: 0)   // 1/σ̂ per row, from the last forward
    private var mean = FloatBuffer(count: 0)

    public init(_ features: Int, eps: Float = 1e-5) { self.features = features; self.eps = eps }

    public var description: String { "LayerNorm((\(features),), eps=\(eps), elementwise_affine=True)" }
    public func outputWidth(forInput width: Int) -> Int { width }
    /// layer_norm is on autocast's float32 list: statistics and output in float32 whatever the input's dtype.
    public func outputPrecision(input: ReducedPrecision?, autocast: ReducedPrecision) -> ReducedPrecision? { nil }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        self.store = store
        weightOffset = store.declare(prefix + "weight", shape: [features], module: module)
        biasOffset = store.declare(prefix + "bias", shape: [features], module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        Kernels.fill(store.values.pointer + weightOffset, count: features, value: 1)
        Kernels.fill(store.values.pointer + biasOffset, count: features, value: 0)
    }

    // Both run in C (CKernels ck_layer_norm_forward/backward) on the CPU's vector path, per row: μ = Σx/d and
    // σ² = Σ(x − μ)²/d in double, rstd = float(1/√(σ² + ε)), y = ((x − μ)·rstd)·w + b in float32; backward
    // gw += (dy·(x − μ))·rstd, gb += dy, and with ĝ = double(dy·w), x̂ = double((x − μ)·rstd) summed in double,
    // dx = rstd·((dy·w − mean ĝ) − x̂·mean(ĝx̂)).

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        rstd.resize(to: x.rows); mean.resize(to: x.rows)
        let w = store.values.pointer + weightOffset, b = store.values.pointer + biasOffset
        ck_layer_norm_forward(VectorPath.current.ck, x.data, y.data, x.rows, features, w, b, eps, mean.pointer, rstd.pointer)
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        let w = store.values.pointer + weightOffset
        let gw = store.gradients.pointer + weightOffset, gb = store.gradients.pointer + biasOffset
        ck_layer_norm_backward(VectorPath.current.ck, x.data, dy.data, x.rows, features, w, mean.pointer, rstd.pointer,
                               accumulate ? gw : nil, accumulate ? gb : nil, dx?.data)
    }
}
