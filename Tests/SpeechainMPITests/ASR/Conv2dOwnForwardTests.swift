import Foundation
import Testing
@testable import SpeechainMPI

/// Conv2d's float32 forward and weight gradient with each kernel this CPU runs (`Float32Kernels`: our `f32_conv_forward`, which unfolds
/// 64 positions at a time into a panel, and im2col + OpenBLAS) against a float64 convolution written here:
/// y = relu?(b + Σ_{c,u,v} W·x) within (patch + 1)·2⁻²⁴·(Σ|terms| + |b|) — float32 products and sums, in any order.
/// Stride 2 (runs along rows of x, panels starting at and inside an output row) and strides 1 and 3 (gathers),
/// positions filling one panel, several and a part of the last, output channels not a multiple of the 6-row blocks,
/// with and without bias and the fused ReLU. The weight gradient (`f32_conv_weight_gradient`: panels of 64 patch
/// entries × all positions, no unfolded copy) against g₀ + Σ_{n,i,j} dy·x in float64, added to a gradient already there;
/// the input gradient (`f32_conv_input_gradient`: Wᵀ·dy for a few channels at a time, folded while in cache) against
/// the same sums scattered back in float64, with and without the ReLU mask.
@Suite struct Conv2dOwnForwardTests {
    struct Case: Sendable, CustomStringConvertible {
        let batch, cin, cout, height, width, kernel, stride: Int
        var description: String { "\(batch)×\(cin)×\(height)×\(width) → \(cout), k\(kernel) s\(stride)" }
    }
    static let cases = [
        // 10×11 positions: the second panel starts inside an output row (at column 9), as the ASR prenet's do
        Case(batch: 2, cin: 8, cout: 13, height: 21, width: 23, kernel: 3, stride: 2),
        Case(batch: 1, cin: 9, cout: 6, height: 41, width: 33, kernel: 3, stride: 2),     // 20×16: five full panels
        Case(batch: 2, cin: 8, cout: 7, height: 12, width: 10, kernel: 3, stride: 1),     // gathers
        Case(batch: 1, cin: 16, cout: 5, height: 23, width: 31, kernel: 2, stride: 3),    // patch of 64, gathers
        Case(batch: 1, cin: 1, cout: 4, height: 9, width: 11, kernel: 3, stride: 2),      // patch 9: OpenBLAS in any case
        Case(batch: 2, cin: 8, cout: 70, height: 11, width: 13, kernel: 3, stride: 2),    // two panels of channels, one partial
    ]

    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// The values at the end of a fresh page, right before a page that may not be read or written (a touch past them
    /// stops the test process with SIGSEGV); unmap the region returned (2 pages) afterwards.
    static func guarded(_ values: [Float]) throws -> (UnsafeMutablePointer<Float>, UnsafeMutableRawPointer) {
        let region = try #require(mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        #expect(region != MAP_FAILED)
        #expect(mprotect(region + page, page, PROT_NONE) == 0)
        let p = (region + page - values.count * 4).bindMemory(to: Float.self, capacity: values.count)
        p.update(from: values, count: values.count)
        return (p, region)
    }

    /// A convolution on the given kernels (by default a 3×3 stride-2 one on ours), its parameters random.
    static func makeConv(_ cin: Int, _ cout: Int, kernel: Int = 3, stride: Int = 2, bias: Bool = true,
                         on kernels: Float32Kernels = .own, seed: UInt64) -> (Conv2d, ParameterStore) {
        let conv = Conv2d(cin, cout, kernel: kernel, stride: stride, bias: bias)
        conv.float32Kernels = kernels
        let store = ParameterStore()
        conv.declareParameters(in: store, prefix: "conv.", module: "m")
        store.allocate()
        store.values.copy(from: random(store.count, seed: seed), at: 0)
        return (conv, store)
    }

    @Test(arguments: cases)
    func forwardMatchesTheFormula(_ c: Case) throws {
        let kernels = Float32Kernels.allCases.filter { Float32Kernels.effective($0) == $0 }
        for kernel in kernels {
            for bias in [true, false] {
                for relu in [false, true] {
                    let (conv, store) = Self.makeConv(c.cin, c.cout, kernel: c.kernel, stride: c.stride, bias: bias,
                                                      on: kernel, seed: 31)
                    let oh = conv.outputSize(c.height), ow = conv.outputSize(c.width), patch = c.cin * c.kernel * c.kernel
                    let xs = Self.random(c.batch * c.cin * c.height * c.width, seed: 32)
                    let x = FloatBuffer(xs), y = FloatBuffer(count: c.batch * c.cout * oh * ow, repeating: .nan)
                    conv.forward(x.pointer, y.pointer, batch: c.batch, height: c.height, width: c.width, relu: relu)
                    let w = store.values.toArray(0..<(c.cout * patch))
                    let b = bias ? store.values.toArray((c.cout * patch)..<store.count) : []
                    var worst = 0.0
                    for n in 0..<c.batch {
                        for o in 0..<c.cout {
                            for i in 0..<oh {
                                for j in 0..<ow {
                                    var s = bias ? Double(b[o]) : 0, magnitude = abs(s)
                                    for ch in 0..<c.cin {
                                        for u in 0..<c.kernel {
                                            for v in 0..<c.kernel {
                                                let xv = xs[((n * c.cin + ch) * c.height + c.stride * i + u) * c.width + c.stride * j + v]
                                                let term = Double(w[((o * c.cin + ch) * c.kernel + u) * c.kernel + v]) * Double(xv)
                                                s += term; magnitude += abs(term)
                                            }
                                        }
                                    }
                                    if relu { s = max(s, 0) }
                                    let got = Double(y.pointer[((n * c.cout + o) * oh + i) * ow + j])
                                    let bound = Double(patch + 1) * 0x1p-24 * magnitude
                                    worst = max(worst, abs(got - s) / max(bound, .leastNormalMagnitude))
                                }
                            }
                        }
                    }
                    #expect(worst <= 1, "\(kernel), \(c), bias \(bias), relu \(relu): error \(worst)× the rounding bound")
                }
            }
        }
    }

    @Test(arguments: cases)
    func weightGradientMatchesTheFormula(_ c: Case) throws {
        for kernel in Float32Kernels.allCases where Float32Kernels.effective(kernel) == kernel {
            let (conv, store) = Self.makeConv(c.cin, c.cout, kernel: c.kernel, stride: c.stride, on: kernel, seed: 61)
            let g0 = Self.random(store.count, seed: 62)
            store.gradients.copy(from: g0, at: 0)   // an earlier micro-batch's
            let oh = conv.outputSize(c.height), ow = conv.outputSize(c.width), patch = c.cin * c.kernel * c.kernel, n = oh * ow
            let xs = Self.random(c.batch * c.cin * c.height * c.width, seed: 63), dys = Self.random(c.batch * c.cout * n, seed: 64)
            let x = FloatBuffer(xs), y = FloatBuffer(count: c.batch * c.cout * n), dy = FloatBuffer(dys)
            conv.forward(x.pointer, y.pointer, batch: c.batch, height: c.height, width: c.width)
            conv.backward(x: x.pointer, dy: dy.pointer, dx: nil, batch: c.batch, height: c.height, width: c.width, accumulate: true)
            let g = store.gradients.toArray()
            var worst = 0.0
            for o in 0..<c.cout {
                for ch in 0..<c.cin {
                    for u in 0..<c.kernel {
                        for v in 0..<c.kernel {
                            let q = ((o * c.cin + ch) * c.kernel + u) * c.kernel + v
                            var s = Double(g0[q]), magnitude = abs(s)
                            for b in 0..<c.batch {
                                for i in 0..<oh {
                                    for j in 0..<ow {
                                        let xv = xs[((b * c.cin + ch) * c.height + c.stride * i + u) * c.width + c.stride * j + v]
                                        let term = Double(dys[(b * c.cout + o) * n + i * ow + j]) * Double(xv)
                                        s += term; magnitude += abs(term)
                                    }
                                }
                            }
                            let bound = Double(c.batch * n + 2) * 0x1p-24 * magnitude
                            worst = max(worst, abs(Double(g[q]) - s) / max(bound, .leastNormalMagnitude))
                        }
                    }
                }
            }
            #expect(worst <= 1, "\(kernel), \(c): dW error \(worst)× the rounding bound")
            // the bias gradient: g₀ + Σ dy
            for o in 0..<c.cout {
                var s = Double(g0[c.cout * patch + o])
                for b in 0..<c.batch { for p in 0..<n { s += Double(dys[(b * c.cout + o) * n + p]) } }
                #expect(abs(Double(g[c.cout * patch + o]) - s) <= 1e-5 * max(1, abs(s)))
            }
        }
    }

    /// dx (overwritten; the batch's other utterances untouched by each) against Σ W·dy in float64 scattered back to
    /// the patch positions, and with a ReLU mask shaped as x: exactly 0 where the mask is ≤ 0, the same sum elsewhere.
    /// Each dx value is at most ⌈k/s⌉² patch entries' sums over Cout products: bound (Cout + k² + 1)·2⁻²⁴·Σ|terms|.
    @Test(arguments: cases)
    func inputGradientMatchesTheFormula(_ c: Case) throws {
        for kernel in Float32Kernels.allCases where Float32Kernels.effective(kernel) == kernel {
            for masked in [false, true] {
                let (conv, store) = Self.makeConv(c.cin, c.cout, kernel: c.kernel, stride: c.stride, on: kernel, seed: 81)
                let oh = conv.outputSize(c.height), ow = conv.outputSize(c.width), patch = c.cin * c.kernel * c.kernel
                let n = oh * ow, area = c.height * c.width
                let xs = Self.random(c.batch * c.cin * area, seed: 82), dys = Self.random(c.batch * c.cout * n, seed: 83)
                let masks = Self.random(c.batch * c.cin * area, seed: 84)
                let x = FloatBuffer(xs), y = FloatBuffer(count: c.batch * c.cout * n), dy = FloatBuffer(dys)
                let mask = FloatBuffer(masks), dx = FloatBuffer(count: c.batch * c.cin * area, repeating: .nan)
                conv.forward(x.pointer, y.pointer, batch: c.batch, height: c.height, width: c.width)
                conv.backward(x: x.pointer, dy: dy.pointer, dx: dx.pointer, reluMask: masked ? UnsafePointer(mask.pointer) : nil,
                              batch: c.batch, height: c.height, width: c.width, accumulate: false)
                let w = store.values.toArray(0..<(c.cout * patch))
                var sums = [Double](repeating: 0, count: dx.count), magnitudes = [Double](repeating: 0, count: dx.count)
                for b in 0..<c.batch {
                    for o in 0..<c.cout {
                        for i in 0..<oh {
                            for j in 0..<ow {
                                let d = Double(dys[(b * c.cout + o) * n + i * ow + j])
                                for ch in 0..<c.cin {
                                    for u in 0..<c.kernel {
                                        for v in 0..<c.kernel {
                                            let q = ((b * c.cin + ch) * c.height + c.stride * i + u) * c.width + c.stride * j + v
                                            let term = Double(w[((o * c.cin + ch) * c.kernel + u) * c.kernel + v]) * d
                                            sums[q] += term; magnitudes[q] += abs(term)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                var worst = 0.0, wrongZeros = 0
                for q in 0..<dx.count {
                    let got = Double(dx.pointer[q])
                    if masked, masks[q] <= 0 {
                        if got != 0 { wrongZeros += 1 }
                        continue
                    }
                    let bound = Double(c.cout + c.kernel * c.kernel + 1) * 0x1p-24 * magnitudes[q]
                    worst = max(worst, abs(got - sums[q]) / max(bound, .leastNormalMagnitude))
                }
                #expect(worst <= 1, "\(kernel), \(c), mask \(masked): dx error \(worst)× the rounding bound")
                #expect(wrongZeros == 0, "\(kernel), \(c): \(wrongZeros) masked values are not 0")
            }
        }
    }

    /// The input-gradient kernel reads nothing past dy or the mask and writes nothing past dx: each placed right
    /// before a page that may not be touched; the result equals OpenBLAS's.
    @Test func ownInputGradientStaysInsideItsBuffers() throws {
        guard Float32Kernels.isSupported else { return }
        // k 3, s 2: 4×5 positions, not a multiple of the 16-lane vectors (the last one of each dy row is partial)
        let (cin, cout, h, w, n) = (8, 5, 9, 11, 20)
        let (conv, _) = Self.makeConv(cin, cout, seed: 91)
        let page = Self.page, guarded = Self.guarded
        let xs = Self.random(cin * h * w, seed: 92), dys = Self.random(cout * n, seed: 93), masks = Self.random(cin * h * w, seed: 94)
        let (dy, rdy) = try guarded(dys), (mask, rmask) = try guarded(masks)
        let (dx, rdx) = try guarded([Float](repeating: .nan, count: cin * h * w))
        defer { munmap(rdy, 2 * page); munmap(rmask, 2 * page); munmap(rdx, 2 * page) }
        let x = FloatBuffer(xs), y = FloatBuffer(count: cout * n)
        conv.forward(x.pointer, y.pointer, batch: 1, height: h, width: w)
        conv.backward(x: x.pointer, dy: dy, dx: dx, reluMask: mask, batch: 1, height: h, width: w, accumulate: false)
        let own = Array(UnsafeBufferPointer(start: dx, count: cin * h * w))
        conv.float32Kernels = .openblas
        let reference = FloatBuffer(count: cin * h * w), dyCopy = FloatBuffer(dys), maskCopy = FloatBuffer(masks)
        conv.forward(x.pointer, y.pointer, batch: 1, height: h, width: w)
        conv.backward(x: x.pointer, dy: dyCopy.pointer, dx: reference.pointer, reluMask: UnsafePointer(maskCopy.pointer),
                      batch: 1, height: h, width: w, accumulate: false)
        for (a, b) in zip(own, reference.toArray()) { #expect(abs(a - b) <= 1e-5 * max(1, abs(b))) }
    }

    /// The weight-gradient kernel reads nothing past x or dy: both placed right before a page that may not be read.
    @Test func ownWeightGradientReadsNothingPastItsInputs() throws {
        guard Float32Kernels.isSupported else { return }
        let (cin, cout, h, w) = (8, 5, 9, 9)   // k 3, s 2: 4×4 positions, the last patch ends on x's last element
        let (conv, store) = Self.makeConv(cin, cout, seed: 71)
        let page = Self.page, guarded = Self.guarded
        let xs = Self.random(cin * h * w, seed: 72), dys = Self.random(cout * 16, seed: 73)
        let (x, rx) = try guarded(xs), (dy, rdy) = try guarded(dys)
        defer { munmap(rx, 2 * page); munmap(rdy, 2 * page) }
        let y = FloatBuffer(count: cout * 16)
        conv.forward(x, y.pointer, batch: 1, height: h, width: w)
        conv.backward(x: x, dy: dy, dx: nil, batch: 1, height: h, width: w, accumulate: true)
        let own = store.gradients.toArray()
        store.zeroGradients([0..<store.count])
        conv.float32Kernels = .openblas
        let xCopy = FloatBuffer(xs), dyCopy = FloatBuffer(dys)
        conv.forward(xCopy.pointer, y.pointer, batch: 1, height: h, width: w)
        conv.backward(x: xCopy.pointer, dy: dyCopy.pointer, dx: nil, batch: 1, height: h, width: w, accumulate: true)
        for (a, b) in zip(own, store.gradients.toArray()) { #expect(abs(a - b) <= 1e-5 * max(1, abs(b))) }
    }

    /// Our kernel reads nothing past x: an utterance whose last patch ends on x's last element, placed right before
    /// a page that may not be read (a read past it would stop the test process with SIGSEGV).
    @Test func ownForwardReadsNothingPastTheInput() throws {
        guard Float32Kernels.isSupported else { return }
        let (cin, h, w) = (8, 9, 9)   // k 3, s 2: 4×4 positions, the last one's patch ends on x's last element
        let (conv, _) = Self.makeConv(cin, 5, seed: 51)
        let count = cin * h * w
        let (x, region) = try Self.guarded(Self.random(count, seed: 52))
        defer { munmap(region, 2 * Self.page) }
        let y = FloatBuffer(count: 5 * 4 * 4), reference = FloatBuffer(count: 5 * 4 * 4)
        conv.forward(x, y.pointer, batch: 1, height: h, width: w)
        conv.float32Kernels = .openblas
        let copy = FloatBuffer(Array(UnsafeBufferPointer(start: x, count: count)))
        conv.forward(copy.pointer, reference.pointer, batch: 1, height: h, width: w)
        for i in 0..<y.count { #expect(abs(y.pointer[i] - reference.pointer[i]) <= 1e-5 * max(1, abs(reference.pointer[i]))) }
    }

    /// The same utterance alone and in a batch gives the same bits with our kernel (each sum in patch order).
    @Test func ownForwardOfAnUtteranceDoesNotDependOnTheBatch() throws {
        guard Float32Kernels.isSupported else { return }   // no AVX-512F: only im2col + OpenBLAS runs here
        let (conv, _) = Self.makeConv(12, 9, seed: 41)
        let (h, w) = (29, 25), each = 12 * h * w, out = 9 * conv.outputSize(h) * conv.outputSize(w)
        let x = FloatBuffer(Self.random(3 * each, seed: 42))
        let all = FloatBuffer(count: 3 * out), one = FloatBuffer(count: out)
        conv.forward(x.pointer, all.pointer, batch: 3, height: h, width: w)
        conv.forward(x.pointer + 2 * each, one.pointer, batch: 1, height: h, width: w)
        #expect(all.toArray(2 * out..<3 * out) == one.toArray())
    }
}
