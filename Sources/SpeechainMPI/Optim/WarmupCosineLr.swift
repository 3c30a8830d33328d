import Foundation

/// `cosine.WarmupCosineLr` (beyond SpeeChain): lr = base·s/w for s < w; then
/// min_lr + (base − min_lr)·½(1 + cos(π·min(1, (s − w)/(T − w)))) with T = total_steps.
public struct WarmupCosineLr: LRSchedule {
    public static let typeName = "cosine.WarmupCosineLr"
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
        let progress = min(1, Double(s - warmupSteps) / Double(totalSteps - warmupSteps))
        return minLR + (baseLR - minLR) * 0.5 * (1 + Foundation.cos(Double.pi * progress))
    }

    public var reprFields: String { "warmup_steps=\(warmupSteps), total_steps=\(totalSteps), min_lr=\(pythonRepr(minLR))" }
}
