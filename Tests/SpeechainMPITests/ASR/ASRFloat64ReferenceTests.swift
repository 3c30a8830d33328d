import Foundation
import Testing
@testable import SpeechainMPI

/// The speech path's float32 modules against PyTorch float64 (Resources/layer_refs/speech.safetensors, written by
/// scripts/reference/layer_refs.py): Conv2d, BatchNorm2d (training and evaluation, running statistics included),
/// LeakyReLU, Conv2dPrenet, MultiHeadAttention (key padding, causal, cross, attention dropout, scale by head),
/// PositionalEncoding, EmbedPrenet (padding_idx 0), FeedForward, TransformerEncoder and TransformerDecoder (with and
/// without dropout), CTC loss and the sequence cross-entropy. Every output, every input gradient and every parameter
/// gradient is compared as max|ours − ref| / max|ref| (see LayerFloat64ReferenceTests); each test states its
/// tolerance (1e-4 or tighter, ~10× above the worst error seen). Dropout masks are the reference's: drawn by the same
/// Xoshiro256 stream in the same order, so a module given that seed must reproduce torch's float64 result.
@Suite(.serialized) struct ASRFloat64ReferenceTests {
    static let refs = Result { try Float64References.load("speech") }

    static func context(_ conf: Float64References.Conf) -> ForwardContext {
        ForwardContext(training: true, rng: Xoshiro256(seed: conf.seed ?? 0))
    }

    static func store(_ declare: (ParameterStore) -> Void, _ name: String) throws -> ParameterStore {
        let store = ParameterStore()
        declare(store)
        store.allocate()
        try refs.get().loadParameters(name, into: store)
        store.gradients.fill(0)
        return store
    }

    @Test func referenceFileIsComplete() throws {
        let r = try Self.refs.get()
        let cases = Set(r.meta.cases.filter { $0.value.group == "speech" }.keys)
        #expect(cases == Set(Self.conv2dCases + Self.batchNormCases + Self.leakyCases + Self.prenetCases + Self.attentionCases
                             + Self.posencCases + Self.embedCases + Self.ffnCases + Self.encoderCases + Self.decoderCases
                             + ["ctc"] + Self.seqCECases))
    }

    // MARK: Conv2d

    static let conv2dCases = ["conv2d_s2_bias", "conv2d_s1_nobias", "conv2d_s3_bias"]

    /// im2col + sgemm over ≤ 18 products: worst seen 1.0e-7.
    @Test(arguments: conv2dCases)
    func conv2d(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x")   // [B, Cin, H, W]
        let conv = Conv2d(shape[1], 3, kernel: 3, stride: try #require(conf.stride), bias: try #require(conf.bias as Bool?))
        let store = try Self.store({ conv.declareParameters(in: $0, prefix: "", module: "m") }, name)
        let b = shape[0], h = shape[2], w = shape[3]
        let x = FloatBuffer(try r.floats("\(name).in.x"))
        let y = FloatBuffer(count: b * 3 * conv.outputSize(h) * conv.outputSize(w), repeating: .nan)
        conv.forward(x.pointer, y.pointer, batch: b, height: h, width: w)
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        conv.backward(x: x.pointer, dy: dy.pointer, dx: dx.pointer, batch: b, height: h, width: w, accumulate: true)
        try r.check(y.toArray(), name, "out.y", tol: 2e-6)
        try r.check(dx.toArray(), name, "grad.x", tol: 2e-6)
        try r.checkParameterGradients(name, store, tol: 2e-6)
    }

    // MARK: BatchNorm2d

    static let batchNormCases = ["batchnorm2d_train", "batchnorm2d_eval"]

    /// Statistics in double, the affine map in float32; the running statistics after the forward too (worst seen 9.1e-8).
    @Test(arguments: batchNormCases)
    func batchNorm2d(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x")   // [B, C, H, W]
        let bn = BatchNorm2d(shape[1])
        let store = try Self.store({ bn.declareParameters(in: $0, prefix: "", module: "m") }, name)
        for buf in ["running_mean", "running_var"] {
            bn.load(NamedTensor(name: buf, shape: [shape[1]], values: try r.floats("\(name).bufin.\(buf)")))
        }
        let b = shape[0], plane = shape[2] * shape[3]
        let x = FloatBuffer(try r.floats("\(name).in.x")), y = FloatBuffer(count: x.count, repeating: .nan)
        try bn.forward(x.pointer, y.pointer, batch: b, plane: plane, training: try #require(conf.training as Bool?))
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        try bn.backward(x: x.pointer, dy: dy.pointer, dx: dx.pointer, batch: b, plane: plane, accumulate: true)
        try r.check(y.toArray(), name, "out.y", tol: 1e-6)
        try r.check(dx.toArray(), name, "grad.x", tol: 1e-6)
        try r.checkParameterGradients(name, store, tol: 1e-6)
        try r.check(bn.runningMean, name, "buf.running_mean", tol: 1e-6)
        try r.check(bn.runningVar, name, "buf.running_var", tol: 1e-6)
    }

    // MARK: LeakyReLU

    static let leakyCases = ["leaky_relu_0.01", "leaky_relu_0.2"]

    @Test(arguments: leakyCases)
    func leakyReLU(name: String) throws {
        let slope = Float(try #require(try Self.refs.get().conf(name).slope))   // worst seen 6.1e-9 (float32 slope)
        _ = try LayerFloat64ReferenceTests.checkLayer(LeakyReLU(slope: slope), name, tol: 1e-7, refs: Self.refs)
    }

    // MARK: Conv2dPrenet

    static let prenetCases = ["prenet_bn_leakyrelu", "prenet_nobn_relu"]

    /// Conv → [BatchNorm, training] → activation twice, flatten channel-major, Linear, Linear, over a padded batch;
    /// every parameter and the BatchNorms' running statistics. (The prenet has no input gradient.) Worst seen 7.0e-7.
    @Test(arguments: prenetCases)
    func conv2dPrenet(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let act = try #require(conf.activation)
        let shape = try r.shape("\(name).in.feat")   // [B, T, F]
        let prenet = try Conv2dPrenet(featDim: shape[2], convDims: try #require(conf.conv_dims), batchNorm: try #require(conf.batchnorm as Bool?),
                                      activation: { try ARASR.activation(act, key: "conv") }, lnrDims: try #require(conf.lnr_dims),
                                      lnrActivation: { nil })
        let store = try Self.store({ prenet.declareParameters(in: $0, prefix: "", module: "encoder") }, name)
        for bn in prenet.norms {
            for buf in bn.bufferNames where !buf.hasSuffix("num_batches_tracked") {
                bn.load(NamedTensor(name: buf, shape: [bn.channels], values: try r.floats("\(name).bufin.\(buf)")))
            }
        }
        let feat = FloatBuffer(try r.floats("\(name).in.feat"))
        let out = try prenet.forward(feat.pointer, batch: shape[0], frames: shape[1], context: ForwardContext(training: true))
        let outCount = shape[0] * prenet.outputFrames(shape[1]) * prenet.outputSize
        let y = Array(UnsafeBufferPointer(start: out, count: outCount))
        let dy = FloatBuffer(try r.floats("\(name).dy.y"))
        try prenet.backward(dy.pointer, accumulate: true)
        try r.check(y, name, "out.y", tol: 1e-5)
        try r.checkParameterGradients(name, store, tol: 1e-5)
        for bn in prenet.norms {
            for t in bn.buffers where !t.name.hasSuffix("num_batches_tracked") {
                try r.check(t.values, name, "buf.\(t.name)", tol: 1e-6)
            }
        }
        #expect(r.names(name, "buf").count == 2 * prenet.norms.count)
    }

    // MARK: MultiHeadAttention

    static let attentionCases = ["mha_self_pad", "mha_self_causal_byhead", "mha_self_causal_dropout", "mha_cross", "mha_cross_dropout_byhead"]

    /// Self-attention: one input feeds q, k and v (its gradient sums the three paths); cross-attention: the source's
    /// gradient (exactly 0 on masked frames in both). With dropout, the mask our layer kept must be the reference's.
    /// Worst seen 4.1e-7.
    @Test(arguments: attentionCases)
    func multiHeadAttention(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let cross = try #require(conf.cross as Bool?), p = try #require(conf.p)
        let qShape = try r.shape("\(name).in.query")   // [B, Tq, d]
        let b = qShape[0], tq = qShape[1], d = qShape[2]
        let tk = cross ? try r.shape("\(name).in.source")[1] : tq
        let mha = try MultiHeadAttention(dModel: d, heads: try #require(conf.heads), dropout: Float(p), scaleByHead: try #require(conf.scale_by_head as Bool?))
        let store = try Self.store({ mha.declareParameters(in: $0, prefix: "", module: "m") }, name)
        let q = FloatBuffer(try r.floats("\(name).in.query"))
        let kv = cross ? FloatBuffer(try r.floats("\(name).in.source")) : q
        mha.forward(query: q.pointer, keyValue: kv.pointer, batch: b, queryFrames: tq, keyFrames: tk, keyLengths: try #require(conf.key_lengths),
                    causal: try #require(conf.causal as Bool?), context: Self.context(conf))
        if p > 0 {
            let kept = ASRGradientCheckTests.child(mha, "keepMask", default: FloatBuffer(count: 0)).toArray().map { $0 == 0 ? 0.0 : 1.0 }
            #expect(kept == (try r.doubles("\(name).mask.att")), "our attention dropout drew another mask")
        }
        let dy = FloatBuffer(try r.floats("\(name).dy.y"))
        let dq = FloatBuffer(count: q.count, repeating: .nan)
        let dkv = cross ? FloatBuffer(count: kv.count, repeating: 0) : dq
        mha.backward(dOutput: dy.pointer, dQuery: dq.pointer, dKeyValue: dkv.pointer, accumulate: true)
        try r.check(mha.output.toArray(), name, "out.y", tol: 1e-5)
        try r.check(dq.toArray(), name, "grad.query", tol: 1e-5)
        if cross { try r.check(dkv.toArray(), name, "grad.source", tol: 1e-5) }
        try r.checkParameterGradients(name, store, tol: 1e-5)
    }

    // MARK: PositionalEncoding

    static let posencCases = ["posenc_scale", "posenc_noscale"]

    /// Worst seen 1.2e-7.
    @Test(arguments: posencCases)
    func positionalEncoding(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x")
        let pe = PositionalEncoding(dModel: shape[2], embScale: try #require(conf.emb_scale as Bool?), dropout: Float(try #require(conf.p)))
        let x = FloatBuffer(try r.floats("\(name).in.x"))
        pe.forward(x.pointer, batch: shape[0], frames: shape[1], context: Self.context(conf))
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        pe.backward(dy.pointer, dx: dx.pointer)
        let y = pe.output.toArray()
        #expect(y.map { $0 == 0 ? 0.0 : 1.0 } == (try r.doubles("\(name).mask.y")), "our dropout drew another mask")
        try r.check(y, name, "out.y", tol: 2e-6)
        try r.check(dx.toArray(), name, "grad.x", tol: 2e-6)
    }

    // MARK: EmbedPrenet

    static let embedCases = ["embed_noscale", "embed_scale"]

    /// Row 0 (padding_idx) is non-zero and read by the forward, yet gets no gradient, in torch and here. Worst seen
    /// 3.4e-8 (the output is exact).
    @Test(arguments: embedCases)
    func embedPrenet(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).param.embed.weight")
        let emb = EmbedPrenet(vocabSize: shape[0], dim: shape[1], scale: try #require(conf.scale as Bool?))
        let store = try Self.store({ emb.declareParameters(in: $0, prefix: "", module: "decoder") }, name)
        let tokens = try #require(conf.tokens)
        tokens.withUnsafeBufferPointer { emb.forward($0.baseAddress!, count: tokens.count) }
        let dy = FloatBuffer(try r.floats("\(name).dy.y"))
        emb.backward(dy.pointer)
        try r.check(emb.output.toArray(), name, "out.y", tol: 1e-7)
        try r.checkParameterGradients(name, store, tol: 1e-6)
        #expect(try r.doubles("\(name).grad.embed.weight")[0..<shape[1]].allSatisfy { $0 == 0 })
        #expect(store.gradients.toArray()[0..<shape[1]].allSatisfy { $0 == 0 })
    }

    // MARK: FeedForward

    static let ffnCases = ["ffn_gelu", "ffn_relu"]

    /// GELU with dropout 0.2 (the reference's mask), ReLU without: worst seen 1.5e-7.
    @Test(arguments: ffnCases)
    func feedForward(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x")
        let ffn = FeedForward(dModel: shape[1], hiddenSize: try #require(conf.hidden),
                              activation: try ARASR.activation(try #require(conf.activation), key: "ffn"), dropout: Float(try #require(conf.p)))
        let store = try Self.store({ ffn.declareParameters(in: $0, prefix: "", module: "m") }, name)
        let x = FloatBuffer(try r.floats("\(name).in.x"))
        ffn.forward(x.pointer, rows: shape[0], context: Self.context(conf))
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        ffn.backward(dy.pointer, dx: dx.pointer, accumulate: true)
        try r.check(ffn.output.toArray(), name, "out.y", tol: 2e-6)
        try r.check(dx.toArray(), name, "grad.x", tol: 2e-6)
        try r.checkParameterGradients(name, store, tol: 2e-6)
    }

    // MARK: Transformer encoder and decoder

    static let encoderCases = ["encoder_gelu", "encoder_relu"]
    static let decoderCases = ["decoder_gelu", "decoder_relu"]

    static func transformerConf(_ c: Float64References.Conf) throws -> TransformerEncoder.Conf {
        var t = TransformerEncoder.Conf()
        t.dModel = try #require(c.d_model); t.heads = try #require(c.heads); t.layers = try #require(c.layers)
        t.ffnSize = try #require(c.ffn); t.ffnActivation = try #require(c.activation)
        let p = Float(try #require(c.p))
        t.posencDropout = p; t.attDropout = p; t.ffnDropout = p; t.resDropout = p
        t.embScale = try #require(c.emb_scale as Bool?)
        return t
    }

    /// Two pre-LN layers over a padded batch, with every dropout at 0.1 (GELU; the reference's masks, drawn in the order
    /// our encoder draws them) or none (ReLU). Worst seen 9.4e-7.
    @Test(arguments: encoderCases)
    func transformerEncoder(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x")
        let act = try #require(conf.activation)
        let enc = try TransformerEncoder(try Self.transformerConf(conf), activation: { try ARASR.activation(act, key: "ffn") })
        let store = try Self.store({ enc.declareParameters(in: $0, prefix: "", module: "encoder") }, name)
        let x = FloatBuffer(try r.floats("\(name).in.x"))
        enc.forward(x.pointer, batch: shape[0], frames: shape[1], lengths: try #require(conf.lengths), context: Self.context(conf))
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        enc.backward(dy.pointer, dx: dx.pointer, accumulate: true)
        try r.check(enc.output.toArray(), name, "out.y", tol: 2e-5)
        try r.check(dx.toArray(), name, "grad.x", tol: 2e-5)
        try r.checkParameterGradients(name, store, tol: 2e-5)
    }

    /// Two pre-LN layers: causal self-attention over padded sentences, cross-attention over a padded source; dropout as
    /// the encoder's. Worst seen 7.5e-7.
    @Test(arguments: decoderCases)
    func transformerDecoder(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.x"), sourceShape = try r.shape("\(name).in.source")
        let act = try #require(conf.activation)
        let dec = try TransformerDecoder(try Self.transformerConf(conf), activation: { try ARASR.activation(act, key: "ffn") })
        let store = try Self.store({ dec.declareParameters(in: $0, prefix: "", module: "decoder") }, name)
        let x = FloatBuffer(try r.floats("\(name).in.x")), source = FloatBuffer(try r.floats("\(name).in.source"))
        dec.forward(x.pointer, batch: shape[0], tokens: shape[1], tokenLengths: try #require(conf.token_lengths), source: source.pointer,
                    sourceFrames: sourceShape[1], sourceLengths: try #require(conf.source_lengths), context: Self.context(conf))
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: x.count, repeating: .nan)
        let dSource = FloatBuffer(count: source.count, repeating: 0)
        dec.backward(dy.pointer, dx: dx.pointer, dSource: dSource.pointer, accumulate: true)
        try r.check(dec.output.toArray(), name, "out.y", tol: 2e-5)
        try r.check(dx.toArray(), name, "grad.x", tol: 2e-5)
        try r.check(dSource.toArray(), name, "grad.source", tol: 2e-5)
        try r.checkParameterGradients(name, store, tol: 2e-5)
    }

    // MARK: Losses

    /// Mean over utterances of log_softmax → CTC (blank 0, zero_infinity; one utterance unalignable, one empty target,
    /// garbage on padded frames). Worst seen 9.1e-8.
    @Test func ctc() throws {
        let r = try Self.refs.get(), name = "ctc", conf = try r.conf(name)
        let shape = try r.shape("\(name).in.logits")   // [B, T, V]
        let targets = try #require(conf.targets)
        let flat = targets.flatMap { $0 }
        let logits = FloatBuffer(try r.floats("\(name).in.logits"))
        let ctc = CTCLoss(blank: 0, zeroInfinity: true)
        let inputLengths = try #require(conf.input_lengths), targetLengths = try #require(conf.target_lengths)
        let loss = flat.withUnsafeBufferPointer {
            ctc.forward(logits: logits.pointer, batch: shape[0], maxFrames: shape[1], vocab: shape[2], inputLengths: inputLengths,
                        targets: $0.baseAddress!, targetStride: targets[0].count, targetLengths: targetLengths)
        }
        let d = FloatBuffer(count: logits.count, repeating: .nan)
        ctc.backward(seed: 1, dLogits: d.pointer)
        try r.check([loss], name, "out.loss", tol: 1e-6)
        try r.check(d.toArray(), name, "grad.logits", tol: 1e-6)
    }

    static let seqCECases = ["seq_ce_ls0", "seq_ce_ls0.1"]

    /// Σ over each sentence's tokens of the label-smoothed CE, mean over sentences; padded logits (±30) unread. Worst
    /// seen 1.1e-7.
    @Test(arguments: seqCECases)
    func sequenceCrossEntropy(name: String) throws {
        let r = try Self.refs.get(), conf = try r.conf(name)
        let shape = try r.shape("\(name).in.logits")   // [B, L, V]
        let targets = try #require(conf.targets)
        let flat = targets.flatMap { $0 }
        let logits = FloatBuffer(try r.floats("\(name).in.logits"))
        let ce = SequenceCrossEntropy(labelSmoothing: Float(try #require(conf.label_smoothing)))
        let lengths = try #require(conf.lengths)
        let loss = flat.withUnsafeBufferPointer {
            ce.forward(logits: logits.pointer, batch: shape[0], steps: shape[1], vocab: shape[2], targets: $0.baseAddress!,
                       targetStride: targets[0].count, lengths: lengths).loss
        }
        let d = FloatBuffer(count: logits.count, repeating: .nan)
        ce.backward(seed: 1, dLogits: d.pointer)
        try r.check([loss], name, "out.loss", tol: 1e-6)
        try r.check(d.toArray(), name, "grad.logits", tol: 2e-6)
    }
}
