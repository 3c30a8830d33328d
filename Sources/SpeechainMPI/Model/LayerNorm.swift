/// torch.nn.LayerNorm over the last dimension with affine weight and bias:
/// x̂ = (x − μ)/√(σ² + ε) (biased variance), y = x̂·w + b;
/// dx = (1/σ̂)·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = dy·w.
public final class LayerNorm: Layer {
    public let features: Int
    public let eps: Float
    private unowned(unsafe) var store: ParameterStore!
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

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        rstd.resize(to: x.rows); mean.resize(to: x.rows)
        let w = store.values.pointer + weightOffset, b = store.values.pointer + biasOffset
        let d = features
        for r in 0..<x.rows {
            let xr = x.data + r * d, yr = y.data + r * d
            var s = 0.0
            for j in 0..<d { s += Double(xr[j]) }
            let mu = s / Double(d)
            var v = 0.0
            for j in 0..<d { let c = Double(xr[j]) - mu; v += c * c }
            let inv = Float(1 / (v / Double(d) + Double(eps)).squareRoot())
            let m = Float(mu)
            mean[r] = m; rstd[r] = inv
            for j in 0..<d { yr[j] = (xr[j] - m) * inv * w[j] + b[j] }
        }
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        let w = store.values.pointer + weightOffset
        let gw = store.gradients.pointer + weightOffset, gb = store.gradients.pointer + biasOffset
        let d = features
        for r in 0..<x.rows {
            let xr = x.data + r * d, gr = dy.data + r * d
            let m = mean[r], inv = rstd[r]
            if accumulate {
                for j in 0..<d { gw[j] += gr[j] * (xr[j] - m) * inv; gb[j] += gr[j] }
            }
            guard let dx else { continue }
            var sumG = 0.0, sumGX = 0.0
            for j in 0..<d {
                let gh = Double(gr[j] * w[j]), xh = Double((xr[j] - m) * inv)
                sumG += gh; sumGX += gh * xh
            }
            let meanG = Float(sumG / Double(d)), meanGX = Float(sumGX / Double(d))
            let out = dx.data + r * d
            for j in 0..<d {
                let xh = (xr[j] - m) * inv
                out[j] = inv * (gr[j] * w[j] - meanG - xh * meanGX)
            }
        }
    }
}
