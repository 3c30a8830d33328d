import CKernels
import Foundation

/// torch.optim.Adam (Kingma & Ba, 2015) as torch computes it: g ← ±g + λθ; m ← lerp(m, g, 1−β₁);
/// v ← β₂v + (1−β₂)g²; v̂max ← max(v̂max, v) (amsgrad); θ ← θ − (γ/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε).
/// AdamW (Loshchilov & Hutter) first decays θ ← θ(1 − γλ) and adds no λθ to the gradient.
/// The element-wise update is a C kernel (CKernels `ck_adam_update`) on the CPU's vector path; every operation above
/// rounds separately in float32, in this order, on every path.
public class AdamFamily: FlatOptimizer, Optimizer {
    public class var typeName: String { "Adam" }
    public static let confKeys = ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused"]
    class var decoupledWeightDecay: Bool { false }
    class var defaultWeightDecay: Double { 0 }

    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    public let amsgrad: Bool, maximize: Bool

    public required init(conf: ConfReader, parameterCount: Int) throws {
        let lr = try conf.double("lr", default: 1e-3)
        (beta1, beta2) = try conf.doublePair("betas", default: (0.9, 0.999))
        eps = try conf.double("eps", default: 1e-8)
        weightDecay = try conf.double("weight_decay", default: Self.defaultWeightDecay)
        amsgrad = try conf.bool("amsgrad", default: false)
        maximize = try conf.bool("maximize", default: false)
        try requireRange(lr, "lr", conf, lr >= 0, "must be >= 0")
        try requireRange(eps, "eps", conf, eps >= 0, "must be >= 0")
        try requireRange(beta1, "betas", conf, (0..<1).contains(beta1), "beta1 must be in [0, 1)")
        try requireRange(beta2, "betas", conf, (0..<1).contains(beta2), "beta2 must be in [0, 1)")
        try requireRange(weightDecay, "weight_decay", conf, weightDecay >= 0, "must be >= 0")
        super.init(typeName: Self.typeName, lr: lr, state: StateSlots(names: amsgrad ? ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"] : ["exp_avg", "exp_avg_sq"],
                           count: parameterCount))
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
                     gradientScale: Float, zeroingGradients: Bool) {
        stepCount += 1
        let t = Double(stepCount)
        let bc1 = 1 - Foundation.pow(beta1, t)
        let bc2Sqrt = (1 - Foundation.pow(beta2, t)).squareRoot()
        let stepSize = Float(lr / bc1)
        let c2 = Float(bc2Sqrt), e = Float(eps)
        let w1 = Float(1 - beta1), b2 = Float(beta2), w2 = Float(1 - beta2)
        let decoupled = Self.decoupledWeightDecay
        let decay = Float(1 - lr * weightDecay), wd = Float(weightDecay)
        let sign: Float = (maximize ? -1 : 1) * gradientScale
        let m = state["exp_avg"], v = state["exp_avg_sq"]
        let vmax: UnsafeMutablePointer<Float>? = amsgrad ? state["max_exp_avg_sq"] : nil
        let path = VectorPath.current.ck
        Self.forEachSegment(ranges) { po, so, n in
            ck_adam_update(path, parameters + po, gradients + po, m + so, v + so, vmax.map { $0 + so }, n, sign, wd,
                           decoupled ? 1 : 0, decay, w1, b2, w2, c2, e, stepSize, zeroingGradients ? 1 : 0)
        }
    }
}

/// torch.optim.Adam.
public final class Adam: AdamFamily {
    public override class var typeName: String { "Adam" }
}

/// torch.optim.AdamW: decoupled weight decay, default weight_decay 0.01.
public final class AdamW: AdamFamily {
    public override class var typeName: String { "AdamW" }
    override class var decoupledWeightDecay: Bool { true }
    override class var defaultWeightDecay: Double { 1e-2 }
}
