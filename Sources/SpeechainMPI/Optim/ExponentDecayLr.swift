import Foundation

/// SpeeChain's `exp.ExponentDecayLr`: lr = base_lr · decay_factor^(epoch − 1), constant within an epoch.
/// SpeeChain's own code computes `get_lr() · decay_factor^(epoch − 1)` from the *current* lr on every step, so its
/// lr compounds step after step from epoch 2 on; we implement the documented formula instead (see README).
public struct ExponentDecayLr: LRSchedule {
    public static let typeName = "exp.ExponentDecayLr"
    public static let confKeys = ["decay_factor"]
    public let baseLR: Double
    public let decayFactor: Double

    public init(conf: ConfReader, baseLR: Double) throws {
        self.baseLR = baseLR
        decayFactor = try conf.double("decay_factor", default: 0.999)
        guard decayFactor > 0 else {
            throw ConfigError.invalidValue(context: conf.context, key: "decay_factor", reason: "must be > 0, found \(decayFactor)")
        }
    }

    public func lr(realStep: Int, epoch: Int) -> Double { baseLR * Foundation.pow(decayFactor, Double(epoch - 1)) }

    public var reprFields: String { "decay_factor=\(pythonRepr(decayFactor))" }
}
