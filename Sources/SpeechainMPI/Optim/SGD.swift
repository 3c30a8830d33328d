import CKernels

/// torch.optim.SGD: g ← ±g + λθ; with momentum μ: b ← g (first step) else μb + (1−τ)g;
/// g ← g + μb (nesterov) or b; θ ← θ − γg.
public final class SGD: FlatOptimizer, Optimizer {
    public static let typeName = "SGD"
    public static let confKeys = ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable", "fused"]
    public let momentum: Float, dampening: Float, weightDecay: Float
    public let nesterov: Bool, maximize: Bool

    public init(conf: ConfReader, parameterCount: Int) throws {
        let lr = try conf.double("lr", default: 1e-3)
        let m = try conf.double("momentum", default: 0), d = try conf.double("dampening", default: 0)
        let wd = try conf.double("weight_decay", default: 0)
        nesterov = try conf.bool("nesterov", default: false)
        maximize = try conf.bool("maximize", default: false)
        try requireRange(lr, "lr", conf, lr >= 0, "must be >= 0")
        try requireRange(m, "momentum", conf, m >= 0, "must be >= 0")
        try requireRange(wd, "weight_decay", conf, wd >= 0, "must be >= 0")
        if nesterov && (m <= 0 || d != 0) {
            throw ConfigError.invalidValue(context: conf.context, key: "nesterov", reason: "requires momentum > 0 and dampening = 0")
        }
        momentum = Float(m); dampening = Float(d); weightDecay = Float(wd)
        super.init(typeName: Self.typeName, lr: lr, state: StateSlots(names: m != 0 ? ["momentum_buffer"] : [], count: parameterCount))
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
                     gradientScale: Float, zeroingGradients: Bool) {
        stepCount += 1
        let first = stepCount == 1
        let negLR = Float(-lr), wd = weightDecay, mu = momentum, keep = 1 - dampening
        let sign: Float = (maximize ? -1 : 1) * gradientScale
        let buf: UnsafeMutablePointer<Float>? = mu != 0 ? state["momentum_buffer"] : nil
        let path = VectorPath.current.ck
        // Per element, in float32 and this order: g = sign·g; g = g + λ·p; b = first ? g : μ·b + (1−τ)·g;
        // g = nesterov ? g + μ·b : b; p = p + (−γ)·g (CKernels ck_sgd_update).
        Self.forEachSegment(ranges) { po, so, n in
            ck_sgd_update(path, parameters + po, gradients + po, buf.map { $0 + so }, n, sign, wd, mu, keep,
                          first ? 1 : 0, nesterov ? 1 : 0, negLR, zeroingGradients ? 1 : 0)
        }
    }

}
