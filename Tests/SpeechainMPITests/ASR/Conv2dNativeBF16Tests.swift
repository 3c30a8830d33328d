import Foundation
import Testing
@testable import SpeechainMPI

/// Conv2d under bfloat16 autocast with the native products (BF16GEMM's kernels) against the emulation (float32 sgemm
/// over the rounded values), which ARASRAutocastReferenceTests holds to the PyTorch-derived reference. Both form the
/// same exact bfloat16 products and add them in float32 in different orders, so each float32 sum lies within
/// 1.01·n·2⁻²⁴·Σ|terms| of the exact one (NativeBF16Tests.bound) and the bfloat16 values rounded from two such sums
/// at most one bfloat16 spacing (2⁻⁷ of the magnitude) apart. The magnitudes Σ|terms| come from a float64
/// convolution written here.
@Suite(.enabled(if: BF16GEMM.isSupported, "this CPU lacks AVX512_BF16: the native products are not run"))
struct Conv2dNativeBF16Tests {
    struct Case: Sendable, CustomStringConvertible {
        let batch, cin, cout, height, width, kernel, stride: Int
        let bias: Bool
        var description: String { "\(batch)×\(cin)×\(height)×\(width) → \(cout), k\(kernel) s\(stride)\(bias ? " bias" : "")" }
    }
    static let cases = [
        Case(batch: 2, cin: 1, cout: 6, height: 13, width: 11, kernel: 3, stride: 2, bias: true),
        Case(batch: 3, cin: 7, cout: 5, height: 9, width: 17, kernel: 3, stride: 2, bias: false),
        Case(batch: 1, cin: 33, cout: 70, height: 15, width: 10, kernel: 3, stride: 1, bias: true),
    ]

    final class Harness {
        let c: Case
        let store = ParameterStore()
        let conv: Conv2d
        let x: FloatBuffer, y: FloatBuffer, dy: FloatBuffer, dx: FloatBuffer
        var outH: Int { conv.outputSize(c.height) }
        var outW: Int { conv.outputSize(c.width) }

        init(_ c: Case, products: BFloat16Products, dy dyValues: [Float]) {
            self.c = c
            conv = Conv2d(c.cin, c.cout, kernel: c.kernel, stride: c.stride, bias: c.bias)
            conv.bfloat16Products = products
            conv.declareParameters(in: store, prefix: "conv.", module: "m")
            store.allocate()
            var rng = Xoshiro256(seed: 21)
            conv.initialize(in: store, rng: &rng)
            store.gradients.copy(from: NativeBF16Tests.random(store.count, seed: 22, scale: 0x1p-6))
            x = FloatBuffer(NativeBF16Tests.random(c.batch * c.cin * c.height * c.width, seed: 23))
            y = FloatBuffer(count: c.batch * c.cout * conv.outputSize(c.height) * conv.outputSize(c.width))
            dy = FloatBuffer(dyValues)
            dx = FloatBuffer(count: x.count)
        }

        func run() -> (y: [Float], dx: [Float], g: [Float]) {
            conv.forward(x.pointer, y.pointer, batch: c.batch, height: c.height, width: c.width, amp: .bfloat16)
            conv.backward(x: x.pointer, dy: dy.pointer, dx: dx.pointer, batch: c.batch, height: c.height, width: c.width,
                          accumulate: true)
            return (y.toArray(), dx.toArray(), store.gradients.toArray())
        }
    }

    static func outputCount(_ c: Case) -> Int {
        let oh = (c.height - c.kernel) / c.stride + 1, ow = (c.width - c.kernel) / c.stride + 1
        return c.batch * c.cout * oh * ow
    }

    @Test(arguments: cases)
    func nativeMatchesTheEmulationWithinAccumulationOrder(c: Case) {
        let dy = NativeBF16Tests.bf16(NativeBF16Tests.random(Self.outputCount(c), seed: 24))
        let native = Harness(c, products: .native, dy: dy), emulated = Harness(c, products: .emulated, dy: dy)
        let g0 = native.store.gradients.toArray()
        let a = native.run(), e = emulated.run()
        #expect(native.conv.ranNative == (true, true))
        #expect(emulated.conv.ranNative == (false, false))

        // the magnitudes of every sum, from the rounded operands in float64
        let w = NativeBF16Tests.bf16(native.store.values.toArray(0..<(c.cout * c.cin * c.kernel * c.kernel)))
        let xp = NativeBF16Tests.bf16(native.x.toArray())
        let (oh, ow, k, s) = (native.outH, native.outW, c.kernel, c.stride)
        let patch = c.cin * k * k
        var yMag = [Double](repeating: 0, count: a.y.count), dxMag = [Double](repeating: 0, count: a.dx.count)
        var gMag = [Double](repeating: 0, count: w.count)
        for b in 0..<c.batch {
            for o in 0..<c.cout {
                for i in 0..<oh {
                    for j in 0..<ow {
                        let yi = ((b * c.cout + o) * oh + i) * ow + j
                        for ch in 0..<c.cin {
                            for u in 0..<k {
                                for v in 0..<k {
                                    let wi = ((o * c.cin + ch) * k + u) * k + v
                                    let xi = ((b * c.cin + ch) * c.height + s * i + u) * c.width + s * j + v
                                    yMag[yi] += abs(Double(w[wi]) * Double(xp[xi]))
                                    dxMag[xi] += abs(Double(w[wi]) * Double(dy[yi]))
                                    gMag[wi] += abs(Double(dy[yi]) * Double(xp[xi]))
                                }
                            }
                        }
                    }
                }
            }
        }
        let spacing = 0x1p-7
        var differing = 0
        for i in 0..<a.y.count {
            let (u, v) = (Double(a.y[i]), Double(e.y[i]))
            // rounded after the product and again after the bias: up to two spacings apart
            #expect(abs(u - v) <= 2 * NativeBF16Tests.bound(patch, yMag[i]) + 2 * spacing * max(abs(u), abs(v)), "y[\(i)] of \(c): \(u) vs \(v)")
            if u != v { differing += 1 }
        }
        for i in 0..<a.dx.count {
            let (u, v) = (Double(a.dx[i]), Double(e.dx[i]))
            #expect(abs(u - v) <= 2 * NativeBF16Tests.bound(c.cout * k * k, dxMag[i]) + spacing * max(abs(u), abs(v)), "dx[\(i)] of \(c): \(u) vs \(v)")
            if u != v { differing += 1 }
        }
        for i in 0..<w.count {
            let (ga, ge) = (Double(a.g[i]), Double(e.g[i]))
            let t = max(abs(ga), abs(ge)) + abs(Double(g0[i]))
            #expect(abs(ga - ge) <= 2 * NativeBF16Tests.bound(c.batch * oh * ow, gMag[i]) + spacing * t + 0x1p-23 * (abs(ga) + abs(ge)),
                    "dW[\(i)] of \(c): \(ga) vs \(ge)")
            if a.g[i] != e.g[i] { differing += 1 }
        }
        // a flip of a rounding needs a sum within ~n·2⁻²⁴ of a boundary 2⁻⁸ apart: rare
        let total = a.y.count + a.dx.count + w.count
        #expect(differing * 50 <= max(total, 50), "\(differing) of \(total) rounded values differ")
        // the bias gradient is the same sums of dy, rounded alike
        #expect(Array(a.g[w.count...]) == Array(e.g[w.count...]))
    }

    @Test func aGradientThatIsNotBFloat16FallsBackToTheEmulation() {
        let c = Self.cases[0]
        var dy = NativeBF16Tests.bf16(NativeBF16Tests.random(Self.outputCount(c), seed: 25))
        dy[17] += dy[17] * 0x1p-12
        let native = Harness(c, products: .native, dy: dy), emulated = Harness(c, products: .emulated, dy: dy)
        let a = native.run(), e = emulated.run()
        #expect(native.conv.ranNative == (true, false))
        #expect(a.dx == e.dx)
        #expect(a.g == e.g)
    }
}
