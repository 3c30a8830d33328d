/// `const.ConstantLr` (beyond SpeeChain): the optimizer's lr, after an optional linear warmup base·s/w for s < w.
public struct ConstantLr: LRSchedule {
    public static let typeName = "const.ConstantLr"
    public static let confKeys = ["warmup_steps"]
    public let baseLR: Double
    public let warmupSteps: Int

    public init(conf: ConfReader, baseLR: Double) throws {
        self.baseLR = baseLR
        warmupSteps = try conf.int("warmup_steps", default: 0)
        try requirePositive(conf, "warmup_steps", warmupSteps, allowZero: true)
    }

    public func lr(realStep s: Int, epoch: Int) -> Double { baseLR * warmupFactor(s, warmupSteps) }

    public var reprFields: String { "warmup_steps=\(warmupSteps)" }
}
