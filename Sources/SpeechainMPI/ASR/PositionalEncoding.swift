import Foundation

/// SpeeChain's `transformer.pos_enc.PositionalEncoding` ('mix', no emb_layernorm, no posenc_scale):
///
///     div_i = exp(2i·ln(10000)/d),  pe[t, 2i] = sin(t/div_i),  pe[t, 2i+1] = cos(t/div_i)   (float32, as torch)
///     y = dropout(x·(√d if emb_scale) + pe[t]);  dx = (√d if emb_scale)·dropout′(dy)
///
/// Under autocast with a p-valued x (the encoder's, after the prenet): x·√d is an op on a p tensor, p(x·√d), and
/// adding the float32 table promotes to float32; in backward the gradient of x·√d is p(g), that of x p(p(g)·√d).
public final class PositionalEncoding {
    public let dModel: Int
    public let embScale: Bool
    let dropout: Dropout
    private var table: [Float] = []
    private var tableFrames = 0
    private let summed = FloatBuffer(count: 0)
    let output = FloatBuffer(count: 0)
    private var rows = 0
    private var inputPrecision: ReducedPrecision?

    public init(dModel: Int, embScale: Bool, dropout: Float) {
        self.dModel = dModel; self.embScale = embScale; self.dropout = Dropout(p: dropout)
    }

    private func grow(to frames: Int) {
        guard frames > tableFrames else { return }
        let n = max(frames, 2 * tableFrames)
        table = [Float](repeating: 0, count: n * dModel)
        let factor = Float(log(10000.0) / Double(dModel))
        for i in stride(from: 0, to: dModel, by: 2) {
            let div = expf(Float(i) * factor)
            for t in 0..<n {
                let a = Float(t) / div
                table[t * dModel + i] = sinf(a)
                if i + 1 < dModel { table[t * dModel + i + 1] = cosf(a) }
            }
        }
        tableFrames = n
    }

    /// x [B, T, d] → `output` [B, T, d]; `inputPrecision`: x's dtype under autocast (nil: float32).
    public func forward(_ x: UnsafePointer<Float>, batch: Int, frames: Int, context: ForwardContext,
                        inputPrecision: ReducedPrecision? = nil) {
        grow(to: frames)
        let p = context.amp == nil ? nil : inputPrecision
        self.inputPrecision = p
        rows = batch * frames
        summed.resize(to: rows * dModel); output.resize(to: rows * dModel)
        let s: Float = embScale ? Float(dModel).squareRoot() : 1
        table.withUnsafeBufferPointer { pe in
            for b in 0..<batch {
                for t in 0..<frames {
                    let o = (b * frames + t) * dModel, row = pe.baseAddress! + t * dModel
                    if let p, embScale {
                        for j in 0..<dModel { summed.pointer[o + j] = x[o + j] * s }
                        p.round(summed.pointer + o, count: dModel)
                        for j in 0..<dModel { summed.pointer[o + j] += row[j] }
                    } else {
                        for j in 0..<dModel { summed.pointer[o + j] = x[o + j] * s + row[j] }
                    }
                }
            }
        }
        dropout.forward(Matrix(summed.pointer, rows: rows, cols: dModel), Matrix(output.pointer, rows: rows, cols: dModel), context: context)
    }

    /// dOutput → dx (overwritten; may be the same buffer).
    public func backward(_ dOutput: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        dropout.backward(x: Matrix(summed.pointer, rows: rows, cols: dModel), y: Matrix(output.pointer, rows: rows, cols: dModel),
                         dy: Matrix(UnsafeMutablePointer(mutating: dOutput), rows: rows, cols: dModel), dx: Matrix(dx, rows: rows, cols: dModel), accumulate: false)
        inputPrecision?.round(dx, count: rows * dModel)
        if embScale { Kernels.scale(dx, count: rows * dModel, by: Float(dModel).squareRoot()) }
        if embScale { inputPrecision?.round(dx, count: rows * dModel) }
    }
}
