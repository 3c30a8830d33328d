import Foundation
import Testing
@testable import SpeechainMPI

/// torch.nn.utils.clip_grad_norm_ over two disjoint ranges of one flat buffer: the total norm over both ranges,
/// the coefficient min(1, max_norm/(total + 1e-6)), the untouched values between and around the ranges.
@Suite struct GradientClippingTests {
    static let count = 60
    /// Lengths 17 and 18, so neither range is a multiple of a SIMD width.
    static let ranges = [3..<20, 29..<47]

    static func gradients(seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<count).map { _ in rng.uniform(-scale, scale) }
    }

    static func inRanges(_ i: Int) -> Bool { ranges.contains { $0.contains(i) } }

    /// (Σ|g|^p)^(1/p) over the ranges, or max|g| for p = ∞, in Double.
    static func referenceNorm(_ g: [Float], p: Double) -> Double {
        let values = (0..<count).filter(inRanges).map { abs(Double(g[$0])) }
        if p.isInfinite { return values.max() ?? 0 }
        return Foundation.pow(values.reduce(0) { $0 + Foundation.pow($1, p) }, 1 / p)
    }

    static let normTypes: [Double] = [1, 2, .infinity, 3]

    @Test(arguments: normTypes)
    func totalNormMatchesTheFormula(p: Double) {
        var g = Self.gradients(seed: 1)
        // Large values outside the ranges must not count.
        g[0] = 1000; g[25] = -1000; g[59] = 1000
        let want = Self.referenceNorm(g, p: p)
        let got = g.withUnsafeMutableBufferPointer { GradientClipping.totalNorm($0.baseAddress!, ranges: Self.ranges, normType: p) }
        #expect(abs(got - want) <= 1e-12 * want, "p=\(p): \(got) vs \(want)")
        // Sanity of the reference itself for p = 2: the Euclidean length of the concatenated ranges.
        if p == 2 {
            let squares = Self.ranges.flatMap { $0.map { Double(g[$0]) * Double(g[$0]) } }
            #expect(abs(want - squares.reduce(0, +).squareRoot()) <= 1e-12 * want)
        }
    }

    @Test(arguments: normTypes)
    func clipScalesByMaxNormOverTotalPlusEpsilonAndReturnsTheNormBeforeClipping(p: Double) {
        let original = Self.gradients(seed: 2, scale: 3)
        var g = original
        let total = Self.referenceNorm(original, p: p)
        let maxNorm = total / 4
        let returned = g.withUnsafeMutableBufferPointer {
            GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: maxNorm, normType: p)
        }
        #expect(abs(Double(returned) - total) <= 1e-6 * total, "returned \(returned), norm before clipping \(total)")
        let coef = min(1, maxNorm / (total + 1e-6))
        for i in 0..<Self.count {
            if Self.inRanges(i) {
                let want = Double(original[i]) * coef
                #expect(abs(Double(g[i]) - want) <= 1e-6 * abs(Double(original[i])), "i=\(i): \(g[i]) vs \(want)")
            } else {
                #expect(g[i] == original[i], "i=\(i) lies outside the ranges")
            }
        }
        // After clipping, the norm is max_norm (up to the 1e-6 in the denominator).
        let after = Self.referenceNorm(g, p: p)
        #expect(abs(after - maxNorm) <= 1e-5 * maxNorm)
    }

    @Test func theEpsilonInTheDenominatorMatters() {
        // With a total norm of 1e-6 the 1e-6 halves the coefficient: max_norm/(2e-6), not max_norm/1e-6.
        var g = [Float](repeating: 0, count: Self.count)
        g[5] = 1e-6
        let returned = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: 1e-7, normType: 2) }
        #expect(returned == 1e-6)
        let want = 1e-6 * 1e-7 / (1e-6 + 1e-6)
        #expect(abs(Double(g[5]) - want) <= 1e-4 * want, "\(g[5]) vs \(want)")
    }

    @Test(arguments: normTypes)
    func noChangeWhenTheNormIsBelowMaxNorm(p: Double) {
        let original = Self.gradients(seed: 3)
        var g = original
        let total = Self.referenceNorm(original, p: p)
        for maxNorm in [total * 1.5, total + 1e-3, 1e9] {
            let returned = g.withUnsafeMutableBufferPointer {
                GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: maxNorm, normType: p)
            }
            #expect(abs(Double(returned) - total) <= 1e-6 * total)
            #expect(g == original, "max_norm \(maxNorm) ≥ norm \(total): the coefficient is clamped to 1")
        }
    }

    @Test(arguments: [0.0, -1.0])
    func nonPositiveMaxNormOnlyMeasures(maxNorm: Double) {
        let original = Self.gradients(seed: 4, scale: 10)
        var g = original
        let returned = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: maxNorm, normType: 2) }
        let total = Self.referenceNorm(original, p: 2)
        #expect(abs(Double(returned) - total) <= 1e-6 * total)
        #expect(g == original)
    }

    static let badCases: [(Float, Double)] = [
        (.nan, 1), (.nan, 2), (.nan, .infinity), (.nan, 3),
        (.infinity, 1), (.infinity, 2), (.infinity, .infinity), (.infinity, 3),
        (-.infinity, 2), (-.infinity, .infinity),
    ]

    @Test(arguments: badCases)
    func nonFiniteGradientGivesANonFiniteNormAndNoClipping(bad: Float, p: Double) {
        for position in [Self.ranges[0].lowerBound, 11, Self.ranges[1].upperBound - 1] {
            var g = Self.gradients(seed: 5, scale: 5)
            g[position] = bad
            let before = g
            let returned = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: 0.1, normType: p) }
            #expect(!returned.isFinite, "\(bad) at \(position), p=\(p): norm \(returned)")
            if bad.isNaN { #expect(returned.isNaN, "NaN at \(position), p=\(p): norm \(returned)") }
            // The caller skips the update; the gradients are left as they were.
            #expect(zip(g, before).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
        }
    }

    @Test func nonFiniteValueOutsideTheRangesIsIgnored() {
        var g = Self.gradients(seed: 6)
        g[24] = .nan; g[50] = .infinity
        let returned = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0.baseAddress!, ranges: Self.ranges, maxNorm: 1e9, normType: 2) }
        #expect(returned.isFinite)
    }

    @Test func emptyRangesHaveZeroNorm() {
        var g = Self.gradients(seed: 7)
        for p in Self.normTypes {
            let n = g.withUnsafeMutableBufferPointer { GradientClipping.totalNorm($0.baseAddress!, ranges: [], normType: p) }
            #expect(n == 0, "p=\(p)")
        }
    }
}
