import Foundation
import Testing
@testable import SpeechainMPI

/// Linear's float32 weight gradient in our own kernel (`Float32Kernels.weightGradient`, `f32_linear_weight_gradient`):
/// g_ok ← g_ok + Σ_m dy_mo·x_mk against the same sum in Double, and its Σ g² of the new g against Σ g² in Double — at
/// row counts on both sides of the 16-row transposes of dy, widths that are not multiples of the kernel's 6-row
/// blocks or of its 64-column panels and 16-lane vectors, and g already holding a gradient (it accumulates).
/// Runs wherever the CPU has AVX-512F.
@Suite struct LinearWeightGradientTests {
    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    @Test(arguments: [(1, 1, 1), (1, 5, 3), (7, 37, 19), (16, 64, 6), (17, 65, 7), (33, 130, 13), (64, 16, 12),
                      (65, 200, 5), (129, 50, 64), (256, 63, 17), (300, 17, 2)] as [(Int, Int, Int)])
    func ownWeightGradientMatchesTheFormula(rows: Int, inFeatures: Int, outFeatures: Int) throws {
        guard Float32Kernels.isSupported else { return }   // no AVX-512F: OpenBLAS computes every weight gradient here
        let dy = Self.random(rows * outFeatures, seed: 21), x = Self.random(rows * inFeatures, seed: 22)
        let g0 = Self.random(outFeatures * inFeatures, seed: 23)
        // g with guard values after it: the kernel must write exactly N·K floats
        let guardCount = 37
        let g = FloatBuffer(g0 + [Float](repeating: 12345, count: guardCount))
        let dyBuffer = FloatBuffer(dy), xBuffer = FloatBuffer(x)
        let sum = Float32Kernels.weightGradient(dy: dyBuffer.pointer, x: xBuffer.pointer, g: g.pointer, rows: rows,
                                                inFeatures: inFeatures, outFeatures: outFeatures,
                                                workspace: BF16GEMM.Workspace(), sumOfSquares: true)
        var worst = 0.0, squares = 0.0
        for o in 0..<outFeatures {
            for k in 0..<inFeatures {
                var s = Double(g0[o * inFeatures + k]), magnitude = abs(s)
                for m in 0..<rows {
                    let p = Double(dy[m * outFeatures + o]) * Double(x[m * inFeatures + k])
                    s += p; magnitude += abs(p)
                }
                let got = Double(g.pointer[o * inFeatures + k])
                worst = max(worst, abs(got - s) / max(magnitude, 1e-30))
                squares += got * got   // Σ g² of the values the kernel left
            }
        }
        #expect(worst <= 4e-7 * Double(rows + 1), "\(rows) rows × \(inFeatures) → \(outFeatures): relative error \(worst)")
        let reported = try #require(sum)
        #expect(abs(reported - squares) <= 1e-6 * squares, "Σ g² \(reported) against \(squares)")
        #expect(g.toArray((outFeatures * inFeatures)..<g.count) == [Float](repeating: 12345, count: guardCount))
        // without the sum: the same gradient, bit for bit
        let again = FloatBuffer(g0)
        let none = Float32Kernels.weightGradient(dy: dyBuffer.pointer, x: xBuffer.pointer, g: again.pointer, rows: rows,
                                                 inFeatures: inFeatures, outFeatures: outFeatures,
                                                 workspace: BF16GEMM.Workspace(), sumOfSquares: false)
        #expect(none == nil)
        #expect(again.toArray() == g.toArray(0..<(outFeatures * inFeatures)))
    }

    /// dy, x and g each end right before a PROT_NONE page: the kernel reads and writes nothing past them (a partial
    /// panel or vector is loaded and stored under a mask).
    @Test func ownWeightGradientTouchesNothingPastItsOperands() throws {
        guard Float32Kernels.isSupported else { return }
        let (rows, inFeatures, outFeatures) = (19, 37, 11)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        func guarded(_ values: [Float]) throws -> (UnsafeMutablePointer<Float>, () -> Void) {
            let region = try #require(mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
            #expect(region != MAP_FAILED)
            #expect(mprotect(region + page, page, PROT_NONE) == 0)
            let p = (region + page - values.count * 4).bindMemory(to: Float.self, capacity: values.count)
            p.update(from: values, count: values.count)
            return (p, { munmap(region, 2 * page) })
        }
        let dyValues = Self.random(rows * outFeatures, seed: 31), xValues = Self.random(rows * inFeatures, seed: 32)
        let g0 = Self.random(outFeatures * inFeatures, seed: 33)
        let (dy, freeDy) = try guarded(dyValues), (x, freeX) = try guarded(xValues), (g, freeG) = try guarded(g0)
        defer { freeDy(); freeX(); freeG() }
        Float32Kernels.weightGradient(dy: dy, x: x, g: g, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                      workspace: BF16GEMM.Workspace(), sumOfSquares: true)
        let reference = FloatBuffer(g0), dyCopy = FloatBuffer(dyValues), xCopy = FloatBuffer(xValues)
        BLAS.sgemm(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: rows, a: dyCopy.pointer,
                   lda: outFeatures, b: xCopy.pointer, ldb: inFeatures, beta: 1, c: reference.pointer, ldc: inFeatures)
        for i in 0..<(outFeatures * inFeatures) {
            #expect(abs(g[i] - reference.pointer[i]) <= 1e-5 * max(1, abs(reference.pointer[i])))
        }
    }

    /// Through the layer: with `own`, a backward while the tally records leaves Σ g² of the new weight and bias
    /// gradients as records (equal to Double sums over the buffer), and the gradients equal OpenBLAS's; without
    /// recording, or with OpenBLAS, the layer forgets the records it would make stale.
    @Test func linearRecordsOrForgetsItsGradientsSumsOfSquares() throws {
        guard Float32Kernels.isSupported else { return }
        let (rows, inFeatures, outFeatures) = (24, 40, 13)
        var gradients: [Float32Kernels: [Float]] = [:]
        for kernel in [Float32Kernels.own, .openblas] {
            let layer = Linear(inFeatures, outFeatures)
            layer.float32Kernels = kernel
            let store = ParameterStore()
            layer.declareParameters(in: store, prefix: "", module: "m")
            store.allocate()
            store.values.copy(from: Self.random(store.count, seed: 41), at: 0)
            store.gradients.copy(from: Self.random(store.count, seed: 42), at: 0)   // an earlier micro-batch's
            let x = FloatBuffer(Self.random(rows * inFeatures, seed: 43)), dy = FloatBuffer(Self.random(rows * outFeatures, seed: 44))
            let y = FloatBuffer(count: rows * outFeatures), dx = FloatBuffer(count: rows * inFeatures)
            let xm = Matrix(x.pointer, rows: rows, cols: inFeatures), ym = Matrix(y.pointer, rows: rows, cols: outFeatures)
            layer.forward(xm, ym, context: ForwardContext(training: true))
            store.normTally.recording = true
            layer.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: rows, cols: outFeatures),
                           dx: Matrix(dx.pointer, rows: rows, cols: inFeatures), accumulate: true)
            store.normTally.recording = false
            gradients[kernel] = store.gradients.toArray()
            let weights = outFeatures * inFeatures
            let taken = store.normTally.take([0..<store.count])
            if kernel == .own {
                let g = store.gradients.toArray().map(Double.init)
                let expected = g.reduce(0) { $0 + $1 * $1 }
                #expect(taken.values == store.count && taken.rest.isEmpty, "weight and bias recorded")
                #expect(abs(taken.sumOfSquares - expected) <= 1e-6 * expected)
                // a backward that does not record forgets both
                store.normTally.record(offset: 0, count: weights, sumOfSquares: 1)
                store.normTally.record(offset: weights, count: outFeatures, sumOfSquares: 1)
                layer.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: rows, cols: outFeatures), dx: nil, accumulate: true)
                #expect(store.normTally.recordedTensors == 0)
            } else {
                #expect(taken.values == 0 && taken.rest == [0..<store.count], "OpenBLAS's product records nothing")
                store.normTally.record(offset: 0, count: weights, sumOfSquares: 1)
                store.normTally.recording = true
                layer.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: rows, cols: outFeatures), dx: nil, accumulate: true)
                store.normTally.recording = false
                #expect(store.normTally.recordedTensors == 0, "a write without a sum forgets the stale record")
            }
        }
        let own = try #require(gradients[.own]), openblas = try #require(gradients[.openblas])
        for (a, b) in zip(own, openblas) { #expect(abs(a - b) <= 1e-5 * max(1, abs(b))) }
    }
}
