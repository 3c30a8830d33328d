import Foundation
import Testing
@testable import SpeechainMPI

/// Linear's float32 forward runs, for batches of at most `Linear.transposedForwardMaxRows` rows, in our own AVX-512
/// kernel (`Float32Kernels.own`) or as yᵀ = W·xᵀ plus a transpose that adds the bias (`.openblas`), and as
/// y = x·Wᵀ plus a bias pass above that. Each against y_rc = b_c + Σ_k x_rk·W_ck summed in Double, at row counts on
/// both sides of the switch and of the kernel's 16-row transposes and 64-row panels, and widths that are not
/// multiples of its 6-row blocks of W or of the 16-column transposes. `.own` runs wherever the CPU has AVX-512F.
@Suite struct LinearOrientationTests {
    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    static let limit = Linear.transposedForwardMaxRows

    /// The layer's forward with each kernel this CPU runs, and (where AVX-512F exists) our kernel called directly —
    /// also below `Float32Kernels.minRows`, where Linear does not use it.
    enum Forward: CustomStringConvertible {
        case layer(Float32Kernels), ownKernel
        var description: String { if case .layer(let k) = self { return "Linear with \(k)" } else { return "f32_linear_forward" } }
        static var here: [Forward] {
            Float32Kernels.allCases.filter { Float32Kernels.effective($0) == $0 }.map { .layer($0) }
                + (Float32Kernels.isSupported ? [.ownKernel] : [])
        }
    }

    @Test(arguments: [(1, 5, 3), (7, 37, 19), (limit, 33, 40), (limit + 1, 33, 40), (300, 16, 17),
                      (1, 1, 1), (15, 16, 5), (16, 17, 6), (17, 200, 7), (63, 3, 13), (64, 64, 12), (65, 31, 11),
                      (129, 50, 64)] as [(Int, Int, Int)])
    func forwardMatchesTheFormula(rows: Int, inFeatures: Int, outFeatures: Int) throws {
        for bias in [true, false] {
          for forward in Forward.here {
            let layer = Linear(inFeatures, outFeatures, bias: bias)
            let store = ParameterStore()
            layer.declareParameters(in: store, prefix: "", module: "m")
            store.allocate()
            store.values.copy(from: Self.random(store.count, seed: 11), at: 0)
            let xs = Self.random(rows * inFeatures, seed: 12)
            let x = FloatBuffer(xs), y = FloatBuffer(count: rows * outFeatures, repeating: .nan)
            let w = store.values.toArray(0..<(outFeatures * inFeatures))
            let b = bias ? store.values.toArray((outFeatures * inFeatures)..<store.count) : []
            switch forward {
            case .layer(let kernel):
                layer.float32Kernels = kernel
                layer.forward(Matrix(x.pointer, rows: rows, cols: inFeatures), Matrix(y.pointer, rows: rows, cols: outFeatures),
                              context: ForwardContext(training: true))
            case .ownKernel:
                if rows > Float32Kernels.maxRows { continue }
                let values = store.values.pointer
                Float32Kernels.forward(x: x.pointer, w: values, bias: bias ? UnsafePointer(values + outFeatures * inFeatures) : nil,
                                          y: y.pointer, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                          workspace: BF16GEMM.Workspace())
            }
            var worst = 0.0
            for r in 0..<rows {
                for c in 0..<outFeatures {
                    var s = 0.0, magnitude = 0.0
                    for k in 0..<inFeatures {
                        let term = Double(xs[r * inFeatures + k]) * Double(w[c * inFeatures + k])
                        s += term; magnitude += abs(term)
                    }
                    if bias { s += Double(b[c]); magnitude += abs(Double(b[c])) }
                    // float32 products and sums: n·2⁻²⁴ of the terms' magnitudes bounds the rounding
                    let bound = Double(inFeatures + 1) * 0x1p-24 * magnitude
                    worst = max(worst, abs(Double(y.pointer[r * outFeatures + c]) - s) / max(bound, .leastNormalMagnitude))
                }
            }
            #expect(worst <= 1, "\(forward): rows \(rows), \(inFeatures) → \(outFeatures), bias \(bias): error \(worst)× the rounding bound")
          }
        }
    }

    /// Our kernel sums each output over k in order, whatever the batch: the first rows of a batch of 256 (four 64-row
    /// panels) are bit for bit those of batches of 17 and 65 run after it (the workspace then holds the larger
    /// batch's rows past the new ones).
    @Test func ownKernelRowsDoNotDependOnTheBatch() throws {
        guard Float32Kernels.isSupported else { return }   // no AVX-512F: only the OpenBLAS forward runs here
        let (inFeatures, outFeatures) = (70, 23)
        let layer = Linear(inFeatures, outFeatures)
        layer.float32Kernels = .own
        let store = ParameterStore()
        layer.declareParameters(in: store, prefix: "", module: "m")
        store.allocate()
        store.values.copy(from: Self.random(store.count, seed: 21), at: 0)
        let xs = Self.random(256 * inFeatures, seed: 22)
        let x = FloatBuffer(xs)
        func run(_ rows: Int) -> [Float] {
            let y = FloatBuffer(count: rows * outFeatures, repeating: .nan)
            layer.forward(Matrix(x.pointer, rows: rows, cols: inFeatures), Matrix(y.pointer, rows: rows, cols: outFeatures),
                          context: ForwardContext(training: true))
            return y.toArray()
        }
        let all = run(256), few = run(17), oneMore = run(65)
        #expect(Array(all[0..<(17 * outFeatures)]) == few)
        #expect(Array(all[0..<(65 * outFeatures)]) == oneMore)
        #expect(all.allSatisfy { $0.isFinite })
    }

    /// The default: our kernel on the CPU it was measured faster on (AMD family 25 with AVX-512), OpenBLAS elsewhere
    /// and wherever AVX-512F is missing.
    @Test func theOwnKernelIsPreferredWhereItWasMeasuredFaster() {
        let zen4 = BLASKernels.CPUIdentity(vendor: "AuthenticAMD", family: 25)
        #expect(Float32Kernels.preferred(cpu: zen4, supported: true) == .own)
        #expect(Float32Kernels.preferred(cpu: zen4, supported: false) == .openblas)
        #expect(Float32Kernels.preferred(cpu: .init(vendor: "AuthenticAMD", family: 26), supported: true) == .openblas)
        #expect(Float32Kernels.preferred(cpu: .init(vendor: "GenuineIntel", family: 6), supported: true) == .openblas)
        #expect(Float32Kernels.preferred(cpu: nil, supported: true) == .openblas)
        #expect(Float32Kernels.effective(.own) == (Float32Kernels.isSupported ? .own : .openblas))
    }
}
