import Foundation
import MallocCounter
import Testing
@testable import SpeechainMPI

/// SpeeChain's feat_norm.py (norm_type 'global') on numbers worked out by hand in the comments.
@Suite struct FeatureNormalizationTests {
    /// Two utterances, D = 2, padded to 4 frames:
    ///   u0 (3 frames) = (1,10) (2,20) (3,30) | pad (0,0):  μ = (2, 20), unbiased σ = (1, 10)
    ///   u1 (4 frames) = (0,0) (4,4) (0,0) (4,4):            μ = (2, 2),  σ = √(16/3) each
    ///   batch: μ̄ = (2, 11), σ̄ = ((1 + √(16/3))/2, (10 + √(16/3))/2)
    static let batch1: [Float] = [1, 10, 2, 20, 3, 30, 0, 0, 0, 0, 4, 4, 0, 0, 4, 4]
    static let s = (16.0 / 3).squareRoot()
    static let mean1 = [2.0, 11.0], std1 = [(1 + s) / 2, (10 + s) / 2]
    /// A second batch: one utterance (5,5) (7,9) (9,13): μ = (7, 9), σ = (2, 4).
    static let batch2: [Float] = [5, 5, 7, 9, 9, 13]
    static let mean2 = [7.0, 9.0], std2 = [2.0, 4.0]

    func run(_ norm: FeatureNormalization, _ x: [Float], batchSize: Int, frames: Int, lengths: [Int], training: Bool = true,
             epoch: Int?, reduce: ((UnsafeMutablePointer<Double>, Int) throws -> Void)? = nil) throws -> [Float] {
        var y = x
        try y.withUnsafeMutableBufferPointer {
            try norm($0.baseAddress!, batchSize: batchSize, frames: frames, lengths: lengths, training: training, epoch: epoch, reduce: reduce)
        }
        return y
    }

    func expectClose(_ a: [Float], _ b: [Double], _ tol: Double = 1e-6, _ what: String = "") {
        #expect(a.count == b.count, "\(what)")
        for (x, y) in zip(a, b) { #expect(abs(Double(x) - y) <= tol * max(1, abs(y)), "\(what): \(x) vs \(y)") }
    }

    @Test func firstBatchNormalisesWithItsOwnStatisticsPaddingIncluded() throws {
        let norm = try FeatureNormalization(featureDim: 2)
        let y = try run(norm, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 1)
        expectClose(norm.mean!, Self.mean1, 1e-6, "global_mean")
        expectClose(norm.std!, Self.std1, 1e-6, "global_std")
        #expect(norm.batchCount == 1)
        // every row, the padded one too: (x − μ̄)/σ̄
        let expected = (0..<16).map { (Double(Self.batch1[$0]) - Self.mean1[$0 % 2]) / Self.std1[$0 % 2] }
        expectClose(y, expected, 1e-6, "output")
        #expect(abs(Double(y[6]) - (-2 / Self.std1[0])) < 1e-6)   // the padding row (0,0) of u0
    }

    @Test func runningAverageUntilMaxEpochThenFrozen() throws {
        let norm = try FeatureNormalization(featureDim: 2)
        _ = try run(norm, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 1)
        // second batch, epoch 4 (≤ max_epoch_num): n = 2, w = 1/2: buffers = (batch1 + batch2)/2, used for this batch
        let y = try run(norm, Self.batch2, batchSize: 1, frames: 3, lengths: [3], epoch: 4)
        let m = (0..<2).map { (Self.mean1[$0] + Self.mean2[$0]) / 2 }, s = (0..<2).map { (Self.std1[$0] + Self.std2[$0]) / 2 }
        expectClose(norm.mean!, m, 1e-6, "mean after 2")
        expectClose(norm.std!, s, 1e-6, "std after 2")
        #expect(norm.batchCount == 2)
        expectClose(y, (0..<6).map { (Double(Self.batch2[$0]) - m[$0 % 2]) / s[$0 % 2] }, 1e-6, "second output")
        // epoch 5 > 4: frozen, n stays 2; the batch is normalised with the frozen buffers
        let z = try run(norm, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 5)
        expectClose(norm.mean!, m, 1e-6)
        #expect(norm.batchCount == 2)
        expectClose(z, (0..<16).map { (Double(Self.batch1[$0]) - m[$0 % 2]) / s[$0 % 2] }, 1e-6, "frozen output")
        // a third counted batch would weigh 1/3: check with a fresh module over three epoch-1 batches
        let three = try FeatureNormalization(featureDim: 2)
        for x in [Self.batch2, Self.batch2] { _ = try run(three, x, batchSize: 1, frames: 3, lengths: [3], epoch: 2) }
        _ = try run(three, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 3)
        expectClose(three.mean!, (0..<2).map { (2 * Self.mean2[$0] + Self.mean1[$0]) / 3 }, 1e-6, "cumulative mean")
        #expect(three.batchCount == 3)
    }

    /// SpeeChain without an epoch: the counter restarts at 1, so the buffers are just this batch's statistics.
    @Test func noEpochMeansThisBatchOnly() throws {
        let norm = try FeatureNormalization(featureDim: 2)
        _ = try run(norm, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 1)
        _ = try run(norm, Self.batch2, batchSize: 1, frames: 3, lengths: [3], epoch: nil)
        expectClose(norm.mean!, Self.mean2, 1e-6)
        expectClose(norm.std!, Self.std2, 1e-6)
        #expect(norm.batchCount == 1)
    }

    @Test func evaluationUsesTheBuffersAndNeverUpdates() throws {
        let norm = try FeatureNormalization(featureDim: 2)
        do {
            _ = try run(norm, Self.batch2, batchSize: 1, frames: 3, lengths: [3], training: false, epoch: 1)
            Issue.record("evaluation without statistics must fail")
        } catch {
            #expect("\(error)" == "normalize: no global_mean/global_std yet: evaluation before any training batch, and none loaded from a checkpoint")
        }
        _ = try run(norm, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 1)
        let y = try run(norm, Self.batch2, batchSize: 1, frames: 3, lengths: [3], training: false, epoch: 2)
        expectClose(norm.mean!, Self.mean1)
        #expect(norm.batchCount == 1)
        expectClose(y, (0..<6).map { (Double(Self.batch2[$0]) - Self.mean1[$0 % 2]) / Self.std1[$0 % 2] }, 1e-6)
        // the buffers under SpeeChain's names, and back
        let named = norm.namedBuffers
        #expect(named.map(\.name) == ["global_mean", "global_std", "global_batch"])
        #expect(named[2].values == [1])
        let restored = try FeatureNormalization(featureDim: 2)
        try restored.load(mean: named[0].values, std: named[1].values, batchCount: 1)
        #expect(try run(restored, Self.batch2, batchSize: 1, frames: 3, lengths: [3], training: false, epoch: 2) == y)
    }

    /// Under data parallelism each rank sums its utterances' statistics, the sums and batch sizes are summed over the
    /// ranks and divided by the global batch size: two simulated ranks ({u0} and {u1, u2}) reach the statistics of one
    /// rank holding all three, and the same buffers on both.
    @Test func twoRanksAverageOverTheGlobalBatch() throws {
        // u0, u1 from batch1 (padded to 4), u2 = batch2's utterance padded to 4 frames
        let u0: [Float] = Array(Self.batch1[0..<8]), u1: [Float] = Array(Self.batch1[8..<16])
        let u2: [Float] = Self.batch2 + [0, 0]
        let world = SimulatedAllreduce(ranks: 2)
        let ranks = [try FeatureNormalization(featureDim: 2), try FeatureNormalization(featureDim: 2)]
        let inputs: [([Float], Int, [Int])] = [(u0, 1, [3]), (u1 + u2, 2, [4, 3])]
        var outputs = [[Float]](repeating: [], count: 2)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 2) { r in
            let y = try? run(ranks[r], inputs[r].0, batchSize: inputs[r].1, frames: 4, lengths: inputs[r].2, epoch: 1) { p, n in
                world.sum(rank: r, p, n)
            }
            lock.lock(); outputs[r] = y ?? []; lock.unlock()
        }
        // (μ0 + μ1 + μ2)/3 = ((2,20) + (2,2) + (7,9))/3; σ likewise
        let mean = [(2.0 + 2 + 7) / 3, (20.0 + 2 + 9) / 3], std = [(1 + Self.s + 2) / 3, (10 + Self.s + 4) / 3]
        for r in 0..<2 {
            expectClose(ranks[r].mean!, mean, 1e-6, "rank \(r) mean")
            expectClose(ranks[r].std!, std, 1e-6, "rank \(r) std")
            #expect(!outputs[r].isEmpty)
        }
        let single = try FeatureNormalization(featureDim: 2)
        _ = try run(single, u0 + u1 + u2, batchSize: 3, frames: 4, lengths: [3, 4, 3], epoch: 1)
        expectClose(single.mean!, mean, 1e-6, "one rank")
        expectClose(outputs[0], try run(single, u0, batchSize: 1, frames: 4, lengths: [3], training: false, epoch: 1).map(Double.init), 1e-6, "rank 0 output")
        // one rank: an identity reduction is the same as none
        let identity = try FeatureNormalization(featureDim: 2)
        _ = try run(identity, Self.batch1, batchSize: 2, frames: 4, lengths: [3, 4], epoch: 1) { _, _ in }
        expectClose(identity.mean!, Self.mean1)
    }

    @Test func confAndBadInputAreOneLine() throws {
        #expect(try FeatureNormalization.make(.bool(true), featureDim: 80)?.maxEpochNum == 4)
        #expect(try FeatureNormalization.make(.bool(false), featureDim: 80) == nil)
        let custom = try FeatureNormalization.make(.map(["max_epoch_num": 2, "clamp": .double(1e-5)]), featureDim: 80)!
        #expect(custom.maxEpochNum == 2 && custom.clamp == 1e-5)
        func error(_ v: ConfigValue) -> String {
            do { _ = try FeatureNormalization.make(v, featureDim: 80); return "no error" } catch { return "\(error)" }
        }
        #expect(error(.map(["norm_type": "utterance"])) == "normalize: 'norm_type' must be 'global' (the only norm_type built; SpeeChain also has utterance, batch, group), found 'utterance'")
        #expect(error(.map(["max_epochs": 3])).hasPrefix("normalize: unknown key 'max_epochs'; valid keys: norm_type"))
        #expect(error(.string("yes")) == "module_conf: 'normalize' must be true, false or a conf mapping, found a string 'yes'")
        let norm = try FeatureNormalization(featureDim: 2)
        do {
            _ = try run(norm, [1, 2, 0, 0], batchSize: 1, frames: 2, lengths: [1], epoch: 1)
            Issue.record("one frame must fail")
        } catch {
            #expect("\(error)" == "normalize: utterance 0 has 1 frame: an unbiased std needs at least 2")
        }
    }

    @Test(.enabled(if: optimizedBuild, "allocation counts are only meaningful in optimised builds"))
    func aWarmCallAllocatesNothing() throws {
        let norm = try FeatureNormalization(featureDim: 80)
        var x = (0..<(4 * 50 * 80)).map { Float(sin(Double($0))) }
        let lengths = [50, 40, 30, 20]
        try x.withUnsafeMutableBufferPointer { p in
            try norm(p.baseAddress!, batchSize: 4, frames: 50, lengths: lengths, training: true, epoch: 1)
            malloc_counter_start()
            for e in 1...6 {
                try norm(p.baseAddress!, batchSize: 4, frames: 50, lengths: lengths, training: true, epoch: e)
                try norm(p.baseAddress!, batchSize: 4, frames: 50, lengths: lengths, training: false, epoch: e)
            }
            #expect(malloc_counter_stop() == 0)
        }
    }
}

/// An in-process stand-in for an MPI allreduce(sum) over `ranks` threads: each rank's buffer becomes the sum of all.
final class SimulatedAllreduce: @unchecked Sendable {
    private let condition = NSCondition()
    private let ranks: Int
    private var contributions: [Int: [Double]] = [:]
    private var taken = 0

    init(ranks: Int) { self.ranks = ranks }

    func sum(rank: Int, _ p: UnsafeMutablePointer<Double>, _ n: Int) {
        condition.lock()
        contributions[rank] = Array(UnsafeBufferPointer(start: p, count: n))
        condition.broadcast()
        while contributions.count < ranks { condition.wait() }
        for i in 0..<n { p[i] = (0..<ranks).reduce(0) { $0 + contributions[$1]![i] } }
        taken += 1
        condition.unlock()
    }
}
