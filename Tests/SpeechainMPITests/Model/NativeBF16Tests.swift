import Foundation
import Testing
@testable import SpeechainMPI

/// The native bfloat16 products (BF16GEMM, AVX512_BF16) against float64 references and against the emulation.
///
/// Bounds come from the error of a float32 sum: adding n terms in any order, with exact products, leaves
/// |computed − exact| ≤ γ·Σ|terms| with γ = (n−1)·u/(1 − (n−1)·u) ≤ 1.01·n·u, u = 2⁻²⁴. Two float32 sums of the same
/// terms therefore differ by at most twice that. Inputs are normal floats of moderate size, so no product or sum is
/// subnormal (which vdpbf16ps would flush). Shapes have odd sizes and tails past every block of the kernels
/// (64-column panels, 6-row tiles, 32-value rows, 256-row chunks, pairs along the reduction).
@Suite struct NativeBF16Tests {
    static let native = BF16GEMM.isSupported
    /// rows M, inFeatures K, outFeatures N
    struct Shape: Sendable, CustomStringConvertible {
        let m, k, n: Int
        init(_ m: Int, _ k: Int, _ n: Int) { self.m = m; self.k = k; self.n = n }
        var description: String { "\(m)×\(k)→\(n)" }
    }
    static let shapes: [Shape] = [
        Shape(1, 1, 1), Shape(2, 3, 5), Shape(7, 33, 19), Shape(13, 2, 1), Shape(6, 64, 64), Shape(65, 31, 67),
        Shape(3, 100, 130), Shape(17, 129, 6), Shape(64, 97, 300), Shape(9, 520, 70),
    ]

    static func random(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.normal() * scale }
    }

    static func bf16(_ v: [Float]) -> [Float] { v.map { ReducedPrecisionTests.reference(.bfloat16, $0) } }

    /// Σ_i a(i)·b(i) in float64 and Σ|a(i)·b(i)|, over exactly representable float32 products.
    static func dot(_ n: Int, _ a: (Int) -> Float, _ b: (Int) -> Float) -> (sum: Double, magnitude: Double) {
        var s = 0.0, m = 0.0
        for i in 0..<n { let t = Double(a(i)) * Double(b(i)); s += t; m += abs(t) }
        return (s, m)
    }

    /// The float32 accumulation bound for a sum of `n` terms of total magnitude `magnitude`.
    static func bound(_ n: Int, _ magnitude: Double) -> Double { 1.01 * Double(max(n, 1)) * 0x1p-24 * magnitude }

    // MARK: the kernels against float64

    @Test(.enabled(if: native), arguments: shapes)
    func forwardIsAFloat32SumOfExactProducts(shape: Shape) {
        let (m, k, n) = (shape.m, shape.k, shape.n)
        let x = Self.random(m * k, seed: 1), w = Self.random(n * k, seed: 2), b = Self.bf16(Self.random(n, seed: 3))
        var y = [Float](repeating: .nan, count: m * n)
        let ws = BF16GEMM.Workspace()
        BF16GEMM.forward(x: x, w: w, bias: b, y: &y, rows: m, inFeatures: k, outFeatures: n, workspace: ws)
        let xp = Self.bf16(x), wp = Self.bf16(w)
        for i in 0..<m {
            for o in 0..<n {
                let (s, mag) = Self.dot(k, { xp[i * k + $0] }, { wp[o * k + $0] })
                let err = abs(Double(y[i * n + o]) - (s + Double(b[o])))
                #expect(err <= Self.bound(k + 1, mag + abs(Double(b[o]))), "y[\(i), \(o)] of \(shape): \(y[i * n + o]) vs \(s + Double(b[o]))")
            }
        }
    }

    @Test(.enabled(if: native), arguments: shapes)
    func inputGradientIsAFloat32SumOfExactProducts(shape: Shape) {
        let (m, k, n) = (shape.m, shape.k, shape.n)
        let dy = Self.bf16(Self.random(m * n, seed: 4)), w = Self.random(n * k, seed: 5)
        var dx = [Float](repeating: .nan, count: m * k)
        BF16GEMM.inputGradient(dy: dy, w: w, dx: &dx, rows: m, inFeatures: k, outFeatures: n, workspace: BF16GEMM.Workspace())
        let wp = Self.bf16(w)
        for i in 0..<m {
            for c in 0..<k {
                let (s, mag) = Self.dot(n, { dy[i * n + $0] }, { wp[$0 * k + c] })
                #expect(abs(Double(dx[i * k + c]) - s) <= Self.bound(n, mag), "dx[\(i), \(c)] of \(shape): \(dx[i * k + c]) vs \(s)")
            }
        }
    }

    @Test(.enabled(if: native), arguments: shapes)
    func weightGradientIsTheRoundedSumAddedIntoTheBuffer(shape: Shape) {
        let (m, k, n) = (shape.m, shape.k, shape.n)
        let dy = Self.bf16(Self.random(m * n, seed: 6)), x = Self.random(m * k, seed: 7)
        var g = [Float](repeating: 0, count: n * k)
        let ws = BF16GEMM.Workspace()
        BF16GEMM.accumulateWeightGradient(dy: dy, x: x, into: &g, rows: m, inFeatures: k, outFeatures: n, workspace: ws)
        let xp = Self.bf16(x)
        for o in 0..<n {
            for c in 0..<k {
                let (s, mag) = Self.dot(m, { dy[$0 * n + o] }, { xp[$0 * k + c] })
                let got = g[o * k + c]
                #expect(Self.representable(got), "dW is a bfloat16 value")
                // bf16(s') for a float32 sum s' within the bound of s: the rounding of s, unless s lies within the
                // bound of a rounding boundary, and then the neighbouring bfloat16 value (half a spacing away)
                let e = Self.bound(m, mag)
                let lo = ReducedPrecisionTests.reference(.bfloat16, Float(s - e)), hi = ReducedPrecisionTests.reference(.bfloat16, Float(s + e))
                #expect(min(lo, hi) <= got && got <= max(lo, hi), "dW[\(o), \(c)] of \(shape): \(got) vs bf16(\(s))")
            }
        }
        // a second call adds the same bfloat16 values again: doubling is exact
        let once = g
        BF16GEMM.accumulateWeightGradient(dy: dy, x: x, into: &g, rows: m, inFeatures: k, outFeatures: n, workspace: ws)
        #expect(g == once.map { 2 * $0 })
    }

    static func representable(_ v: Float) -> Bool { v.bitPattern & 0xFFFF == 0 }

    // MARK: a Linear layer, native against emulated

    /// A Linear over its own parameters, with its input, output and gradient buffers.
    final class Harness {
        let store = ParameterStore()
        let linear: Linear
        let m: Int
        let x: FloatBuffer, y: FloatBuffer, dy: FloatBuffer, dx: FloatBuffer

        init(_ shape: Shape, products: BFloat16Products, dy dyValues: [Float], seed: UInt64 = 8) {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            self.m = m
            linear = Linear(k, n)
            linear.bfloat16Products = products
            linear.declareParameters(in: store, prefix: "l.", module: "l")
            store.allocate()
            var rng = Xoshiro256(seed: seed)
            linear.initialize(in: store, rng: &rng)
            store.gradients.copy(from: NativeBF16Tests.random(n * k + n, seed: 9, scale: 0x1p-6))
            x = FloatBuffer(NativeBF16Tests.random(m * k, seed: 10))
            y = FloatBuffer(count: m * n); dy = FloatBuffer(dyValues); dx = FloatBuffer(count: m * k)
        }

        func run(_ amp: ReducedPrecision = .bfloat16) -> (y: [Float], dx: [Float], g: [Float]) {
            let k = linear.inFeatures, n = linear.outFeatures
            let xm = Matrix(x.pointer, rows: m, cols: k), ym = Matrix(y.pointer, rows: m, cols: n)
            linear.forward(xm, ym, context: ForwardContext(training: true, amp: amp))
            linear.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: m, cols: n), dx: Matrix(dx.pointer, rows: m, cols: k),
                            accumulate: true)
            return (y.toArray(), dx.toArray(), store.gradients.toArray())
        }
    }

    @Test(.enabled(if: native), arguments: shapes)
    func nativeLinearMatchesTheEmulationWithinAccumulationOrder(shape: Shape) {
        let (m, k, n) = (shape.m, shape.k, shape.n)
        let dy = Self.bf16(Self.random(m * n, seed: 11))
        let nativeLayer = Harness(shape, products: .native, dy: dy), emulatedLayer = Harness(shape, products: .emulated, dy: dy)
        let a = nativeLayer.run(), e = emulatedLayer.run()
        #expect(nativeLayer.linear.ranNative == (true, true))
        #expect(emulatedLayer.linear.ranNative == (false, false))

        let w = Self.bf16(nativeLayer.store.values.toArray()), xp = Self.bf16(nativeLayer.x.toArray())
        let g0 = Harness(shape, products: .emulated, dy: dy).store.gradients.toArray()
        // y: unrounded float32 sums of the same k + 1 terms (the Linear leaves the output's rounding to its container)
        for i in 0..<m {
            for o in 0..<n {
                let (_, mag) = Self.dot(k, { xp[i * k + $0] }, { w[o * k + $0] })
                let bias = abs(Double(w[n * k + o]))
                #expect(abs(Double(a.y[i * n + o]) - Double(e.y[i * n + o])) <= 2 * Self.bound(k + 1, mag + bias), "y[\(i), \(o)]")
            }
        }
        // dx and dW: both bfloat16 roundings of float32 sums within twice the bound of each other, so at most one
        // bfloat16 spacing (2⁻⁷ of the magnitude) apart; dW then added to the same float32 buffer
        var differing = 0
        for i in 0..<m {
            for c in 0..<k {
                let (_, mag) = Self.dot(n, { dy[i * n + $0] }, { w[$0 * k + c] })
                let (u, v) = (Double(a.dx[i * k + c]), Double(e.dx[i * k + c]))
                #expect(abs(u - v) <= 2 * Self.bound(n, mag) + 0x1p-7 * max(abs(u), abs(v)), "dx[\(i), \(c)]")
                if u != v { differing += 1 }
            }
        }
        for o in 0..<n {
            for c in 0..<k {
                let (_, mag) = Self.dot(m, { dy[$0 * n + o] }, { xp[$0 * k + c] })
                // g0 + dW_p, each side rounded once more to float32
                let (ga, ge) = (Double(a.g[o * k + c]), Double(e.g[o * k + c]))
                let t = max(abs(ga), abs(ge)) + abs(Double(g0[o * k + c]))
                #expect(abs(ga - ge) <= 2 * Self.bound(m, mag) + 0x1p-7 * t + 0x1p-23 * (abs(ga) + abs(ge)), "dW[\(o), \(c)]")
                if a.g[o * k + c] != e.g[o * k + c] { differing += 1 }
            }
        }
        // a flip of the rounding needs a sum within ~n·2⁻²⁴ of a boundary 2⁻⁸ apart: rare
        #expect(differing * 100 <= max(m * k + n * k, 100), "\(differing) rounded values differ")
        // db is the same column sum, rounded alike
        #expect(Array(a.g[(n * k)...]) == Array(e.g[(n * k)...]))
    }

    @Test(.enabled(if: native))
    func aGradientThatIsNotBFloat16FallsBackToTheEmulation() {
        // autocast's dy of a bfloat16 output is bfloat16 (the containers round it); one that is not cannot go through
        // bfloat16 products unchanged, so the backward takes the emulation's float32 dy and gives its result exactly
        let shape = Shape(5, 40, 70)
        var dy = Self.bf16(Self.random(5 * 70, seed: 12))
        dy[17] += dy[17] * 0x1p-12
        let nativeLayer = Harness(shape, products: .native, dy: dy), emulatedLayer = Harness(shape, products: .emulated, dy: dy)
        let a = nativeLayer.run(), e = emulatedLayer.run()
        #expect(nativeLayer.linear.ranNative == (true, false))
        #expect(a.dx == e.dx)
        #expect(a.g == e.g)
    }

    @Test func emulationCanBeForcedAndFloat16IsAlwaysEmulated() {
        let shape = Shape(4, 24, 40)
        let dy = Self.bf16(Self.random(4 * 40, seed: 13))
        let forced = Harness(shape, products: .emulated, dy: dy)
        _ = forced.run()
        #expect(forced.linear.ranNative == (false, false))
        let half = Harness(shape, products: .native, dy: dy)
        _ = half.run(.float16)
        #expect(half.linear.ranNative == (false, false))
        let asked = Harness(shape, products: .native, dy: dy)
        _ = asked.run()
        #expect(asked.linear.ranNative == (Self.native, Self.native), "native runs exactly where the CPU has it")
        #expect(BF16GEMM.effective(.native) == (Self.native ? .native : .emulated))
        #expect(BF16GEMM.effective(.emulated) == .emulated)
    }

    @Test(.enabled(if: native))
    func theEmulatedPathIsFloat32SgemmOverRoundedValues() {
        // the forced emulation is exactly the sgemm of the rounded operands (one block at this size): the fallback
        // path a CPU without AVX512_BF16 runs
        let (m, k, n) = (3, 20, 9)
        let layer = Harness(Shape(m, k, n), products: .emulated, dy: Self.bf16(Self.random(m * n, seed: 14)))
        let r = layer.run()
        let v = Self.bf16(layer.store.values.toArray()), xp = Self.bf16(layer.x.toArray())
        var y = [Float](repeating: 0, count: m * n)
        BLAS.sgemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: xp, lda: k, b: v, ldb: k, beta: 0, c: &y, ldc: n)
        for i in 0..<m { for o in 0..<n { y[i * n + o] += v[n * k + o] } }
        #expect(r.y == y)
    }
}
