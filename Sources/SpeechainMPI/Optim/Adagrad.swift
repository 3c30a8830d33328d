import CKernels

/// torch.optim.Adagrad (Duchi et al., 2011): g ← ±g + λθ; γ̃ = γ/(1 + (t−1)η); s ← s + g²;
/// θ ← θ − γ̃·g/(√s + ε); s starts at initial_accumulator_value.
public final class Adagrad: FlatOptimizer, Optimizer {
    public static let typeName = "Adagrad"
    public static let confKeys = ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize", "foreach", "differentiable", "fused"]
    public let lrDecay: Double, weightDecay: Float, eps: Float, initialAccumulator: Float
    public let maximize: Bool

    public init(conf: ConfReader, parameterCount: Int) throws {
        let lr = try conf.double("lr", default: 1e-2)
        lrDecay = try conf.double("lr_decay", default: 0)
        let wd = try conf.double("weight_decay", default: 0)
        let iav = try conf.double("initial_accumulator_value", default: 0)
        let e = try conf.double("eps", default: 1e-10)
        maximize = try conf.bool("maximize", default: false)
        try requireRange(lr, "lr", conf, lr >= 0, "must be >= 0")
        try requireRange(lrDecay, "lr_decay", conf, lrDecay >= 0, "must be >= 0")
        try requireRange(wd, "weight_decay", conf, wd >= 0, "must be >= 0")
        try requireRange(iav, "initial_accumulator_value", conf, iav >= 0, "must be >= 0")
        try requireRange(e, "eps", conf, e >= 0, "must be >= 0")
        weightDecay = Float(wd); eps = Float(e); initialAccumulator = Float(iav)
        super.init(typeName: Self.typeName, lr: lr, state: StateSlots(names: ["sum"], count: parameterCount, initialValue: Float(iav)))
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
                     gradientScale: Float, zeroingGradients: Bool) {
        stepCount += 1
        let clr = Float(lr / (1 + Double(stepCount - 1) * lrDecay))
        let wd = weightDecay, e = eps
        let sign: Float = (maximize ? -1 : 1) * gradientScale
        let sum = state["sum"]
        let path = VectorPath.current.ck
        // Per element, in float32 and this order: g = sign·g; g = g + λ·p; s = s + g·g; p = p + ((−γ̃)·g)/(√s + ε)
        // (CKernels ck_adagrad_update).
        Self.forEachSegment(ranges) { po, so, n in
            ck_adagrad_update(path, parameters + po, gradients + po, sum + so, n, sign, wd, -clr, e, zeroingGradients ? 1 : 0)
        }
    }

}
