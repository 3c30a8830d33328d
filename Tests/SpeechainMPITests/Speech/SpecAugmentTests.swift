import Foundation
import MallocCounter
import Testing
@testable import SpeechainMPI

/// SpeeChain's specaug.py rules. The draws cannot be torch's (see SpecAugment's doc), so the tests check the rules
/// every draw must obey, and the deterministic parts (the warp's interpolation) against torch itself.
@Suite struct SpecAugmentTests {
    static let (batch, frames, dim) = (3, 100, 80)
    static let lengths = [100, 80, 60]
    /// Distinct nonzero values, so that a zero can only come from a mask.
    static func features() -> [Float] { (0..<(batch * frames * dim)).map { 1 + Float($0 % 9973) * 1e-4 } }

    /// SpeeChain's ASR recipe conf.
    static func recipe(timeWarp: Bool = false, featNorm: Bool = true) throws -> SpecAugment {
        try SpecAugment.make(.map(["freq_mask_width": 15, "freq_mask_num": 4, "time_mask_width": .double(0.05),
                                   "time_mask_num": 5, "time_warp": .bool(timeWarp)]),
                             featureDim: dim, featNorm: featNorm)!
    }

    func augment(_ s: SpecAugment, _ x: [Float], seed: UInt64, lengths: [Int] = lengths, frames: Int = frames) throws -> [Float] {
        var y = x
        var rng = Xoshiro256(seed: seed)
        try y.withUnsafeMutableBufferPointer { try s($0.baseAddress!, batchSize: lengths.count, frames: frames, lengths: lengths, using: &rng) }
        return y
    }

    @Test(arguments: 0..<20) func masksObeyTheirBoundsAndZeroExactlyTheirCells(seed: UInt64) throws {
        let s = try Self.recipe()
        let x = Self.features()
        let y = try augment(s, x, seed: seed)
        let (B, T, D) = (Self.batch, Self.frames, Self.dim)
        let shortest = 60
        #expect(s.lastWarp == nil)
        #expect(s.lastFreqMasks.count == B * 4 && s.lastTimeMasks.count == B * 5)
        let widestFreq = s.lastFreqMasks.map(\.width).max()!
        for m in s.lastFreqMasks {
            #expect(m.width >= 0 && m.width <= 15)
            #expect(m.start >= 0 && m.start < max(1, D - widestFreq))   // so start + width <= D
        }
        let upper = Int(0.05 * Double(shortest))   // 3 frames
        let widestTime = s.lastTimeMasks.map(\.width).max()!
        for m in s.lastTimeMasks {
            #expect(m.width >= 0 && m.width <= upper)
            #expect(m.start >= 0 && m.start < max(1, shortest - widestTime))
            #expect(m.start + m.width <= shortest)   // time masks stay inside every utterance
        }
        for b in 0..<B {
            let cols = Set(s.lastFreqMasks[(b * 4)..<(b * 4 + 4)].flatMap { $0.start..<($0.start + $0.width) })
            let rows = Set(s.lastTimeMasks[(b * 5)..<(b * 5 + 5)].flatMap { $0.start..<($0.start + $0.width) })
            #expect(rows.allSatisfy { $0 < shortest })
            for t in 0..<T {
                for k in 0..<D {
                    let i = (b * T + t) * D + k
                    // SpeeChain's frequency masks cover the padded frames too; time masks only rows inside L
                    if rows.contains(t) || cols.contains(k) { #expect(y[i] == 0) } else { #expect(y[i] == x[i]) }
                }
            }
        }
    }

    /// Over many draws the widths reach both ends of their ranges (U{0…15}, U{0…3}).
    @Test func widthsCoverTheirRanges() throws {
        let s = try Self.recipe()
        var freq = Set<Int>(), time = Set<Int>()
        for seed in 0..<200 as Range<UInt64> {
            _ = try augment(s, Self.features(), seed: seed)
            s.lastFreqMasks.forEach { freq.insert($0.width) }
            s.lastTimeMasks.forEach { time.insert($0.width) }
        }
        #expect(freq == Set(0...15))
        #expect(time == Set(0...3))
    }

    @Test func deterministicForASeed() throws {
        let s = try Self.recipe(timeWarp: true)
        let a = try augment(s, Self.features(), seed: 42), b = try augment(s, Self.features(), seed: 42)
        let c = try augment(s, Self.features(), seed: 43)
        #expect(a == b)
        #expect(a != c)
    }

    /// The interpolation against torch.nn.functional.interpolate(bicubic, align_corners=True) at a fixed centre and
    /// position (Resources/speech/timewarp.npy, made by mel_ref.py).
    @Test func timeWarpMatchesTorchInterpolate() throws {
        let ref = try MelReference.load().timewarp
        let data = try NPY.readFloat32Matrix(contentsOf: TestResources.url("speech/timewarp.npy")).values
        let n = ref.batch * ref.frames * ref.dim
        var x = Array(data[0..<n])
        let expected = Array(data[n..<(2 * n)])
        let s = try SpecAugment(featureDim: ref.dim, freqMask: false, freqMaskWidth: (0, 2), timeMask: false)
        x.withUnsafeMutableBufferPointer { p in
            for b in 0..<ref.batch {
                s.warp(p.baseAddress! + b * ref.frames * ref.dim, center: ref.center, position: ref.position, shortest: ref.minlen)
            }
        }
        let worst = zip(x, expected).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-5, "max |swift − torch| = \(worst)")
    }

    /// The warp's rule on random draws: c ∈ [W+1, L−W−1], p ∈ [c−W, c+W−1]; rows ≥ L untouched; row 0, row p and
    /// row L−1 are the source rows 0, c and L−1; a column constant in time stays constant; too short a batch
    /// (L ≤ 2W+1) is not warped.
    @Test(arguments: 0..<10) func timeWarpKeepsItsFixedPoints(seed: UInt64) throws {
        let s = try SpecAugment(featureDim: 4, freqMask: false, freqMaskWidth: (0, 2), timeMask: false)
        let (T, D) = (50, 4), lengths = [50, 40]
        var x = [Float](repeating: 0, count: 2 * T * D)
        for b in 0..<2 { for t in 0..<T { for k in 0..<D { x[(b * T + t) * D + k] = k == 3 ? 7 : Float(sin(Double(t * (k + 1) + b))) } } }
        let y = try augment(s, x, seed: seed, lengths: lengths, frames: T)
        let (c, p) = try #require(s.lastWarp)
        let L = 40
        #expect(c >= 6 && c <= L - 6)
        #expect(p >= c - 5 && p <= c + 4)
        for b in 0..<2 {
            func row(_ a: [Float], _ t: Int) -> ArraySlice<Float> { a[((b * T + t) * D)..<((b * T + t + 1) * D)] }
            for t in L..<T { #expect(row(y, t) == row(x, t)) }
            for (out, src) in [(0, 0), (p, c), (L - 1, L - 1)] + (p > 1 ? [(p - 1, c - 1)] : []) {
                for (u, v) in zip(row(y, out), row(x, src)) { #expect(abs(u - v) < 1e-5, "row \(out) from \(src)") }
            }
            for t in 0..<T { #expect(abs(y[(b * T + t) * D + 3] - 7) < 1e-5) }
        }
        let short = try augment(s, x, seed: seed, lengths: [50, 11], frames: T)   // 11 ≤ 2·5 + 1
        #expect(s.lastWarp == nil && short == x)
    }

    /// Without normalised features the masks hold the mean of the whole (warped) tensor.
    @Test func unnormalisedFeaturesAreMaskedWithTheMean() throws {
        let s = try Self.recipe(featNorm: false)
        let x = Self.features()
        let mean = Float(x.reduce(0.0) { $0 + Double($1) } / Double(x.count))
        let y = try augment(s, x, seed: 3)
        let changed = zip(x, y).filter { $0 != $1 }
        #expect(!changed.isEmpty)
        #expect(changed.allSatisfy { $0.1 == mean })
    }

    @Test func confAndErrors() throws {
        let s = try SpecAugment.make(.bool(true), featureDim: 80, featNorm: true)!
        #expect(s.timeWarp && s.timeWarpWindow == 5 && s.freqMaskWidth == (0, 30) && s.freqMaskNum == 2 && s.timeMaskNum == 2)
        #expect(s.timeMaskWidth == (.frames(0), .fraction(0.05)))
        let listed = try SpecAugment.make(.map(["time_mask_width": .list([2, 20]), "freq_mask_width": .list([5, 10])]), featureDim: 80, featNorm: true)!
        #expect(listed.timeMaskWidth == (.frames(2), .frames(20)) && listed.freqMaskWidth == (5, 10))
        #expect(try SpecAugment.make(.bool(false), featureDim: 80, featNorm: true) == nil)
        func error(_ v: ConfigValue, dim: Int = 80) -> String {
            do { _ = try SpecAugment.make(v, featureDim: dim, featNorm: true); return "no error" } catch { return "\(error)" }
        }
        #expect(error(.map(["freq_mask_width": 80])) == "specaug: 'freq_mask_width' must be smaller than the feature dimension 80, found 80")
        #expect(error(.map(["time_warp": false, "freq_mask": false, "time_mask": false])) == "specaug: time_warp, freq_mask and time_mask are all false: at least one augmentation is needed")
        #expect(error(.map(["time_warp_mode": "nearest"])) == "specaug: 'time_warp_mode' must be 'bicubic' or 'bilinear', found 'nearest'")
        #expect(error(.map(["freq_mask_widht": 3])).hasPrefix("specaug: unknown key 'freq_mask_widht'; valid keys: time_warp"))
        #expect(error(.map(["time_mask_width": "long"])).hasPrefix("specaug: 'time_mask_width' must be frames (an integer) or a fraction"))
        let aug = try Self.recipe()
        var x = Self.features()
        var rng = Xoshiro256(seed: 1)
        do {
            try x.withUnsafeMutableBufferPointer { try aug($0.baseAddress!, batchSize: 3, frames: 100, lengths: [100, 101, 3], using: &rng) }
            Issue.record("a length past the frames must fail")
        } catch {
            #expect("\(error)" == "specaug: utterance 1 has 101 frames, outside 1...100")
        }
    }

    @Test(.enabled(if: optimizedBuild, "allocation counts are only meaningful in optimised builds"))
    func aWarmCallAllocatesNothing() throws {
        let s = try Self.recipe(timeWarp: true)
        var x = Self.features()
        var rng = Xoshiro256(seed: 9)
        let lengths = Self.lengths
        try x.withUnsafeMutableBufferPointer { p in
            try s(p.baseAddress!, batchSize: 3, frames: 100, lengths: lengths, using: &rng)
            malloc_counter_start()
            for _ in 0..<10 { try s(p.baseAddress!, batchSize: 3, frames: 100, lengths: lengths, using: &rng) }
            #expect(malloc_counter_stop() == 0)
        }
    }
}
