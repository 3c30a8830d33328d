/// `linear.WarmupLinearLr` (beyond SpeeChain): lr = base·s/w for s < w; then
/// min_lr + (base − min_lr)·max(0, (T − s)/(T − w)) with T = total_steps.
public struct WarmupLinearLr: LRSchedule {
    public static let typeName = "linear.WarmupLinearLr"
    public static let confKeys = ["warmup_steps", "total_steps", "min_lr"]
    public let baseLR: Double, minLR: Double
    public let warmupSteps: Int, totalSteps: Int

    public init(conf: ConfReader, baseLR: Double) throws {
        self.baseLR = baseLR
        warmupSteps = try conf.int("warmup_steps", default: 0)
        guard let total = try conf.optionalInt("total_steps") else { throw ConfigError.missing(context: conf.context, key: "total_steps") }
        totalSteps = total
        minLR = try conf.double("min_lr", default: 0)
        try requirePositive(conf, "warmup_steps", warmupSteps, allowZero: true)
        guard totalSteps > warmupSteps else {
            throw ConfigError.invalidValue(context: conf.context, key: "total_steps", reason: "must exceed warmup_steps (\(warmupSteps)), found \(totalSteps)")
        }
    }

    public func lr(realStep s: Int, epoch: Int) -> Double {
        if s < warmupSteps { return baseLR * warmupFactor(s, warmupSteps) }
        return minLR + (baseLR - minLR) * max(0, Double(totalSteps - s) / Double(totalSteps - warmupSteps))
    }

    public var reprFields: String { "warmup_steps=\(warmupSteps), total_steps=\(totalSteps), min_lr=\(pythonRepr(minLR))" }
}
