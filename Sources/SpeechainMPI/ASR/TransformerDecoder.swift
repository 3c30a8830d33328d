/// SpeeChain's `transformer.decoder.TransformerDecoder` with layernorm_first (pre-LN), LayerNorm eps 1e-6:
///
///     x ← posenc(x)   (emb_scale: x·√d, SpeeChain's default for the decoder)
///     per layer:  a = x + dropout(SelfMHA(LN_self(x)))            (padded and future tokens masked)
///                 c = a + dropout(CrossMHA(q = LN_encdec(a), kv = encoder output))   (padded frames masked)
///                 x = c + dropout(FFN(LN_ffn(c)))
///     y = LN(x)
///
/// State-dict names: `trfm_layers.<i>.self_att.*`, `.encdec_att.*`, `.feed_forward.*`, `.self_att_ln.*`,
/// `.encdec_att_ln.*`, `.fdfwd_ln.*`; `layernorm.*`. The cross-attention always scales by 1/√d_model (SpeeChain
/// does not pass scale_dp_by_head to it).
public final class TransformerDecoder {
    final class Block {
        let selfNorm: LayerNorm, selfAttention: MultiHeadAttention, selfDropout: Dropout
        let crossNorm: LayerNorm, crossAttention: MultiHeadAttention, crossDropout: Dropout
        let ffnNorm: LayerNorm, ffn: FeedForward, ffnDropout: Dropout
        let normed1 = FloatBuffer(count: 0), dropped1 = FloatBuffer(count: 0), a = FloatBuffer(count: 0)
        let normed2 = FloatBuffer(count: 0), dropped2 = FloatBuffer(count: 0), c = FloatBuffer(count: 0)
        let normed3 = FloatBuffer(count: 0), dropped3 = FloatBuffer(count: 0), y = FloatBuffer(count: 0)
        var input: UnsafePointer<Float>?

        init(_ conf: TransformerEncoder.Conf, activation: Layer) throws {
            let d = conf.dModel
            selfNorm = LayerNorm(d, eps: 1e-6); crossNorm = LayerNorm(d, eps: 1e-6); ffnNorm = LayerNorm(d, eps: 1e-6)
            selfAttention = try MultiHeadAttention(dModel: d, heads: conf.heads, dropout: conf.attDropout, scaleByHead: conf.scaleByHead)
            crossAttention = try MultiHeadAttention(dModel: d, heads: conf.heads, dropout: conf.attDropout, scaleByHead: false)
            selfDropout = Dropout(p: conf.resDropout); crossDropout = Dropout(p: conf.resDropout); ffnDropout = Dropout(p: conf.resDropout)
            ffn = FeedForward(dModel: d, hiddenSize: conf.ffnSize, activation: activation, dropout: conf.ffnDropout)
        }
    }

    public let conf: TransformerEncoder.Conf
    let posenc: PositionalEncoding
    let layers: [Block]
    let finalNorm: LayerNorm
    let output = FloatBuffer(count: 0)
    private let dA = FloatBuffer(count: 0), dB = FloatBuffer(count: 0), dC = FloatBuffer(count: 0)
    private var batch = 0, tokens = 0, sourceFrames = 0
    private var precision: ReducedPrecision?

    public init(_ conf: TransformerEncoder.Conf, activation: () throws -> Layer) throws {
        self.conf = conf
        posenc = PositionalEncoding(dModel: conf.dModel, embScale: conf.embScale, dropout: conf.posencDropout)
        layers = try (0..<conf.layers).map { _ in try Block(conf, activation: try activation()) }
        finalNorm = LayerNorm(conf.dModel, eps: 1e-6)
    }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        for (i, l) in layers.enumerated() {
            let p = "\(prefix)trfm_layers.\(i)."
            l.selfAttention.declareParameters(in: store, prefix: p + "self_att.", module: module)
            l.crossAttention.declareParameters(in: store, prefix: p + "encdec_att.", module: module)
            l.ffn.declareParameters(in: store, prefix: p + "feed_forward.", module: module)
            l.selfNorm.declareParameters(in: store, prefix: p + "self_att_ln.", module: module)
            l.crossNorm.declareParameters(in: store, prefix: p + "encdec_att_ln.", module: module)
            l.ffnNorm.declareParameters(in: store, prefix: p + "fdfwd_ln.", module: module)
        }
        finalNorm.declareParameters(in: store, prefix: prefix + "layernorm.", module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        for l in layers {
            l.selfAttention.initialize(in: store, rng: &rng); l.crossAttention.initialize(in: store, rng: &rng)
            l.ffn.initialize(in: store, rng: &rng)
            for n in [l.selfNorm, l.crossNorm, l.ffnNorm] { n.initialize(in: store, rng: &rng) }
        }
        finalNorm.initialize(in: store, rng: &rng)
    }

    /// x [B, L, d] (embedded tokens, lengths `tokenLengths`) over `source` [B, S, d] (lengths `sourceLengths`)
    /// → `output` [B, L, d]. Under autocast x and source are float32, each branch p-valued (docs/amp-arasr.md).
    public func forward(_ x: UnsafePointer<Float>, batch: Int, tokens: Int, tokenLengths: [Int], source: UnsafePointer<Float>,
                        sourceFrames: Int, sourceLengths: [Int], context: ForwardContext) {
        self.batch = batch; self.tokens = tokens; self.sourceFrames = sourceFrames
        let amp = context.amp
        precision = amp
        let d = conf.dModel, n = batch * tokens
        let m = { (p: UnsafeMutablePointer<Float>) in Matrix(p, rows: n, cols: d) }
        posenc.forward(x, batch: batch, frames: tokens, context: context)
        var cur = UnsafePointer(posenc.output.pointer)
        for l in layers {
            l.input = cur
            for b in [l.normed1, l.dropped1, l.a, l.normed2, l.dropped2, l.c, l.normed3, l.dropped3, l.y] { b.resize(to: n * d) }
            l.selfNorm.forward(m(UnsafeMutablePointer(mutating: cur)), m(l.normed1.pointer), context: context)
            l.selfAttention.forward(query: l.normed1.pointer, keyValue: l.normed1.pointer, batch: batch, queryFrames: tokens,
                                    keyFrames: tokens, keyLengths: tokenLengths, causal: true, context: context)
            l.selfDropout.forward(m(l.selfAttention.output.pointer), m(l.dropped1.pointer), context: context)
            amp?.round(l.dropped1.pointer, count: n * d)
            for i in 0..<(n * d) { l.a.pointer[i] = l.dropped1.pointer[i] + cur[i] }
            l.crossNorm.forward(m(l.a.pointer), m(l.normed2.pointer), context: context)
            l.crossAttention.forward(query: l.normed2.pointer, keyValue: source, batch: batch, queryFrames: tokens,
                                     keyFrames: sourceFrames, keyLengths: sourceLengths, causal: false, context: context)
            l.crossDropout.forward(m(l.crossAttention.output.pointer), m(l.dropped2.pointer), context: context)
            amp?.round(l.dropped2.pointer, count: n * d)
            for i in 0..<(n * d) { l.c.pointer[i] = l.dropped2.pointer[i] + l.a.pointer[i] }
            l.ffnNorm.forward(m(l.c.pointer), m(l.normed3.pointer), context: context)
            l.ffn.forward(l.normed3.pointer, rows: n, context: context)
            l.ffnDropout.forward(m(l.ffn.output.pointer), m(l.dropped3.pointer), context: context)
            amp?.round(l.dropped3.pointer, count: n * d)
            for i in 0..<(n * d) { l.y.pointer[i] = l.dropped3.pointer[i] + l.c.pointer[i] }
            cur = UnsafePointer(l.y.pointer)
        }
        output.resize(to: n * d)
        finalNorm.forward(m(UnsafeMutablePointer(mutating: cur)), m(output.pointer), context: context)
    }

    /// dOutput [B, L, d] → dx [B, L, d] (overwritten) and dSource [B, S, d] (added into).
    public func backward(_ dOutput: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, dSource: UnsafeMutablePointer<Float>,
                         accumulate: Bool) {
        let d = conf.dModel, n = batch * tokens
        dA.resize(to: n * d); dB.resize(to: n * d); dC.resize(to: n * d)
        let m = { (p: UnsafeMutablePointer<Float>) in Matrix(p, rows: n, cols: d) }
        let last = layers.last.map { UnsafePointer($0.y.pointer) } ?? UnsafePointer(posenc.output.pointer)
        let dy = dA.pointer
        finalNorm.backward(x: m(UnsafeMutablePointer(mutating: last)), y: m(output.pointer), dy: m(UnsafeMutablePointer(mutating: dOutput)),
                           dx: m(dy), accumulate: accumulate)
        for l in layers.reversed() {
            l.ffnDropout.residualBranchBackward(precision, x: m(l.ffn.output.pointer), y: m(l.dropped3.pointer), dy: dy, into: dB.pointer, count: n * d)
            l.ffn.backward(dB.pointer, dx: dC.pointer, accumulate: accumulate)
            l.ffnNorm.backward(x: m(l.c.pointer), y: m(l.normed3.pointer), dy: m(dC.pointer), dx: m(dB.pointer), accumulate: accumulate)
            Kernels.add(dB.pointer, into: dy, count: n * d)       // dc
            l.crossDropout.residualBranchBackward(precision, x: m(l.crossAttention.output.pointer), y: m(l.dropped2.pointer), dy: dy, into: dB.pointer, count: n * d)
            l.crossAttention.backward(dOutput: dB.pointer, dQuery: dC.pointer, dKeyValue: dSource, accumulate: accumulate)
            l.crossNorm.backward(x: m(l.a.pointer), y: m(l.normed2.pointer), dy: m(dC.pointer), dx: m(dB.pointer), accumulate: accumulate)
            Kernels.add(dB.pointer, into: dy, count: n * d)       // da
            l.selfDropout.residualBranchBackward(precision, x: m(l.selfAttention.output.pointer), y: m(l.dropped1.pointer), dy: dy, into: dB.pointer, count: n * d)
            l.selfAttention.backward(dOutput: dB.pointer, dQuery: dC.pointer, dKeyValue: dC.pointer, accumulate: accumulate)
            l.selfNorm.backward(x: m(UnsafeMutablePointer(mutating: l.input!)), y: m(l.normed1.pointer), dy: m(dC.pointer), dx: m(dB.pointer), accumulate: accumulate)
            Kernels.add(dB.pointer, into: dy, count: n * d)       // this layer's dx
        }
        posenc.backward(dy, dx: dx)
    }
}
