/// torch.amp.GradScaler's dynamic loss scaling: the loss is multiplied by `scale` before backward; on an update
/// the gradients are multiplied by 1/scale (computed in double, rounded to float, as torch does) and checked for
/// inf/NaN; a step with any is skipped and scale ← scale·backoff_factor; after growth_interval clean steps in a row
/// scale ← scale·growth_factor (kept only if finite).
public struct GradScaler: Codable, Equatable, Sendable {
    public var scale: Float
    public var growthTracker: Int
    public var growthFactor: Float
    public var backoffFactor: Float
    public var growthInterval: Int
    public var enabled: Bool

    public static let confKeys = ["init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled"]

    public init(initScale: Float = 65536, growthFactor: Float = 2, backoffFactor: Float = 0.5,
                growthInterval: Int = 2000, enabled: Bool = true) {
        scale = initScale; growthTracker = 0
        self.growthFactor = growthFactor; self.backoffFactor = backoffFactor
        self.growthInterval = growthInterval; self.enabled = enabled
    }

    public init(conf: ConfReader) throws {
        self.init(initScale: Float(try conf.double("init_scale", default: 65536)),
                  growthFactor: Float(try conf.double("growth_factor", default: 2)),
                  backoffFactor: Float(try conf.double("backoff_factor", default: 0.5)),
                  growthInterval: try conf.int("growth_interval", default: 2000),
                  enabled: try conf.bool("enabled", default: true))
        guard scale > 0, scale.isFinite else { throw ConfigError.invalidValue(context: conf.context, key: "init_scale", reason: "must be a positive number, found \(scale)") }
        guard growthFactor > 1 else { throw ConfigError.invalidValue(context: conf.context, key: "growth_factor", reason: "must be > 1, found \(growthFactor)") }
        guard backoffFactor > 0, backoffFactor < 1 else { throw ConfigError.invalidValue(context: conf.context, key: "backoff_factor", reason: "must be in (0, 1), found \(backoffFactor)") }
        guard growthInterval > 0 else { throw ConfigError.invalidValue(context: conf.context, key: "growth_interval", reason: "must be > 0, found \(growthInterval)") }
    }

    /// The factor the loss is multiplied by (1 when disabled).
    public var lossScale: Float { enabled ? scale : 1 }

    /// Multiplies the gradients in `ranges` by 1/scale (times `factor`, a pending 1/world size); returns true when
    /// any is inf or NaN. A disabled scaler does nothing (the caller keeps `factor` pending).
    public func unscale(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>], factor: Float = 1) -> Bool {
        guard enabled else { return false }
        let inv = Float(1 / Double(scale)) * factor
        var foundInf = false
        for r in ranges where !Kernels.scaleCheckingFinite(gradients + r.lowerBound, count: r.count, by: inv) {
            foundInf = true
        }
        return foundInf
    }

    /// torch's `_amp_update_scale_`.
    public mutating func update(foundInf: Bool) {
        guard enabled else { return }
        if foundInf {
            scale *= backoffFactor
            growthTracker = 0
        } else {
            growthTracker += 1
            if growthTracker == growthInterval {
                let grown = scale * growthFactor
                if grown.isFinite { scale = grown }
                growthTracker = 0
            }
        }
    }
}
