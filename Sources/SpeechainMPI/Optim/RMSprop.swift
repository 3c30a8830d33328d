import CKernels

/// torch.optim.RMSprop (Hinton): g ← ±g + λθ; v ← αv + (1−α)g²; centered: ḡ ← lerp(ḡ, g, 1−α),
/// d = √(v − ḡ²) + ε, else d = √v + ε; with momentum μ: b ← μb + g/d, θ ← θ − γb; else θ ← θ − γg/d.
public final class RMSprop: FlatOptimizer, Optimizer {
    public static let typeName = "RMSprop"
    public static let confKeys = ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize", "foreach", "capturable", "differentiable"]
    public let alpha: Float, eps: Float, weightDecay: Float, momentum: Float
    public let centered: Bool, maximize: Bool

    public init(conf: ConfReader, parameterCount: Int) throws {
        let lr = try conf.double("lr", default: 1e-2)
        let a = try conf.double("alpha", default: 0.99), e = try conf.double("eps", default: 1e-8)
        let wd = try conf.double("weight_decay", default: 0), m = try conf.double("momentum", default: 0)
        centered = try conf.bool("centered", default: false)
        maximize = try conf.bool("maximize", default: false)
        try requireRange(lr, "lr", conf, lr >= 0, "must be >= 0")
        try requireRange(a, "alpha", conf, a >= 0, "must be >= 0")
        try requireRange(e, "eps", conf, e >= 0, "must be >= 0")
        try requireRange(wd, "weight_decay", conf, wd >= 0, "must be >= 0")
        try requireRange(m, "momentum", conf, m >= 0, "must be >= 0")
        alpha = Float(a); eps = Float(e); weightDecay = Float(wd); momentum = Float(m)
        var names = ["square_avg"]
        if m > 0 { names.append("momentum_buffer") }
        if centered { names.append("grad_avg") }
        super.init(typeName: Self.typeName, lr: lr, state: StateSlots(names: names, count: parameterCount))
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
                     gradientScale: Float, zeroingGradients: Bool) {
        stepCount += 1
        let lrF = Float(lr), a = alpha, wa = 1 - alpha, e = eps, wd = weightDecay, mu = momentum
        let sign: Float = (maximize ? -1 : 1) * gradientScale
        let sq = state["square_avg"]
        let buf: UnsafeMutablePointer<Float>? = mu > 0 ? state["momentum_buffer"] : nil
        let gavg: UnsafeMutablePointer<Float>? = centered ? state["grad_avg"] : nil
        let path = VectorPath.current.ck
        // Per element, in float32 and this order: g = sign·g; g = g + λ·p; v = v·α + ((1−α)·g)·g;
        // centered: ḡ = lerp(ḡ, g, 1−α), d = √(v − ḡ·ḡ) + ε, else d = √v + ε;
        // momentum: b = b·μ + g/d, p = p − γ·b; else p = p + ((−γ)·g)/d (CKernels ck_rmsprop_update).
        Self.forEachSegment(ranges) { po, so, n in
            ck_rmsprop_update(path, parameters + po, gradients + po, sq + so, buf.map { $0 + so }, gavg.map { $0 + so },
                              n, sign, wd, a, wa, e, mu, lrF, zeroingGradients ? 1 : 0)
        }
    }

}
