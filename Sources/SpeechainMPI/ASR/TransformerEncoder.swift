/// SpeeChain's `transformer.encoder.TransformerEncoder` with layernorm_first (pre-LN), LayerNorm eps 1e-6:
///
///     x ← posenc(x)   (no emb_scale by default for the encoder)
///     per layer:  h = x + dropout(MHA(LN_att(x)))   (keys past each length masked)
///                 x = h + dropout(FFN(LN_ffn(h)))
///     y = LN(x)
///
/// State-dict names: `posenc` has no parameters; `trfm_layers.<i>.multihead_att.*`, `.feed_forward.*`,
/// `.att_layernorm.*`, `.fdfwd_layernorm.*`; `layernorm.*`.
public final class TransformerEncoder {
    public struct Conf {
        public var dModel = 512, heads = 4, layers = 8, ffnSize = 2048
        public var ffnActivation = "ReLU"
        public var posencDropout: Float = 0.1, attDropout: Float = 0.1, ffnDropout: Float = 0.1, resDropout: Float = 0.1
        public var scaleByHead = false
        public var embScale = false
        public init() {}
    }

    final class Block {
        let attNorm: LayerNorm, attention: MultiHeadAttention, attDropout: Dropout
        let ffnNorm: LayerNorm, ffn: FeedForward, ffnDropout: Dropout
        let normed = FloatBuffer(count: 0), attDropped = FloatBuffer(count: 0), h = FloatBuffer(count: 0)
        let normed2 = FloatBuffer(count: 0), ffnDropped = FloatBuffer(count: 0), y = FloatBuffer(count: 0)
        var input: UnsafePointer<Float>?

        init(_ c: Conf, activation: SpeechainMPI.Layer) throws {
            attNorm = LayerNorm(c.dModel, eps: 1e-6); ffnNorm = LayerNorm(c.dModel, eps: 1e-6)
            attention = try MultiHeadAttention(dModel: c.dModel, heads: c.heads, dropout: c.attDropout, scaleByHead: c.scaleByHead)
            attDropout = Dropout(p: c.resDropout); ffnDropout = Dropout(p: c.resDropout)
            ffn = FeedForward(dModel: c.dModel, hiddenSize: c.ffnSize, activation: activation, dropout: c.ffnDropout)
        }
    }

    public let conf: Conf
    let posenc: PositionalEncoding
    let layers: [Block]
    let finalNorm: LayerNorm
    let output = FloatBuffer(count: 0)
    private let dA = FloatBuffer(count: 0), dB = FloatBuffer(count: 0), dC = FloatBuffer(count: 0)
    private var batch = 0, frames = 0, lengths: [Int] = []
    private var precision: ReducedPrecision?

    public init(_ conf: Conf, activation: () throws -> SpeechainMPI.Layer) throws {
        self.conf = conf
        posenc = PositionalEncoding(dModel: conf.dModel, embScale: conf.embScale, dropout: conf.posencDropout)
        layers = try (0..<conf.layers).map { _ in try Block(conf, activation: try activation()) }
        finalNorm = LayerNorm(conf.dModel, eps: 1e-6)
    }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        for (i, l) in layers.enumerated() {
            let p = "\(prefix)trfm_layers.\(i)."
            l.attention.declareParameters(in: store, prefix: p + "multihead_att.", module: module)
            l.ffn.declareParameters(in: store, prefix: p + "feed_forward.", module: module)
            l.attNorm.declareParameters(in: store, prefix: p + "att_layernorm.", module: module)
            l.ffnNorm.declareParameters(in: store, prefix: p + "fdfwd_layernorm.", module: module)
        }
        finalNorm.declareParameters(in: store, prefix: prefix + "layernorm.", module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        for l in layers {
            l.attention.initialize(in: store, rng: &rng); l.ffn.initialize(in: store, rng: &rng)
            l.attNorm.initialize(in: store, rng: &rng); l.ffnNorm.initialize(in: store, rng: &rng)
        }
        finalNorm.initialize(in: store, rng: &rng)
    }

    /// x [B, T, d] with lengths → `output` [B, T, d]. Under autocast x is p-valued (the prenet's output); the
    /// residual stream and the output are float32, each branch p-valued (docs/amp-arasr.md).
    public func forward(_ x: UnsafePointer<Float>, batch: Int, frames: Int, lengths: [Int], context: ForwardContext) {
        self.batch = batch; self.frames = frames
        let amp = context.amp
        precision = amp
        self.lengths.removeAll(keepingCapacity: true); self.lengths.append(contentsOf: lengths)   // own storage: sharing the caller's would copy on its next write
        let d = conf.dModel, n = batch * frames
        posenc.forward(x, batch: batch, frames: frames, context: context, inputPrecision: amp)
        var cur = UnsafePointer(posenc.output.pointer)
        for l in layers {
            l.input = cur
            for b in [l.normed, l.attDropped, l.h, l.normed2, l.ffnDropped, l.y] { b.resize(to: n * d) }
            let m = { (p: UnsafeMutablePointer<Float>) in Matrix(p, rows: n, cols: d) }
            l.attNorm.forward(Matrix(UnsafeMutablePointer(mutating: cur), rows: n, cols: d), m(l.normed.pointer), context: context)
            l.attention.forward(query: l.normed.pointer, keyValue: l.normed.pointer, batch: batch, queryFrames: frames,
                                keyFrames: frames, keyLengths: lengths, causal: false, context: context)
            l.attDropout.forward(m(l.attention.output.pointer), m(l.attDropped.pointer), context: context)
            amp?.round(l.attDropped.pointer, count: n * d)
            for i in 0..<(n * d) { l.h.pointer[i] = l.attDropped.pointer[i] + cur[i] }
            l.ffnNorm.forward(m(l.h.pointer), m(l.normed2.pointer), context: context)
            l.ffn.forward(l.normed2.pointer, rows: n, context: context)
            l.ffnDropout.forward(m(l.ffn.output.pointer), m(l.ffnDropped.pointer), context: context)
            amp?.round(l.ffnDropped.pointer, count: n * d)
            for i in 0..<(n * d) { l.y.pointer[i] = l.ffnDropped.pointer[i] + l.h.pointer[i] }
            cur = UnsafePointer(l.y.pointer)
        }
        output.resize(to: n * d)
        finalNorm.forward(Matrix(UnsafeMutablePointer(mutating: cur), rows: n, cols: d), Matrix(output.pointer, rows: n, cols: d), context: context)
    }

    /// dOutput [B, T, d] → dx [B, T, d] (overwritten), parameter gradients when `accumulate`.
    public func backward(_ dOutput: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let d = conf.dModel, n = batch * frames
        dA.resize(to: n * d); dB.resize(to: n * d); dC.resize(to: n * d)
        let m = { (p: UnsafeMutablePointer<Float>) in Matrix(p, rows: n, cols: d) }
        let last = layers.last.map { UnsafePointer($0.y.pointer) } ?? UnsafePointer(posenc.output.pointer)
        let dy = dA.pointer          // gradient of the current layer's output
        finalNorm.backward(x: m(UnsafeMutablePointer(mutating: last)), y: m(output.pointer), dy: m(UnsafeMutablePointer(mutating: dOutput)),
                           dx: m(dy), accumulate: accumulate)
        for l in layers.reversed() {
            // y = h + drop(FFN(LN(h))): dh = dy + LN′(FFN′(drop′(dy)))
            l.ffnDropout.residualBranchBackward(precision, x: m(l.ffn.output.pointer), y: m(l.ffnDropped.pointer), dy: dy, into: dB.pointer, count: n * d)
            l.ffn.backward(dB.pointer, dx: dC.pointer, accumulate: accumulate)
            l.ffnNorm.backward(x: m(l.h.pointer), y: m(l.normed2.pointer), dy: m(dC.pointer), dx: m(dB.pointer), accumulate: accumulate)
            Kernels.add(dB.pointer, into: dy, count: n * d)       // dy is now dh
            // h = x + drop(MHA(LN(x))): dx = dh + LN′(MHA′(drop′(dh)))
            l.attDropout.residualBranchBackward(precision, x: m(l.attention.output.pointer), y: m(l.attDropped.pointer), dy: dy, into: dB.pointer, count: n * d)
            l.attention.backward(dOutput: dB.pointer, dQuery: dC.pointer, dKeyValue: dC.pointer, accumulate: accumulate)
            l.attNorm.backward(x: m(UnsafeMutablePointer(mutating: l.input!)), y: m(l.normed.pointer), dy: m(dC.pointer), dx: m(dB.pointer), accumulate: accumulate)
            Kernels.add(dB.pointer, into: dy, count: n * d)       // dy is now this layer's dx
        }
        posenc.backward(dy, dx: dx)
    }
}

extension Dropout {
    /// The gradient of a Transformer layer's residual branch dropout(B), given the residual stream's gradient `dy`:
    /// under autocast (`precision` p, B p-valued) p(dy) into the dropout's output, then its backward rounded again (an
    /// op on a p tensor); float32 without autocast (docs/amp-arasr.md).
    func residualBranchBackward(_ precision: ReducedPrecision?, x: Matrix, y: Matrix, dy: UnsafeMutablePointer<Float>,
                                into out: UnsafeMutablePointer<Float>, count: Int) {
        let shape = { (p: UnsafeMutablePointer<Float>) in Matrix(p, rows: x.rows, cols: x.cols) }
        guard let p = precision else {
            backward(x: x, y: y, dy: shape(dy), dx: shape(out), accumulate: false)
            return
        }
        p.round(dy, into: out, count: count)
        backward(x: x, y: y, dy: shape(out), dx: shape(out), accumulate: false)
        p.round(out, count: count)
    }
}
