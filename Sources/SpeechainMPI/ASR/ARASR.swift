import Foundation

/// SpeeChain's `ar_asr.ARASR` (model/ar_asr.py): an attention encoder-decoder recogniser with a CTC head.
///
///     feat [B, T, 1] waveforms → frontend (log-mel, float32) → normalize → specaug (training) → feat [B, T, D]
///     encoder:   Conv2dPrenet → TransformerEncoder → enc [B, T′, d] with enc_len
///     ctc_layer: Linear(d → V) on enc                                     (when ctc_weight > 0)
///     decoder:   text [sos, y…, eos] → inputs [sos, y…] (the eos position zeroed, the last column dropped)
///                → EmbedPrenet → TransformerDecoder(enc) → Linear(d → V) = logits [B, L − 1, V]
///     loss = (1 − ctc_weight)·CE(logits, [y…, eos]) + ctc_weight·CTC(ctc logits, [y…])
///     losses: loss; metrics: ce_loss, ctc_loss (with a CTC head), accuracy
///
/// The first-level modules (for `updated_modules`) are SpeeChain's: `encoder`, `ctc_layer`, `decoder`, and the
/// parameters carry its state-dict names. Without a frontend, `feat` holds features [B, T, D] already (D = the
/// prenet's feat_dim); SpeeChain itself always has one.
///
/// Activations live in the modules' buffers, sized for the largest batch seen and reused: a warm step at that
/// shape allocates nothing.
public final class ARASR: Model {
    public static let typeName = "ar_asr.ARASR"
    public let parameters = ParameterStore()
    public let lossNames = ["loss"]
    public let metricNames: [String]

    public let vocabSize: Int
    public let ctcWeight: Float
    public let frontend: Speech2MelSpec?
    public let normalize: FeatureNormalization?
    public let specaug: SpecAugment?
    let prenet: Conv2dPrenet
    let encoder: TransformerEncoder
    let ctcLayer: Linear?
    let embedding: EmbedPrenet
    let decoder: TransformerDecoder
    let postnet: Linear
    let ce: SequenceCrossEntropy
    let ctc: CTCLoss?
    public let featureDim: Int
    public let dModel: Int
    /// SyncBatchNorm: the prenet's BatchNorm statistics over the global batch (`sync_batchnorm: true`).
    public let syncBatchNorm: Bool

    // per-batch state
    let features = FloatBuffer(count: 0)
    var featureLengths: [Int] = []
    var frames = 0
    var encLengths: [Int] = []
    var encFrames = 0
    private var decInput: [Int32] = []
    private var decLengths: [Int] = []
    private var ceLengths: [Int] = []
    private var ctcLengths: [Int] = []
    private var tokens = 0          // L − 1
    private var textStride = 0
    private var text: [Int32] = []
    private var batchSize = 0
    let ctcLogits = FloatBuffer(count: 0), logits = FloatBuffer(count: 0)
    private let dLogits = FloatBuffer(count: 0), dDec = FloatBuffer(count: 0), dEmb = FloatBuffer(count: 0)
    private let dEnc = FloatBuffer(count: 0), dCtc = FloatBuffer(count: 0), dEncIn = FloatBuffer(count: 0)
    private var lastLosses = (ce: Float(0), ctc: Float(0))
    private var trainingForward = false
    /// The autocast dtype of the last forward (docs/amp-arasr.md): its logits are p-valued, so the loss gradients
    /// are rounded where they re-enter them.
    private var precision: ReducedPrecision?

    public struct Parts {
        public var vocabSize: Int
        public var ctcWeight: Float = 0.3
        public var labelSmoothing: Float = 0
        public var zeroInfinity = true
        public var frontend: Speech2MelSpec?
        public var normalize: ConfigValue = .null
        public var specaug: ConfigValue = .null
        public var featDim = 80
        public var convDims = [64, 64]
        public var convKernel = 3, convStride = 2
        public var convBatchNorm = false
        public var syncBatchNorm = false
        public var convActivation: String? = "ReLU"
        public var lnrDims = [512]
        public var lnrActivation: String?
        public var encoder = TransformerEncoder.Conf()
        public var decoder: TransformerEncoder.Conf = { var c = TransformerEncoder.Conf(); c.embScale = true; return c }()
        public var embedScale = false
        public init(vocabSize: Int) { self.vocabSize = vocabSize }
    }

    public init(_ p: Parts, seed: UInt64) throws {
        guard p.vocabSize >= 3 else { throw ConfigError.invalidValue(context: "model_conf.customize_conf", key: "token_path", reason: "the vocabulary has \(p.vocabSize) tokens; at least <blank>, one token and <sos/eos> are needed") }
        guard p.ctcWeight >= 0 && p.ctcWeight <= 1 else { throw ConfigError.invalidValue(context: "model_conf.customize_conf", key: "ctc_weight", reason: "must be in [0, 1], found \(p.ctcWeight)") }
        vocabSize = p.vocabSize; ctcWeight = p.ctcWeight; syncBatchNorm = p.syncBatchNorm
        frontend = p.frontend
        featureDim = p.frontend?.nMels ?? p.featDim
        normalize = try FeatureNormalization.make(p.normalize, featureDim: featureDim, context: "module_conf.normalize")
        specaug = try SpecAugment.make(p.specaug, featureDim: featureDim, featNorm: normalize != nil, context: "module_conf.specaug")
        prenet = try Conv2dPrenet(featDim: featureDim, convDims: p.convDims, kernel: p.convKernel, stride: p.convStride,
                                  batchNorm: p.convBatchNorm, activation: { try p.convActivation.map { try Self.activation($0, key: "enc_prenet.conf.conv_activation") } },
                                  lnrDims: p.lnrDims, lnrActivation: { try p.lnrActivation.map { try Self.activation($0, key: "enc_prenet.conf.lnr_activation") } })
        var encConf = p.encoder
        encConf.dModel = prenet.outputSize
        dModel = encConf.dModel
        encoder = try TransformerEncoder(encConf, activation: { try Self.activation(encConf.ffnActivation, key: "encoder.conf.fdfwd_activation") })
        ctcLayer = p.ctcWeight > 0 ? Linear(dModel, p.vocabSize) : nil
        ctc = p.ctcWeight > 0 ? CTCLoss(blank: 0, zeroInfinity: p.zeroInfinity) : nil
        var decConf = p.decoder
        embedding = EmbedPrenet(vocabSize: p.vocabSize, dim: decConf.dModel, scale: p.embedScale)
        decConf.dModel = embedding.dim
        decoder = try TransformerDecoder(decConf, activation: { try Self.activation(decConf.ffnActivation, key: "decoder.conf.fdfwd_activation") })
        guard decConf.dModel == dModel else {
            throw ConfigError.invalidValue(context: "module_conf", key: "dec_emb.conf.embedding_dim",
                                           reason: "must equal the encoder's output size \(dModel) (the cross-attention's keys), found \(decConf.dModel)")
        }
        postnet = Linear(dModel, p.vocabSize)
        ce = SequenceCrossEntropy(labelSmoothing: p.labelSmoothing)
        // `loss` is reported as the loss (the trainer lists losses and metrics together, so not twice)
        metricNames = p.ctcWeight > 0 ? ["ce_loss", "ctc_loss", "accuracy"] : ["ce_loss", "accuracy"]

        prenet.declareParameters(in: parameters, prefix: "encoder.prenet.", module: "encoder")
        encoder.declareParameters(in: parameters, prefix: "encoder.encoder.", module: "encoder")
        ctcLayer?.declareParameters(in: parameters, prefix: "ctc_layer.linear.", module: "ctc_layer")
        embedding.declareParameters(in: parameters, prefix: "decoder.embedding.", module: "decoder")
        decoder.declareParameters(in: parameters, prefix: "decoder.decoder.", module: "decoder")
        postnet.declareParameters(in: parameters, prefix: "decoder.postnet.linear.", module: "decoder")
        parameters.allocate()
        var rng = Xoshiro256(seed: seed, stream: 0xA5A5)
        initialize(rng: &rng)
    }

    /// SpeeChain's default initialisation (model/abs.py, init 'xavier'): every 1-D `.bias` zero, every weight of
    /// two or more dimensions xavier_normal (std √(2/(fan_in + fan_out)), fan over the receptive field), then the
    /// modules with their own reset: the embedding N(0, 1) with the padding row zero, LayerNorm/BatchNorm weight 1
    /// and bias 0.
    private func initialize(rng: inout Xoshiro256) {
        let w = parameters.values.pointer
        for e in parameters.entries {
            if e.shape.count == 1 {
                let fill: Float = e.name.hasSuffix(".bias") ? 0 : 1
                Kernels.fill(w + e.offset, count: e.count, value: fill)
            } else {
                let receptive = e.shape.dropFirst(2).reduce(1, *)
                let fanIn = e.shape[1] * receptive, fanOut = e.shape[0] * receptive
                let std = (2 / Float(fanIn + fanOut)).squareRoot()
                for i in 0..<e.count { w[e.offset + i] = std * rng.normal() }
            }
        }
        embedding.initialize(in: parameters, rng: &rng)
    }

    static let activations = ["ReLU", "LeakyReLU", "GELU", "Tanh"]

    static func activation(_ name: String, key: String) throws -> Layer {
        switch name {
        case "ReLU": return ReLU()
        case "LeakyReLU": return LeakyReLU()
        case "GELU": return GELU()
        case "Tanh": return Tanh()
        default: throw ConfigError.invalidValue(context: "module_conf", key: key, reason: "must be one of \(activations.joined(separator: ", ")), found '\(name)'")
        }
    }

    public var description: String {
        "ARASR(encoder: \(prenet.outputSize)-d, \(encoder.layers.count) layers; decoder: \(decoder.layers.count) layers; vocab \(vocabSize); ctc_weight \(ctcWeight))"
    }

    public var batchNorms: [BatchNorm2d] { prenet.norms }

    // MARK: - forward

    public func forward(_ batch: Batch, context: ForwardContext, losses: inout NamedValues, metrics: inout NamedValues) throws {
        guard let feat = batch["feat"], let textTensor = batch["text"] else {
            throw ModelError.dataMismatch("\(Self.typeName) needs batches with 'feat' and 'text' (speech_text.SpeechTextDataset)")
        }
        let b = feat.count
        guard b >= 1, textTensor.count == b, feat.lengths.count == b, textTensor.lengths.count == b, textTensor.shape.count == 2 else {
            throw ModelError.dataMismatch("a batch of \(b) utterances with \(textTensor.count) sentences and \(feat.lengths.count)/\(textTensor.lengths.count) lengths")
        }
        batchSize = b
        trainingForward = context.training
        precision = context.amp
        try encode(feat, context: context)
        let enc = encoder.output.pointer
        // the decoder's inputs and the targets
        textStride = textTensor.shape[1]
        tokens = textStride - 1
        guard tokens >= 1 else { throw ModelError.dataMismatch("text holds \(textStride) column(s); [sos, …, eos] needs at least 2") }
        resize(&text, b * textStride)
        resize(&decInput, b * tokens)
        resize(&decLengths, b); resize(&ceLengths, b); resize(&ctcLengths, b)
        for i in 0..<b {
            let len = textTensor.lengths[i]
            guard len >= 2 && len <= textStride else { throw ModelError.dataMismatch("sentence \(i) has length \(len); [sos, …, eos] needs 2 to \(textStride)") }
            for j in 0..<textStride {
                let t = textTensor.ints[i * textStride + j]
                guard t >= 0 && Int(t) < vocabSize else { throw ModelError.dataMismatch("sentence \(i) holds token \(t), outside the vocabulary of \(vocabSize)") }
                text[i * textStride + j] = t
                if j < tokens { decInput[i * tokens + j] = j == len - 1 ? 0 : t }
            }
            decLengths[i] = len - 1; ceLengths[i] = len - 1; ctcLengths[i] = len - 2
        }
        let n = b * tokens
        try decInput.withUnsafeBufferPointer { embedding.forward($0.baseAddress!, count: n) }
        decoder.forward(embedding.output.pointer, batch: b, tokens: tokens, tokenLengths: decLengths, source: enc,
                        sourceFrames: encFrames, sourceLengths: encLengths, context: context)
        logits.resize(to: n * vocabSize)
        postnet.forward(Matrix(decoder.output.pointer, rows: n, cols: dModel), Matrix(logits.pointer, rows: n, cols: vocabSize), context: context)
        context.amp?.round(logits.pointer, count: n * vocabSize)
        let (ceLoss, accuracy) = text.withUnsafeBufferPointer {
            ce.forward(logits: logits.pointer, batch: b, steps: tokens, vocab: vocabSize, targets: $0.baseAddress! + 1,
                       targetStride: textStride, lengths: ceLengths)
        }
        var loss = ceLoss
        var ctcLoss: Float = 0
        if let ctcLayer, let ctc {
            let m = b * encFrames
            ctcLogits.resize(to: m * vocabSize)
            ctcLayer.forward(Matrix(enc, rows: m, cols: dModel), Matrix(ctcLogits.pointer, rows: m, cols: vocabSize), context: context)
            context.amp?.round(ctcLogits.pointer, count: m * vocabSize)
            ctcLoss = text.withUnsafeBufferPointer {
                ctc.forward(logits: ctcLogits.pointer, batch: b, maxFrames: encFrames, vocab: vocabSize, inputLengths: encLengths,
                            targets: $0.baseAddress! + 1, targetStride: textStride, targetLengths: ctcLengths)
            }
            loss = (1 - ctcWeight) * ceLoss + ctcWeight * ctcLoss
        }
        lastLosses = (ceLoss, ctcLoss)
        losses["loss"] = loss
        metrics["ce_loss"] = ceLoss
        metrics["ctc_loss"] = ctcLoss
        metrics["accuracy"] = accuracy
    }

    /// feat → the encoder's output (`encoder.output` [B, encFrames, d], `encLengths`): features, prenet, encoder.
    func encode(_ feat: BatchTensor, context: ForwardContext) throws {
        let b = feat.count
        try computeFeatures(feat, context: context)
        guard frames >= prenet.minFrames else {
            throw ModelError.dataMismatch("the longest utterance of the batch has \(frames) frames; the prenet's convolutions need at least \(prenet.minFrames)")
        }
        resize(&encLengths, b)
        for i in 0..<b {
            encLengths[i] = prenet.outputLength(featureLengths[i])
            guard encLengths[i] >= 1 else {
                throw ModelError.dataMismatch("utterance \(i) of the batch has \(featureLengths[i]) frames, too short for the prenet (at least \(prenet.minFrames))")
            }
        }
        encFrames = prenet.outputFrames(frames)
        for bn in prenet.norms { bn.reduce = syncBatchNorm && context.training ? context.reduce : nil }
        let prenetOut = try prenet.forward(features.pointer, batch: b, frames: frames, context: context)
        encoder.forward(prenetOut, batch: b, frames: encFrames, lengths: encLengths, context: context)
    }

    /// feat → `features` [B, frames, D] with `featureLengths`: the frontend (float32), normalize, specaug.
    func computeFeatures(_ feat: BatchTensor, context: ForwardContext) throws {
        let b = feat.count
        resize(&featureLengths, b)
        if let frontend {
            guard feat.shape.count == 3, feat.shape[2] == 1 else {
                throw ModelError.dataMismatch("feat has shape \(feat.shape); the frontend takes waveforms [B, T, 1]")
            }
            let samples = feat.shape[1]
            frames = frontend.frameCount(samples: samples)
            features.resize(to: b * frames * featureDim)
            try feat.floats.withUnsafeBufferPointer { w in
                try featureLengths.withUnsafeMutableBufferPointer { l in
                    try frontend.compute(waveforms: w.baseAddress!, batchSize: b, samples: samples, lengths: feat.lengths,
                                         output: features.pointer, featureLengths: l.baseAddress!)
                }
            }
        } else {
            guard feat.shape.count == 3, feat.shape[2] == featureDim else {
                throw ModelError.dataMismatch("feat has shape \(feat.shape); without a frontend the model takes features [B, T, \(featureDim)]")
            }
            frames = feat.shape[1]
            features.resize(to: b * frames * featureDim)
            feat.floats.withUnsafeBufferPointer { features.pointer.update(from: $0.baseAddress!, count: b * frames * featureDim) }
            for i in 0..<b { featureLengths[i] = feat.lengths[i] }
        }
        if let normalize {
            try normalize(features.pointer, batchSize: b, frames: frames, lengths: featureLengths, training: context.training,
                          epoch: context.epoch, reduce: context.reduce)
        }
        if context.training, let specaug {
            try specaug(features.pointer, batchSize: b, frames: frames, lengths: featureLengths, using: &context.rng)
        }
    }

    func resize<T: Numeric>(_ a: inout [T], _ n: Int) {
        if a.count > n { a.removeLast(a.count - n) } else if a.count < n { a.append(contentsOf: repeatElement(0, count: n - a.count)) }
    }

    // MARK: - backward

    public func backward(loss: String, seed: Float, modules: [String]) throws {
        guard loss == "loss" else { throw ModelError.dataMismatch("\(Self.typeName) has one loss, 'loss'; found '\(loss)'") }
        let updateEncoder = modules.contains("encoder"), updateDecoder = modules.contains("decoder")
        let updateCTC = modules.contains("ctc_layer")
        let b = batchSize, n = b * tokens, m = b * encFrames, d = dModel
        let needEncoderGradient = updateEncoder
        if needEncoderGradient { dEnc.resize(to: m * d); Kernels.fill(dEnc.pointer, count: m * d, value: 0) }
        // the attention branch: CE → postnet → decoder (→ the encoder output)
        let ceSeed = ctc == nil ? seed : seed * (1 - ctcWeight)
        if updateDecoder || needEncoderGradient {
            dLogits.resize(to: n * vocabSize); dDec.resize(to: n * d); dEmb.resize(to: n * d)
            ce.backward(seed: ceSeed, dLogits: dLogits.pointer)
            precision?.round(dLogits.pointer, count: n * vocabSize)
            postnet.backward(x: Matrix(decoder.output.pointer, rows: n, cols: d), y: Matrix(logits.pointer, rows: n, cols: vocabSize),
                             dy: Matrix(dLogits.pointer, rows: n, cols: vocabSize), dx: Matrix(dDec.pointer, rows: n, cols: d), accumulate: updateDecoder)
            dEncIn.resize(to: m * d)
            Kernels.fill(dEncIn.pointer, count: m * d, value: 0)
            decoder.backward(dDec.pointer, dx: dEmb.pointer, dSource: dEncIn.pointer, accumulate: updateDecoder)
            if updateDecoder { embedding.backward(dEmb.pointer) }
            if needEncoderGradient { Kernels.add(dEncIn.pointer, into: dEnc.pointer, count: m * d) }
        }
        // the CTC branch
        if let ctcLayer, let ctc, updateCTC || needEncoderGradient {
            dCtc.resize(to: m * vocabSize)
            ctc.backward(seed: seed * ctcWeight, dLogits: dCtc.pointer)
            precision?.round(dCtc.pointer, count: m * vocabSize)
            dEncIn.resize(to: m * d)
            ctcLayer.backward(x: Matrix(encoder.output.pointer, rows: m, cols: d), y: Matrix(ctcLogits.pointer, rows: m, cols: vocabSize),
                              dy: Matrix(dCtc.pointer, rows: m, cols: vocabSize), dx: needEncoderGradient ? Matrix(dEncIn.pointer, rows: m, cols: d) : nil,
                              accumulate: updateCTC)
            if needEncoderGradient { Kernels.add(dEncIn.pointer, into: dEnc.pointer, count: m * d) }
        }
        guard updateEncoder else { return }
        dEncIn.resize(to: m * d)
        encoder.backward(dEnc.pointer, dx: dEncIn.pointer, accumulate: true)
        try prenet.backward(dEncIn.pointer, accumulate: true)
    }

    // MARK: - buffers (state-dict entries that are not parameters)

    /// BatchNorm running statistics and the normalisation's global statistics, by their state-dict names.
    public var bufferTensors: [NamedTensor] {
        var out: [NamedTensor] = []
        if let normalize {
            for (name, v) in normalize.namedBuffers { out.append(NamedTensor(name: "encoder.normalize." + name, shape: name == "global_batch" ? [1] : [v.count], values: v)) }
        }
        for bn in prenet.norms { out.append(contentsOf: bn.buffers) }
        return out
    }

    /// Loads a whole state dict: the parameters (names and shapes exactly this model's) and the buffers
    /// (BatchNorm running statistics, the normalisation's global statistics); SpeeChain's positional-encoding
    /// tables (`*.posenc.posenc`), which it keeps in its state dict, are recomputed here and skipped.
    public func loadStateDict(_ tensors: [NamedTensor], source: String) throws {
        try loadParametersAndBuffers(tensors.filter { !$0.name.hasSuffix(".posenc.posenc") }, source: source)
    }

    public func loadBuffers(_ tensors: [NamedTensor], source: String) throws {
        var mean: [Float]?, std: [Float]?, count: Int64 = 0
        var norms: [(BatchNorm2d, NamedTensor)] = []
        for t in tensors {
            switch t.name {
            case "encoder.normalize.global_mean" where normalize != nil: mean = t.values
            case "encoder.normalize.global_std" where normalize != nil: std = t.values
            case "encoder.normalize.global_batch" where normalize != nil: count = Int64(t.values.first ?? 0)
            default:
                guard let bn = prenet.norms.first(where: { $0.fits(t) }) else {
                    throw ModelError.weightsMismatch(source: source, reason: "unexpected tensor '\(t.name)' \(t.shape)")
                }
                norms.append((bn, t))
            }
        }
        if let normalize, mean != nil || std != nil {
            do { try normalize.load(mean: mean, std: std, batchCount: count) }   // checks before it loads
            catch { throw ModelError.weightsMismatch(source: source, reason: "\(error)") }
        }
        for (bn, t) in norms { bn.load(t) }
    }
}
