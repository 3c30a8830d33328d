import Foundation
import Testing
@testable import SpeechainMPI

/// Linear's float32 forward runs as yᵀ = W·xᵀ plus a transpose that adds the bias for batches of at most
/// `Linear.transposedForwardMaxRows` rows, and as y = x·Wᵀ plus a bias pass above that. Both against
/// y_rc = b_c + Σ_k x_rk·W_ck summed in Double, at row counts on both sides of the switch and widths that are not
/// multiples of the transpose's 16-column blocks.
@Suite struct LinearOrientationTests {
    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    static let limit = Linear.transposedForwardMaxRows

    @Test(arguments: [(1, 5, 3), (7, 37, 19), (limit, 33, 40), (limit + 1, 33, 40), (300, 16, 17)] as [(Int, Int, Int)])
    func forwardMatchesTheFormula(rows: Int, inFeatures: Int, outFeatures: Int) throws {
        for bias in [true, false] {
            let layer = Linear(inFeatures, outFeatures, bias: bias)
            let store = ParameterStore()
            layer.declareParameters(in: store, prefix: "", module: "m")
            store.allocate()
            store.values.copy(from: Self.random(store.count, seed: 11), at: 0)
            let xs = Self.random(rows * inFeatures, seed: 12)
            let x = FloatBuffer(xs), y = FloatBuffer(count: rows * outFeatures, repeating: .nan)
            layer.forward(Matrix(x.pointer, rows: rows, cols: inFeatures), Matrix(y.pointer, rows: rows, cols: outFeatures),
                          context: ForwardContext(training: true))
            let w = store.values.toArray(0..<(outFeatures * inFeatures))
            let b = bias ? store.values.toArray((outFeatures * inFeatures)..<store.count) : []
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
            #expect(worst <= 1, "rows \(rows), \(inFeatures) → \(outFeatures), bias \(bias): error \(worst)× the rounding bound")
        }
    }
}
