import Foundation

/// SpeeChain's `normalize: True` (norm/feat_norm.py, norm_type 'global'): global mean/std normalisation of
/// [B, T, D] features with running statistics.
///
///     μ_b = mean_{t < len_b} x[b,t,·],  σ_b = max(std_{t < len_b} x[b,t,·] (unbiased), clamp)    per utterance
///     μ̄ = Σ_ranks Σ_b μ_b / Σ_ranks B,  σ̄ likewise                                             per global batch
///     training, epoch ≤ max_epoch_num (or no epoch): n ← n + 1 (n = 1 at the first batch, or always without an
///         epoch), w = 1/n, global_mean ← w·μ̄ + (1 − w)·global_mean (= μ̄ at the first), global_std likewise;
///     training, epoch > max_epoch_num: the buffers are frozen (n too)
///     every call, training or not: x ← (x − global_mean) / global_std over the whole padded tensor,
///         with the buffers as they are after this batch's update
///
/// The buffers are SpeeChain's state-dict entries `global_mean` [D], `global_std` [D] (float32) and `global_batch`
/// [1] (int64), under the module's name (e.g. `encoder.normalize.global_mean`).
///
/// Where SpeeChain would fail or poison its buffers, this one says so in one line instead: an utterance of fewer than
/// two frames (its unbiased std is NaN in torch), and evaluation before any statistics exist (torch: missing
/// buffer). A training batch past max_epoch_num with no statistics yet (a run that starts beyond that epoch) seeds
/// the buffers from that batch, where SpeeChain has no mean to read.
public final class FeatureNormalization {
    public static let confKeys = ["norm_type", "mean_norm", "std_norm", "clamp", "max_epoch_num"]

    public let featureDim: Int
    public let meanNorm: Bool
    public let stdNorm: Bool
    public let clamp: Float
    public let maxEpochNum: Int
    /// global_mean and global_std, nil until the first training batch (or a load) and when disabled.
    public var mean: [Float]? { hasStatistics && meanNorm ? meanBuffer : nil }
    public var std: [Float]? { hasStatistics && stdNorm ? stdBuffer : nil }
    public private(set) var hasStatistics = false
    private var meanBuffer: [Float]
    private var stdBuffer: [Float]
    /// global_batch: global batches averaged into the buffers.
    public private(set) var batchCount: Int64 = 0

    private var stats: [Double]        // [Σ μ (D), Σ σ (D), B]: what the ranks sum
    private var utteranceMean: [Double]
    private var utteranceStd: [Double]

    public init(featureDim: Int, meanNorm: Bool = true, stdNorm: Bool = true, clamp: Float = 1e-10, maxEpochNum: Int = 4) throws {
        let context = "normalize"
        guard featureDim >= 1 else { throw ConfigError.invalidValue(context: context, key: "input_size", reason: "must be >= 1, found \(featureDim)") }
        guard clamp > 0 else { throw ConfigError.invalidValue(context: context, key: "clamp", reason: "must be > 0, found \(clamp)") }
        self.featureDim = featureDim
        self.meanNorm = meanNorm
        self.stdNorm = stdNorm
        self.clamp = clamp
        self.maxEpochNum = maxEpochNum
        stats = [Double](repeating: 0, count: 2 * featureDim + 1)
        utteranceMean = [Double](repeating: 0, count: featureDim)
        utteranceStd = [Double](repeating: 0, count: featureDim)
        meanBuffer = [Float](repeating: 0, count: featureDim)
        stdBuffer = [Float](repeating: 1, count: featureDim)
    }

    /// From `module_conf.normalize`: `True` (all defaults), `False`/null (no module: nil), or a conf mapping.
    public static func make(_ value: ConfigValue, featureDim: Int, context: String = "normalize") throws -> FeatureNormalization? {
        switch value {
        case .null, .bool(false): return nil
        case .bool(true): return try FeatureNormalization(featureDim: featureDim)
        case .map(let conf):
            let r = try ConfReader(conf, context: context, allowedKeys: confKeys)
            let type = try r.string("norm_type", default: "global")
            guard type == "global" else {
                throw ConfigError.invalidValue(context: context, key: "norm_type", reason: "must be 'global' (the only norm_type built; SpeeChain also has utterance, batch, group), found '\(type)'")
            }
            let meanNorm = try r.bool("mean_norm", default: true), stdNorm = try r.bool("std_norm", default: true)
            guard meanNorm || stdNorm else {
                throw ConfigError.conflict("\(context): mean_norm and std_norm are both false, so the module would do nothing")
            }
            let clamp = try r.double("clamp", default: 1e-10)
            guard clamp > 0 else { throw ConfigError.invalidValue(context: context, key: "clamp", reason: "must be > 0, found \(clamp)") }
            return try FeatureNormalization(featureDim: featureDim, meanNorm: meanNorm, stdNorm: stdNorm, clamp: Float(clamp),
                                            maxEpochNum: try r.int("max_epoch_num", default: 4))
        default:
            throw ConfigError.wrongType(context: "module_conf", key: "normalize", expected: "true, false or a conf mapping", found: value)
        }
    }

    /// Normalises `features` [batchSize, frames, featureDim] in place. In training the batch statistics update the
    /// buffers first; `reduce` sums a Double buffer over the ranks in place (identity for one rank: pass nil).
    public func callAsFunction(_ features: UnsafeMutablePointer<Float>, batchSize: Int, frames: Int, lengths: [Int],
                               training: Bool, epoch: Int?,
                               reduce: ((UnsafeMutablePointer<Double>, Int) throws -> Void)? = nil) throws {
        let d = featureDim
        guard lengths.count == batchSize else {
            throw FeatureNormalizationError.shape("\(lengths.count) lengths for a batch of \(batchSize)")
        }
        if training {
            try stats.withUnsafeMutableBufferPointer { s in
                let sums = s.baseAddress!
                sums.update(repeating: 0, count: 2 * d + 1)
                for b in 0..<batchSize {
                    let len = lengths[b]
                    guard len >= 2 && len <= frames else {
                        throw FeatureNormalizationError.shape(len > frames
                            ? "utterance \(b) has \(len) frames, more than the batch's \(frames)"
                            : "utterance \(b) has \(len) frame\(len == 1 ? "" : "s"): an unbiased std needs at least 2")
                    }
                    utteranceStatistics(features + b * frames * d, length: len)
                    for k in 0..<d {
                        // torch keeps μ_b and σ_b in float32: round before summing
                        sums[k] += Double(Float(utteranceMean[k]))
                        sums[d + k] += Double(max(Float(utteranceStd[k]), clamp))
                    }
                }
                sums[2 * d] = Double(batchSize)
                try reduce?(sums, 2 * d + 1)
            }
            let total = stats[2 * d]
            guard total >= 1 else { throw FeatureNormalizationError.shape("the global batch is empty") }
            update(epoch: epoch, total: total)
        }
        guard hasStatistics else {
            throw FeatureNormalizationError.noStatistics("normalize: no global_mean/global_std yet: evaluation before any training batch, and none loaded from a checkpoint")
        }
        apply(features, count: batchSize * frames)
    }

    /// Buffers as SpeeChain's state dict holds them (without the module prefix): global_mean, global_std ([D]
    /// float32, those enabled) and global_batch ([1], int64 in the state dict, given here as a float).
    public var namedBuffers: [(name: String, values: [Float])] {
        var out: [(String, [Float])] = []
        if let mean { out.append(("global_mean", mean)) }
        if let std { out.append(("global_std", std)) }
        if batchCount > 0 { out.append(("global_batch", [Float(batchCount)])) }
        return out
    }

    /// Restores the buffers from a state dict (SpeeChain's _load_from_state_dict: any of the three names).
    public func load(mean: [Float]?, std: [Float]?, batchCount: Int64) throws {
        for (name, v) in [("global_mean", mean), ("global_std", std)] {
            if let v, v.count != featureDim {
                throw FeatureNormalizationError.shape("\(name) has \(v.count) values, the features \(featureDim)")
            }
        }
        guard (mean != nil) == meanNorm && (std != nil) == stdNorm else {
            throw FeatureNormalizationError.shape("the loaded buffers do not match mean_norm \(meanNorm) and std_norm \(stdNorm)")
        }
        if let mean { meanBuffer = mean }
        if let std { stdBuffer = std }
        self.batchCount = batchCount
        hasStatistics = true
    }

    // MARK: - Steps

    /// Mean and unbiased std of each channel over the first `length` frames, in double (torch accumulates float32
    /// reductions at least this accurately; the results are rounded to float32 by the caller).
    private func utteranceStatistics(_ x: UnsafePointer<Float>, length: Int) {
        let d = featureDim
        utteranceMean.withUnsafeMutableBufferPointer { mu in
            utteranceStd.withUnsafeMutableBufferPointer { sd in
                let m = mu.baseAddress!, s = sd.baseAddress!
                m.update(repeating: 0, count: d)
                s.update(repeating: 0, count: d)
                for t in 0..<length { let row = x + t * d; for k in 0..<d { m[k] += Double(row[k]) } }
                for k in 0..<d { m[k] /= Double(length) }
                for t in 0..<length {
                    let row = x + t * d
                    for k in 0..<d { let c = Double(row[k]) - m[k]; s[k] += c * c }
                }
                for k in 0..<d { s[k] = (s[k] / Double(length - 1)).squareRoot() }
            }
        }
    }

    /// SpeeChain's register_mean_std_batch for prefix 'global', in float32 as torch computes it
    /// (w = 1/n as float32, new = w·batch + (1 − w)·old).
    private func update(epoch: Int?, total: Double) {
        let d = featureDim
        let counting = epoch.map { $0 <= maxEpochNum } ?? true
        if epoch == nil || batchCount == 0 { batchCount = 1 } else if counting { batchCount += 1 }
        let seeding = !hasStatistics   // no statistics yet: the first batch is taken whatever the epoch
        guard counting || seeding else { return }
        let w = Float(1) / Float(batchCount)
        func blend(_ buffer: inout [Float], offset: Int) {
            buffer.withUnsafeMutableBufferPointer { v in
                for k in 0..<d {
                    let batch = Float(stats[offset + k] / total)
                    v[k] = seeding ? batch : w * batch + (1 - w) * v[k]
                }
            }
        }
        if meanNorm { blend(&meanBuffer, offset: 0) }
        if stdNorm { blend(&stdBuffer, offset: d) }
        hasStatistics = true
    }

    /// x ← (x − mean) / std row by row (the subtraction and division of torch, two roundings).
    private func apply(_ x: UnsafeMutablePointer<Float>, count rows: Int) {
        let d = featureDim, w = Kernels.width
        meanBuffer.withUnsafeBufferPointer { mb in
            stdBuffer.withUnsafeBufferPointer { sb in
                let m = mb.baseAddress!, s = sb.baseAddress!
                for r in 0..<rows {
                    let row = x + r * d
                    var k = 0
                    while k + w <= d {
                        var v = Kernels.load(row + k)
                        if meanNorm { v -= Kernels.load(UnsafeMutablePointer(mutating: m + k)) }
                        if stdNorm { v /= Kernels.load(UnsafeMutablePointer(mutating: s + k)) }
                        Kernels.store(v, row + k)
                        k += w
                    }
                    while k < d {
                        var v = row[k]
                        if meanNorm { v -= m[k] }
                        if stdNorm { v /= s[k] }
                        row[k] = v
                        k += 1
                    }
                }
            }
        }
    }
}

/// A batch the normalisation cannot take, or evaluation before any statistics, as one line.
public enum FeatureNormalizationError: Error, CustomStringConvertible, Equatable {
    case shape(String)
    case noStatistics(String)

    public var description: String {
        switch self {
        case .shape(let message): return "normalize: \(message)"
        case .noStatistics(let message): return message
        }
    }
}
