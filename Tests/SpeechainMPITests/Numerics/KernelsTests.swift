import Foundation
import Testing
@testable import SpeechainMPI

/// Every SIMD kernel against a plain scalar loop, over lengths around the vector widths (16 for Float, 8 for the
/// Double accumulators) so that the vector body, the scalar tail and the empty case are all exercised. Every buffer
/// carries a guard zone after its end that must come back untouched.
@Suite struct KernelsTests {
    static let lengths = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100]
    static let guardCount = 20
    static let sentinel: Float = -12345.5

    /// A buffer of `count` values in [-2, 2) followed by a guard zone of sentinels.
    final class Guarded {
        let count: Int
        let pointer: UnsafeMutablePointer<Float>
        init(_ values: [Float]) {
            count = values.count
            pointer = .allocate(capacity: count + KernelsTests.guardCount)
            pointer.initialize(repeating: KernelsTests.sentinel, count: count + KernelsTests.guardCount)
            for (i, v) in values.enumerated() { pointer[i] = v }
        }
        convenience init(random count: Int, seed: UInt64, lo: Float = -2, hi: Float = 2) {
            var rng = Xoshiro256(seed: seed)
            self.init((0..<count).map { _ in rng.uniform(lo, hi) })
        }
        deinit { pointer.deallocate() }
        var values: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
        var guardIntact: Bool { (count..<(count + KernelsTests.guardCount)).allSatisfy { pointer[$0] == KernelsTests.sentinel } }
    }

    @Test(arguments: lengths)
    func fill(n: Int) {
        let x = Guarded(random: n, seed: 1)
        Kernels.fill(x.pointer, count: n, value: 3.25)
        #expect(x.values == [Float](repeating: 3.25, count: n))
        #expect(x.guardIntact)
    }

    @Test(arguments: lengths)
    func scale(n: Int) {
        let x = Guarded(random: n, seed: 2)
        let before = x.values
        Kernels.scale(x.pointer, count: n, by: -0.75)
        #expect(x.values == before.map { $0 * -0.75 })
        #expect(x.guardIntact)
    }

    @Test(arguments: lengths)
    func axpy(n: Int) {
        let x = Guarded(random: n, seed: 3), y = Guarded(random: n, seed: 4)
        let xs = x.values, ys = y.values
        Kernels.axpy(1.5, x.pointer, y.pointer, count: n)
        // a·x is rounded before the add in both the scalar reference and a non-fused SIMD body; allow a fused one too.
        for i in 0..<n {
            let want = ys[i] + 1.5 * xs[i]
            #expect(abs(y.values[i] - want) <= 1e-6 * max(1, abs(want)), "i=\(i)")
        }
        #expect(x.values == xs, "x is read only")
        #expect(y.guardIntact && x.guardIntact)
    }

    @Test(arguments: lengths)
    func add(n: Int) {
        let x = Guarded(random: n, seed: 5), y = Guarded(random: n, seed: 6)
        let xs = x.values, ys = y.values
        Kernels.add(x.pointer, into: y.pointer, count: n)
        #expect(y.values == zip(xs, ys).map { $0 + $1 })
        #expect(x.values == xs)
        #expect(y.guardIntact)
    }

    @Test(arguments: [(1, 1), (3, 15), (2, 16), (4, 17), (5, 33), (0, 7)])
    func addRowVector(rows: Int, cols: Int) {
        let bias = Guarded(random: cols, seed: 7), m = Guarded(random: rows * cols, seed: 8)
        let b = bias.values, before = m.values
        Kernels.addRowVector(bias.pointer, to: m.pointer, rows: rows, cols: cols)
        var want = before
        for r in 0..<rows { for c in 0..<cols { want[r * cols + c] += b[c] } }
        #expect(m.values == want)
        #expect(m.guardIntact)
    }

    @Test(arguments: [(1, 1), (3, 15), (2, 16), (4, 17), (5, 33), (0, 7)])
    func accumulateColumnSums(rows: Int, cols: Int) {
        let m = Guarded(random: rows * cols, seed: 9), out = Guarded(random: cols, seed: 10)
        let ms = m.values, start = out.values
        Kernels.accumulateColumnSums(m.pointer, rows: rows, cols: cols, into: out.pointer)
        // Row order of the additions is the same as the scalar loop's, so the sums agree exactly.
        var want = start
        for r in 0..<rows { for c in 0..<cols { want[c] += ms[r * cols + c] } }
        #expect(out.values == want)
        #expect(out.guardIntact)
    }

    @Test(arguments: lengths)
    func relu(n: Int) {
        var values = Guarded(random: n, seed: 11).values
        if n > 3 { values[1] = 0; values[2] = -0.0; values[3] = -.infinity }
        let x = Guarded(values), y = Guarded(random: n, seed: 12)
        Kernels.relu(x.pointer, y.pointer, count: n)
        let got = y.values
        for i in 0..<n {
            let want: Float = values[i] > 0 ? values[i] : 0
            #expect(got[i] == want, "i=\(i): relu(\(values[i])) = \(got[i])")
        }
        #expect(y.guardIntact)
    }

    @Test(arguments: lengths)
    func reluBackward(n: Int) {
        // y as relu produces it: zeros and positives; the gradient passes only where y > 0.
        var rng = Xoshiro256(seed: 13)
        let ys = (0..<n).map { _ -> Float in let v = rng.uniform(-1, 1); return v > 0 ? v : 0 }
        let y = Guarded(ys), dy = Guarded(random: n, seed: 14), dx = Guarded(random: n, seed: 15)
        let g = dy.values
        Kernels.reluBackward(y: y.pointer, dy: dy.pointer, dx: dx.pointer, count: n)
        #expect(dx.values == (0..<n).map { ys[$0] > 0 ? g[$0] : 0 })
        #expect(dx.guardIntact)
    }

    @Test(arguments: lengths)
    func multiply(n: Int) {
        let x = Guarded(random: n, seed: 16), y = Guarded(random: n, seed: 17), z = Guarded(random: n, seed: 18)
        Kernels.multiply(x.pointer, y.pointer, into: z.pointer, count: n)
        #expect(z.values == zip(x.values, y.values).map { $0 * $1 })
        #expect(z.guardIntact)
    }

    @Test(arguments: lengths)
    func sumOfSquares(n: Int) {
        let x = Guarded(random: n, seed: 19)
        var want = 0.0
        for v in x.values { want += Double(v) * Double(v) }
        let got = Kernels.sumOfSquares(x.pointer, count: n)
        #expect(abs(got - want) <= 1e-13 * max(want, 1), "\(got) vs \(want)")
    }

    @Test(arguments: lengths)
    func sumOfMagnitudes(n: Int) {
        let x = Guarded(random: n, seed: 20)
        var want = 0.0
        for v in x.values { want += abs(Double(v)) }
        let got = Kernels.sumOfMagnitudes(x.pointer, count: n)
        #expect(abs(got - want) <= 1e-13 * max(want, 1), "\(got) vs \(want)")
    }

    @Test(arguments: lengths)
    func maxMagnitude(n: Int) {
        let x = Guarded(random: n, seed: 21)
        var want: Float = 0
        for v in x.values { want = max(want, abs(v)) }
        #expect(Kernels.maxMagnitude(x.pointer, count: n) == want)
        // The largest magnitude negative and at the last position (the tail) is still found.
        if n > 0 {
            x.pointer[n - 1] = -7
            #expect(Kernels.maxMagnitude(x.pointer, count: n) == 7)
        }
    }

    @Test(arguments: lengths)
    func maxMagnitudeIsNaNWhenAnyValueIsNaN(n: Int) {
        for position in 0..<n {
            let x = Guarded(random: n, seed: 22)
            x.pointer[position] = .nan
            #expect(Kernels.maxMagnitude(x.pointer, count: n).isNaN, "NaN at \(position) of \(n)")
        }
    }

    @Test(arguments: lengths)
    func sumOfPowers(n: Int) {
        let x = Guarded(random: n, seed: 23)
        for p in [3.0, 1.5, 0.5] {
            var want = 0.0
            for v in x.values { want += Foundation.pow(abs(Double(v)), p) }
            let got = Kernels.sumOfPowers(x.pointer, count: n, p: p)
            #expect(abs(got - want) <= 1e-12 * max(want, 1), "p=\(p): \(got) vs \(want)")
        }
    }

    @Test(arguments: lengths)
    func allFiniteOnFiniteValues(n: Int) {
        // Large finite values must not be mistaken for infinities.
        var values = Guarded(random: n, seed: 24).values
        if n > 0 { values[n - 1] = .greatestFiniteMagnitude }
        if n > 1 { values[0] = -.greatestFiniteMagnitude }
        let x = Guarded(values)
        #expect(Kernels.allFinite(x.pointer, count: n))
    }

    static let nonFinite: [Float] = [.infinity, -.infinity, .nan]

    @Test(arguments: nonFinite)
    func allFiniteFindsANonFiniteValueAtEveryPosition(bad: Float) {
        let n = 37
        for position in 0..<n {
            let x = Guarded(random: n, seed: 25)
            x.pointer[position] = bad
            #expect(!Kernels.allFinite(x.pointer, count: n), "\(bad) at \(position)")
            // Counting only up to the bad value excludes it.
            #expect(Kernels.allFinite(x.pointer, count: position), "\(bad) at \(position), counted \(position)")
        }
    }

    @Test func allFiniteIgnoresValuesPastCount() {
        let x = Guarded(random: 37, seed: 26)
        // The guard zone (and beyond `count`) may hold anything.
        x.pointer[37] = .nan
        #expect(Kernels.allFinite(x.pointer, count: 37))
        x.pointer[20] = .infinity
        #expect(Kernels.allFinite(x.pointer, count: 20))
        #expect(!Kernels.allFinite(x.pointer, count: 21))
    }

    @Test(arguments: lengths)
    func scaleCheckingFiniteScalesLikeScale(n: Int) {
        let x = Guarded(random: n, seed: 27)
        let before = x.values
        #expect(Kernels.scaleCheckingFinite(x.pointer, count: n, by: 0.375))
        #expect(x.values == before.map { $0 * 0.375 })
        #expect(x.guardIntact)
    }

    /// Every position of a 37-value buffer (vector body and tail), for inf, NaN, and a finite value that the scale
    /// makes overflow; values past `count` are not looked at.
    @Test(arguments: [Float.infinity, -.infinity, .nan, 3e38])
    func scaleCheckingFiniteFindsEveryNonFiniteResult(bad: Float) {
        let n = 37
        for position in 0..<n {
            let x = Guarded(random: n, seed: 28)
            x.pointer[position] = bad
            #expect(!Kernels.scaleCheckingFinite(x.pointer, count: n, by: 4), "\(bad) at \(position)")
            let y = Guarded(random: n, seed: 28)
            y.pointer[position] = bad
            #expect(Kernels.scaleCheckingFinite(y.pointer, count: position, by: 4), "\(bad) at \(position), counted \(position)")
        }
    }
}
