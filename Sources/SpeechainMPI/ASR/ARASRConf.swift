/// Reads SpeeChain's `ar_asr.ARASR` configuration — `model_conf` (customize_conf), `module_conf` (frontend,
/// normalize, specaug, enc_prenet, encoder, dec_emb, decoder, each `{type, conf}`) and `criterion_conf` (ce_loss,
/// ctc_loss) — into `ARASR.Parts`, with SpeeChain's defaults. Options SpeeChain has that are not built here
/// (e.g. an internal LM, conv feed-forwards, post-LN) are refused by name rather than ignored.
extension ARASR {
    public static func make(modelConf: [String: ConfigValue], moduleConf: [String: ConfigValue],
                            criterionConf: [String: ConfigValue], seed: UInt64) throws -> ARASR {
        let ctxModel = "train_cfg.model.model_conf"
        _ = try ConfReader(modelConf, context: ctxModel, allowedKeys: ["customize_conf", "init"])
        if let v = modelConf["init"], v != .string("xavier"), v != .null {
            throw ConfigError.invalidValue(context: ctxModel, key: "init", reason: "only 'xavier' (SpeeChain's default) is built, found \(v)")
        }
        let custom = try ConfReader(try map(modelConf["customize_conf"], "\(ctxModel).customize_conf"), context: "\(ctxModel).customize_conf",
                                    allowedKeys: ["token_type", "token_path", "ctc_weight", "sample_rate", "audio_format", "ilm_weight", "ilm_sub_weight",
                                                  "return_att_type", "return_att_head_num", "return_att_layer_num", "lm_model_cfg", "lm_model_path"])
        for key in ["ilm_weight", "ilm_sub_weight"] where try custom.double(key, default: 0) != 0 {
            throw ConfigError.invalidValue(context: custom.context, key: key, reason: "the internal language model is not built here; use 0")
        }
        guard custom.contains("token_type") else { throw ConfigError.missing(context: custom.context, key: "token_type") }
        let tokenizer: any Tokenizer
        do {
            tokenizer = try makeTokenizer(tokenType: try custom.string("token_type", default: "char"),
                                          tokenPath: custom.contains("token_path") ? try custom.string("token_path", default: "") : nil)
        } catch { throw ConfigError.invalidValue(context: custom.context, key: "token_path", reason: "\(error)") }
        var p = Parts(vocabSize: tokenizer.vocabulary.count)
        p.ctcWeight = Float(try custom.double("ctc_weight", default: 0))
        let sampleRate = try custom.int("sample_rate", default: 16000)

        let ctxModule = "train_cfg.model.module_conf"
        let modules = try ConfReader(moduleConf, context: ctxModule,
                                     allowedKeys: ["frontend", "normalize", "specaug", "enc_prenet", "encoder", "dec_emb", "decoder"])
        // frontend
        if let (type, conf) = try typed(moduleConf["frontend"], "\(ctxModule).frontend") {
            guard type == Speech2MelSpec.typeName else {
                throw ConfigError.invalidValue(context: "\(ctxModule).frontend", key: "type", reason: "must be \(Speech2MelSpec.typeName), found '\(type)'")
            }
            var c = conf
            if c["sr"] == nil { c["sr"] = .int(sampleRate) }
            p.frontend = try Speech2MelSpec(conf: c, context: "\(ctxModule).frontend.conf")
        }
        p.normalize = moduleConf["normalize"] ?? .null
        p.specaug = moduleConf["specaug"] ?? .null
        // enc_prenet
        guard let (prenetType, pc) = try typed(moduleConf["enc_prenet"], "\(ctxModule).enc_prenet") else {
            throw ConfigError.missing(context: ctxModule, key: "enc_prenet")
        }
        guard prenetType == "prenet.conv2d.Conv2dPrenet" else {
            throw ConfigError.invalidValue(context: "\(ctxModule).enc_prenet", key: "type", reason: "only prenet.conv2d.Conv2dPrenet is built, found '\(prenetType)'")
        }
        let pr = try ConfReader(pc, context: "\(ctxModule).enc_prenet.conf",
                                allowedKeys: ["feat_dim", "conv_dims", "conv_kernel", "conv_stride", "conv_padding", "conv_batchnorm", "sync_batchnorm",
                                              "conv_activation", "conv_dropout", "lnr_dims", "lnr_activation", "lnr_dropout", "zero_centered"])
        p.featDim = try pr.int("feat_dim", default: 80)
        p.convDims = try intList(pc["conv_dims"], default: [64, 64], pr, "conv_dims")
        p.convKernel = try pr.int("conv_kernel", default: 3)
        p.convStride = try pr.int("conv_stride", default: 2)
        guard p.convKernel >= 1, p.convStride >= 1 else { throw ConfigError.invalidValue(context: pr.context, key: "conv_kernel", reason: "kernel and stride must be >= 1") }
        guard try pr.int("conv_padding", default: 0) == 0 else { throw ConfigError.invalidValue(context: pr.context, key: "conv_padding", reason: "only 0 is built") }
        p.convBatchNorm = try pr.bool("conv_batchnorm", default: false)
        p.syncBatchNorm = try pr.bool("sync_batchnorm", default: false)
        if p.syncBatchNorm && !p.convBatchNorm { throw ConfigError.invalidValue(context: pr.context, key: "sync_batchnorm", reason: "needs conv_batchnorm: true") }
        p.convActivation = pr.contains("conv_activation") ? try pr.string("conv_activation", default: "ReLU") : (pc["conv_activation"] == .null ? nil : "ReLU")
        p.lnrDims = try intList(pc["lnr_dims"], default: [512], pr, "lnr_dims")
        p.lnrActivation = pr.contains("lnr_activation") ? try pr.string("lnr_activation", default: "") : nil
        for key in ["conv_dropout", "lnr_dropout"] where pr.contains(key) {
            throw ConfigError.invalidValue(context: pr.context, key: key, reason: "dropout inside the prenet is not built; leave it out")
        }
        if try pr.bool("zero_centered", default: false) { throw ConfigError.invalidValue(context: pr.context, key: "zero_centered", reason: "only false is built") }
        guard p.convDims.allSatisfy({ $0 >= 1 }), p.lnrDims.allSatisfy({ $0 >= 1 }), !p.lnrDims.isEmpty else {
            throw ConfigError.invalidValue(context: pr.context, key: "conv_dims", reason: "conv_dims and lnr_dims must be positive sizes")
        }
        // encoder and decoder
        guard let (encType, ec) = try typed(moduleConf["encoder"], "\(ctxModule).encoder") else { throw ConfigError.missing(context: ctxModule, key: "encoder") }
        guard encType == "transformer.encoder.TransformerEncoder" else {
            throw ConfigError.invalidValue(context: "\(ctxModule).encoder", key: "type", reason: "only transformer.encoder.TransformerEncoder is built, found '\(encType)'")
        }
        p.encoder = try transformerConf(ec, context: "\(ctxModule).encoder.conf", embScaleDefault: false)
        guard let (embType, mc) = try typed(moduleConf["dec_emb"], "\(ctxModule).dec_emb") else { throw ConfigError.missing(context: ctxModule, key: "dec_emb") }
        guard embType == "prenet.embed.EmbedPrenet" else {
            throw ConfigError.invalidValue(context: "\(ctxModule).dec_emb", key: "type", reason: "only prenet.embed.EmbedPrenet is built, found '\(embType)'")
        }
        let em = try ConfReader(mc, context: "\(ctxModule).dec_emb.conf", allowedKeys: ["embedding_dim", "scale", "padding_idx", "vocab_size"])
        guard em.contains("embedding_dim") else { throw ConfigError.missing(context: em.context, key: "embedding_dim") }
        p.embedScale = try em.bool("scale", default: false)
        guard try em.int("padding_idx", default: 0) == 0 else { throw ConfigError.invalidValue(context: em.context, key: "padding_idx", reason: "only 0 (<blank>) is built") }
        guard let (decType, dc) = try typed(moduleConf["decoder"], "\(ctxModule).decoder") else { throw ConfigError.missing(context: ctxModule, key: "decoder") }
        guard decType == "transformer.decoder.TransformerDecoder" else {
            throw ConfigError.invalidValue(context: "\(ctxModule).decoder", key: "type", reason: "only transformer.decoder.TransformerDecoder is built, found '\(decType)'")
        }
        p.decoder = try transformerConf(dc, context: "\(ctxModule).decoder.conf", embScaleDefault: true)
        p.decoder.dModel = try em.int("embedding_dim", default: 0)
        _ = modules
        // criteria
        let ctxCrit = "train_cfg.model.criterion_conf"
        _ = try ConfReader(criterionConf, context: ctxCrit, allowedKeys: ["ce_loss", "ctc_loss"])
        if let ceConf = criterionConf["ce_loss"], ceConf != .null {
            let c = try ConfReader(try map(ceConf, "\(ctxCrit).ce_loss"), context: "\(ctxCrit).ce_loss",
                                   allowedKeys: ["label_smoothing", "length_normalized", "temperature", "confid_threshold"])
            p.labelSmoothing = Float(try c.double("label_smoothing", default: 0))
            guard p.labelSmoothing >= 0 && p.labelSmoothing < 1 else { throw ConfigError.invalidValue(context: c.context, key: "label_smoothing", reason: "must be in [0, 1), found \(p.labelSmoothing)") }
            if try c.bool("length_normalized", default: false) { throw ConfigError.invalidValue(context: c.context, key: "length_normalized", reason: "only false (SpeeChain's default) is built") }
            if try c.double("temperature", default: 1) != 1 { throw ConfigError.invalidValue(context: c.context, key: "temperature", reason: "only 1 is built") }
            if try c.double("confid_threshold", default: 0) != 0 { throw ConfigError.invalidValue(context: c.context, key: "confid_threshold", reason: "only 0 is built") }
        }
        if case .map(let cc)? = criterionConf["ctc_loss"] {
            let c = try ConfReader(cc, context: "\(ctxCrit).ctc_loss", allowedKeys: ["zero_infinity", "blank"])
            p.zeroInfinity = try c.bool("zero_infinity", default: true)
            guard try c.int("blank", default: 0) == 0 else { throw ConfigError.invalidValue(context: c.context, key: "blank", reason: "the blank is <blank>, id 0") }
        }
        return try ARASR(p, seed: seed)
    }

    private static func map(_ v: ConfigValue?, _ context: String) throws -> [String: ConfigValue] {
        switch v {
        case nil, .null?: return [:]
        case .map(let m)?: return m
        case let other?: throw ConfigError.wrongType(context: context, key: "", expected: "a mapping", found: other)
        }
    }

    /// A `{type, conf}` module entry; nil when absent or null.
    private static func typed(_ v: ConfigValue?, _ context: String) throws -> (String, [String: ConfigValue])? {
        guard let v, v != .null else { return nil }
        guard case .map(let m) = v else { throw ConfigError.wrongType(context: context, key: "", expected: "a mapping with type and conf", found: v) }
        let r = try ConfReader(m, context: context, allowedKeys: ["type", "conf"])
        guard r.contains("type") else { throw ConfigError.missing(context: context, key: "type") }
        return (try r.string("type", default: ""), try map(m["conf"], "\(context).conf"))
    }

    /// An integer or a list of integers (SpeeChain accepts both).
    private static func intList(_ v: ConfigValue?, default d: [Int], _ r: ConfReader, _ key: String) throws -> [Int] {
        switch v {
        case nil: return d
        case .int(let i)?: return [i]
        case .list(let items)?:
            return try items.map { guard case .int(let i) = $0 else { throw ConfigError.wrongType(context: r.context, key: key, expected: "an integer or a list of integers", found: v!) }; return i }
        case let other?: throw ConfigError.wrongType(context: r.context, key: key, expected: "an integer or a list of integers", found: other)
        }
    }

    private static func transformerConf(_ c: [String: ConfigValue], context: String, embScaleDefault: Bool) throws -> TransformerEncoder.Conf {
        let r = try ConfReader(c, context: context, allowedKeys: ["posenc_type", "posenc_maxlen", "posenc_dropout", "posenc_scale", "posenc_init_alpha",
                                                                   "emb_layernorm", "emb_scale", "d_model", "num_heads", "num_layers", "scale_dp_by_head",
                                                                   "att_dropout", "fdfwd_dim", "fdfwd_type", "fdfwd_activation", "fdfwd_args", "fdfwd_dropout",
                                                                   "res_dropout", "layernorm_first", "uni_direction"])
        var t = TransformerEncoder.Conf()
        guard try r.string("posenc_type", default: "mix") == "mix" else { throw ConfigError.invalidValue(context: context, key: "posenc_type", reason: "only 'mix' is built") }
        for key in ["posenc_scale", "emb_layernorm", "uni_direction"] where try r.bool(key, default: false) {
            throw ConfigError.invalidValue(context: context, key: key, reason: "only false is built")
        }
        guard try r.bool("layernorm_first", default: true) else { throw ConfigError.invalidValue(context: context, key: "layernorm_first", reason: "only true (pre-LN) is built") }
        guard try r.string("fdfwd_type", default: "linear") == "linear" else { throw ConfigError.invalidValue(context: context, key: "fdfwd_type", reason: "only 'linear' is built") }
        if case .map(let a)? = c["fdfwd_args"], !a.isEmpty { throw ConfigError.invalidValue(context: context, key: "fdfwd_args", reason: "only {} is built") }
        t.embScale = try r.bool("emb_scale", default: embScaleDefault)
        t.dModel = try r.int("d_model", default: 512)   // SpeeChain takes the input's size instead (the prenet's or the embedding's)
        t.heads = try r.int("num_heads", default: 4)
        t.layers = try r.int("num_layers", default: 8)
        t.ffnSize = try r.int("fdfwd_dim", default: 2048)
        t.ffnActivation = try r.string("fdfwd_activation", default: "ReLU")
        t.scaleByHead = try r.bool("scale_dp_by_head", default: false)
        func rate(_ key: String) throws -> Float {
            let v = try r.double(key, default: 0.1)
            guard v >= 0 && v < 1 else { throw ConfigError.invalidValue(context: context, key: key, reason: "must be in [0, 1), found \(v)") }
            return Float(v)
        }
        t.posencDropout = try rate("posenc_dropout"); t.attDropout = try rate("att_dropout")
        t.ffnDropout = try rate("fdfwd_dropout"); t.resDropout = try rate("res_dropout")
        guard t.heads >= 1, t.layers >= 0, t.ffnSize >= 1 else { throw ConfigError.invalidValue(context: context, key: "num_heads", reason: "num_heads and fdfwd_dim must be >= 1, num_layers >= 0") }
        return t
    }
}
