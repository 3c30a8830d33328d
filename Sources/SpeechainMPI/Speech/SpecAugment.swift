import Foundation

/// SpeeChain's batch-level SpecAugment (augment/specaug.py; Park et al., 2019), training only, in place over
/// [B, T, D] features with lengths; L = the batch's shortest length.
///
///     time warp (L > 2W + 1):  c ~ U{W+1 … L−W−1}, p ~ U{c−W … c+W−1}; for every utterance rows [0, c) are resized
///         to rows [0, p) and rows [c, L) to rows [p, L), by 1-D bicubic (A = −0.75) or linear interpolation with
///         aligned corners (torch.nn.functional.interpolate over [B, 1, T, D] to (p, D), align_corners=True);
///         rows ≥ L untouched
///     frequency masks:  per utterance freq_mask_num masks, width ~ U{w₀ … w₁}, start ~ U{0 … max(1, D − max width)−1}
///         (the max over the whole batch's widths), columns [start, start + width) over every frame, padded ones too
///     time masks: widths ~ U{v₀ … v₁} (a float bound means ⌊bound·L⌋; v₁ ≤ L), start ~ U{0 … max(1, L − max width)−1},
///         rows [start, start + width), so always inside L
///     masked values: 0 when the features are normalised (feat_norm), else the mean of the whole warped tensor
///
/// Randomness: SpeeChain draws with torch.randint from torch's global Mersenne Twister; here the caller's
/// `Xoshiro256` draws the same quantities in the same order (centre, position, then all frequency widths, all
/// frequency starts, all time widths, all time starts; each uniform over the same integer range by
/// `Int.random(in:using:)`). The distributions are SpeeChain's, the numbers cannot be torch's: no seed makes a
/// Swift run pick torch's masks. Everything after the draws is deterministic and matches torch (the warp to
/// float32 rounding).
public final class SpecAugment {
    public static let confKeys = [
        "time_warp", "time_warp_window", "time_warp_mode", "freq_mask", "freq_mask_width", "freq_mask_num",
        "time_mask", "time_mask_width", "time_mask_num", "time_mask_ratio", "feat_norm",
    ]

    public enum WarpMode: String, Sendable { case bicubic, bilinear }
    /// A bound of the time-mask width: frames, or a fraction of the shortest length.
    public enum Width: Equatable, Sendable {
        case frames(Int)
        case fraction(Double)
        func frames(shortest: Int) -> Int {
            switch self {
            case .frames(let n): return n
            case .fraction(let f): return Int(f * Double(shortest))   // Python int(): truncation
            }
        }
    }

    public let featureDim: Int
    public let timeWarp: Bool
    public let timeWarpWindow: Int
    public let timeWarpMode: WarpMode
    public let freqMask: Bool
    public let freqMaskWidth: (Int, Int)
    public let freqMaskNum: Int
    public let timeMask: Bool
    public let timeMaskWidth: (Width, Width)
    public let timeMaskNum: Int
    /// Masked values are 0 (features normalised) or the tensor's mean.
    public let featNorm: Bool

    /// What the last call drew, for tests and logs: (centre, position) of the warp if one happened, and the masks.
    public private(set) var lastWarp: (center: Int, position: Int)?
    public private(set) var lastFreqMasks: [(start: Int, width: Int)] = []   // [b * freqMaskNum + k]
    public private(set) var lastTimeMasks: [(start: Int, width: Int)] = []   // [b * timeMaskNum + k]

    private var warpSource: [Float] = []
    private var rowMasked: [Bool] = []
    private var colMasked: [Bool] = []

    public init(featureDim: Int, timeWarp: Bool = true, timeWarpWindow: Int = 5, timeWarpMode: WarpMode = .bicubic,
                freqMask: Bool = true, freqMaskWidth: (Int, Int) = (0, 30), freqMaskNum: Int = 2,
                timeMask: Bool = true, timeMaskWidth: (Width, Width) = (.frames(0), .fraction(0.05)), timeMaskNum: Int = 2,
                featNorm: Bool = true) throws {
        let context = "specaug"
        func bad(_ key: String, _ reason: String) -> ConfigError { .invalidValue(context: context, key: key, reason: reason) }
        guard timeWarp || freqMask || timeMask else {
            throw ConfigError.conflict("\(context): time_warp, freq_mask and time_mask are all false: at least one augmentation is needed")
        }
        guard featureDim >= 1 else { throw bad("input_size", "must be >= 1, found \(featureDim)") }
        guard timeWarpWindow >= 1 else { throw bad("time_warp_window", "must be >= 1, found \(timeWarpWindow)") }
        guard freqMaskWidth.0 >= 0, freqMaskWidth.0 <= freqMaskWidth.1 else {
            throw bad("freq_mask_width", "must be 0 <= lower <= upper, found [\(freqMaskWidth.0), \(freqMaskWidth.1)]")
        }
        guard freqMaskWidth.1 < featureDim else {
            throw bad("freq_mask_width", "must be smaller than the feature dimension \(featureDim), found \(freqMaskWidth.1)")
        }
        guard freqMaskNum >= 0 else { throw bad("freq_mask_num", "must be >= 0, found \(freqMaskNum)") }
        guard timeMaskNum >= 0 else { throw bad("time_mask_num", "must be >= 0, found \(timeMaskNum)") }
        for w in [timeMaskWidth.0, timeMaskWidth.1] {
            switch w {
            case .frames(let n) where n < 0: throw bad("time_mask_width", "must not be negative, found \(n)")
            case .fraction(let f) where !(f >= 0 && f <= 1): throw bad("time_mask_width", "as a fraction must be in [0, 1], found \(f)")
            default: break
            }
        }
        self.featureDim = featureDim
        self.timeWarp = timeWarp
        self.timeWarpWindow = timeWarpWindow
        self.timeWarpMode = timeWarpMode
        self.freqMask = freqMask
        self.freqMaskWidth = freqMaskWidth
        self.freqMaskNum = freqMaskNum
        self.timeMask = timeMask
        self.timeMaskWidth = timeMaskWidth
        self.timeMaskNum = timeMaskNum
        self.featNorm = featNorm
        colMasked = [Bool](repeating: false, count: featureDim)
    }

    /// From `module_conf.specaug`: `True` (defaults), `False`/null (nil), or a conf mapping. `featNorm` is whether
    /// the model normalises its features (SpeeChain passes `normalize is not None and normalize is not False`).
    public static func make(_ value: ConfigValue, featureDim: Int, featNorm: Bool, context: String = "specaug") throws -> SpecAugment? {
        switch value {
        case .null, .bool(false): return nil
        case .bool(true): return try SpecAugment(featureDim: featureDim, featNorm: featNorm)
        case .map(let conf):
            let r = try ConfReader(conf, context: context, allowedKeys: confKeys.filter { $0 != "feat_norm" })
            let modeName = try r.string("time_warp_mode", default: "bicubic")
            guard let mode = WarpMode(rawValue: modeName) else {
                throw ConfigError.invalidValue(context: context, key: "time_warp_mode", reason: "must be 'bicubic' or 'bilinear', found '\(modeName)'")
            }
            func intPair(_ key: String, _ def: (Int, Int)) throws -> (Int, Int) {
                guard let v = r.values[key] else { return def }
                switch v {
                case .int(let i): return (0, i)
                case .list(let l) where l.count == 2:
                    if case .int(let a) = l[0], case .int(let b) = l[1] { return (a, b) }
                default: break
                }
                throw ConfigError.wrongType(context: context, key: key, expected: "an integer or a list [lower, upper] of integers", found: v)
            }
            func width(_ v: ConfigValue, _ key: String, _ whole: ConfigValue) throws -> Width {
                switch v {
                case .int(let i): return .frames(i)
                case .double(let d): return .fraction(d)
                default: throw ConfigError.wrongType(context: context, key: key, expected: "frames (an integer) or a fraction (a float), or a list [lower, upper] of them", found: whole)
                }
            }
            var timeWidth: (Width, Width) = (.frames(0), .fraction(0.05))
            if let v = r.values["time_mask_width"] {
                if case .list(let l) = v {
                    guard l.count == 2 else { throw ConfigError.wrongType(context: context, key: "time_mask_width", expected: "a list [lower, upper]", found: v) }
                    timeWidth = (try width(l[0], "time_mask_width", v), try width(l[1], "time_mask_width", v))
                } else {
                    timeWidth = (.frames(0), try width(v, "time_mask_width", v))
                }
            }
            _ = try r.double("time_mask_ratio", default: 1)   // accepted and unused, as in SpeeChain's forward
            return try SpecAugment(featureDim: featureDim, timeWarp: try r.bool("time_warp", default: true),
                                   timeWarpWindow: try r.int("time_warp_window", default: 5), timeWarpMode: mode,
                                   freqMask: try r.bool("freq_mask", default: true),
                                   freqMaskWidth: try intPair("freq_mask_width", (0, 30)),
                                   freqMaskNum: try r.int("freq_mask_num", default: 2),
                                   timeMask: try r.bool("time_mask", default: true), timeMaskWidth: timeWidth,
                                   timeMaskNum: try r.int("time_mask_num", default: 2), featNorm: featNorm)
        default:
            throw ConfigError.wrongType(context: "module_conf", key: "specaug", expected: "true, false or a conf mapping", found: value)
        }
    }

    /// Augments `features` [batchSize, frames, featureDim] in place (call only in training). Lengths are unchanged.
    public func callAsFunction(_ features: UnsafeMutablePointer<Float>, batchSize: Int, frames: Int, lengths: [Int],
                               using rng: inout Xoshiro256) throws {
        let d = featureDim
        guard lengths.count == batchSize, batchSize >= 1 else {
            throw SpecAugmentError("\(lengths.count) lengths for a batch of \(batchSize)")
        }
        var shortest = Int.max
        for (b, len) in lengths.enumerated() {
            guard len >= 1 && len <= frames else { throw SpecAugmentError("utterance \(b) has \(len) frames, outside 1...\(frames)") }
            shortest = min(shortest, len)
        }
        lastWarp = nil
        lastFreqMasks.removeAll(keepingCapacity: true)
        lastTimeMasks.removeAll(keepingCapacity: true)

        // --- time warp ---
        let window = timeWarpWindow
        if timeWarp && shortest > 2 * window + 1 {
            let center = Int.random(in: (window + 1)..<(shortest - window), using: &rng)
            let position = Int.random(in: (center - window)..<(center + window), using: &rng)
            lastWarp = (center, position)
            for b in 0..<batchSize {
                warp(features + b * frames * d, center: center, position: position, shortest: shortest)
            }
        }

        // --- frequency masks: all widths, then all starts (the start range uses the batch's widest) ---
        let fillValue: Float = featNorm ? 0 : mean(features, count: batchSize * frames * d)
        if freqMask && freqMaskNum > 0 {
            var widest = 0
            for _ in 0..<(batchSize * freqMaskNum) {
                let w = Int.random(in: freqMaskWidth.0...freqMaskWidth.1, using: &rng)
                lastFreqMasks.append((0, w))
                widest = max(widest, w)
            }
            for i in 0..<(batchSize * freqMaskNum) {
                lastFreqMasks[i].start = Int.random(in: 0..<max(1, d - widest), using: &rng)
            }
        }
        // --- time masks ---
        if timeMask && timeMaskNum > 0 {
            let lower = timeMaskWidth.0.frames(shortest: shortest)
            let upper = min(timeMaskWidth.1.frames(shortest: shortest), shortest)
            guard lower <= upper else {
                throw SpecAugmentError("time_mask_width's lower bound \(lower) exceeds its upper bound \(upper) for a shortest length of \(shortest) frames")
            }
            var widest = 0
            for _ in 0..<(batchSize * timeMaskNum) {
                let w = Int.random(in: lower...upper, using: &rng)
                lastTimeMasks.append((0, w))
                widest = max(widest, w)
            }
            for i in 0..<(batchSize * timeMaskNum) {
                lastTimeMasks[i].start = Int.random(in: 0..<max(1, shortest - widest), using: &rng)
            }
        }
        if lastFreqMasks.isEmpty && lastTimeMasks.isEmpty { return }
        if rowMasked.count < frames { rowMasked = [Bool](repeating: false, count: frames) }
        for b in 0..<batchSize {
            let x = features + b * frames * d
            for k in 0..<d { colMasked[k] = false }
            for i in 0..<(lastFreqMasks.isEmpty ? 0 : freqMaskNum) {
                let m = lastFreqMasks[b * freqMaskNum + i]
                for k in m.start..<min(m.start + m.width, d) { colMasked[k] = true }
            }
            for t in 0..<frames { rowMasked[t] = false }
            for i in 0..<(lastTimeMasks.isEmpty ? 0 : timeMaskNum) {
                let m = lastTimeMasks[b * timeMaskNum + i]
                for t in m.start..<min(m.start + m.width, frames) { rowMasked[t] = true }
            }
            for t in 0..<frames {
                let row = x + t * d
                if rowMasked[t] { row.update(repeating: fillValue, count: d); continue }
                for k in 0..<d where colMasked[k] { row[k] = fillValue }
            }
        }
    }

    // MARK: - Steps

    /// One utterance's warp: rows [0, c) → [0, p), rows [c, L) → [p, L), aligned corners, clamped borders.
    func warp(_ x: UnsafeMutablePointer<Float>, center c: Int, position p: Int, shortest L: Int) {
        let d = featureDim
        if warpSource.count < L * d { warpSource = [Float](repeating: 0, count: L * d) }
        warpSource.withUnsafeMutableBufferPointer { buf in
            let src = buf.baseAddress!
            src.update(from: x, count: L * d)
            resize(src, rows: c, into: x, rows: p)
            resize(src + c * d, rows: L - c, into: x + p * d, rows: L - p)
        }
    }

    /// torch's upsample_bicubic2d / upsample_bilinear2d along rows with align_corners=True (the width is unchanged,
    /// so its weights are the identity): source row s = i·(n−1)/(m−1) (0 when m = 1), s₀ = ⌊s⌋, t = s − s₀;
    /// bicubic: Σ_{j=−1…2} K(t − j)·row[clamp(s₀ + j)], K the cubic convolution kernel with A = −0.75.
    private func resize(_ src: UnsafePointer<Float>, rows n: Int, into dst: UnsafeMutablePointer<Float>, rows m: Int) {
        let d = featureDim
        guard m > 0, n > 0 else { return }
        let scale: Float = m > 1 ? Float(n - 1) / Float(m - 1) : 0
        for i in 0..<m {
            let s = scale * Float(i)
            let s0 = Int(s.rounded(.down))
            let t = s - Float(s0)
            let out = dst + i * d
            switch timeWarpMode {
            case .bicubic:
                let a: Float = -0.75
                // K(x) = (A+2)|x|³ − (A+3)|x|² + 1 for |x| ≤ 1; A|x|³ − 5A|x|² + 8A|x| − 4A for 1 < |x| < 2
                func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
                func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
                let w0 = far(t + 1), w1 = near(t), w2 = near(1 - t), w3 = far(2 - t)
                let r0 = src + min(max(s0 - 1, 0), n - 1) * d, r1 = src + min(max(s0, 0), n - 1) * d
                let r2 = src + min(max(s0 + 1, 0), n - 1) * d, r3 = src + min(max(s0 + 2, 0), n - 1) * d
                for k in 0..<d { out[k] = r0[k] * w0 + r1[k] * w1 + r2[k] * w2 + r3[k] * w3 }
            case .bilinear:
                let r0 = src + min(s0, n - 1) * d, r1 = src + min(s0 + 1, n - 1) * d
                for k in 0..<d { out[k] = (1 - t) * r0[k] + t * r1[k] }
            }
        }
    }

    private func mean(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var s = 0.0
        for i in 0..<count { s += Double(x[i]) }
        return count > 0 ? Float(s / Double(count)) : 0
    }
}

/// A batch SpecAugment cannot take, as one line.
public struct SpecAugmentError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "specaug: \(message)" }
}
