/// The registry `model_type` is looked up in, building a model from its `model_conf`.
public enum Models {
    public static let types = [MLPClassifier.typeName, ARASR.typeName]

    /// `conf` is train_cfg.model.model_conf; `moduleConf` and `criterionConf` are train_cfg.model's module_conf and
    /// criterion_conf (SpeeChain's layout; the MLP also reads them from inside model_conf).
    public static func make(type: String, conf: [String: ConfigValue], moduleConf: [String: ConfigValue] = [:],
                            criterionConf: [String: ConfigValue] = [:], seed: UInt64) throws -> any Model {
        let model = try build(type: type, conf: conf, moduleConf: moduleConf, criterionConf: criterionConf, seed: seed)
        try checkNames(of: model, type: type)
        return model
    }

    /// The trainer reports losses and metrics together under their names (logs, curves, best_model_selection), so
    /// a name that is both (or twice in one list) is refused at set-up, not met as a crash at the first validation.
    public static func checkNames(of model: any Model, type: String) throws {
        var seen = Set<String>()
        for name in model.lossNames + model.metricNames where !seen.insert(name).inserted {
            throw ModelError.dataMismatch("model_type '\(type)' reports '\(name)' twice among its losses (\(model.lossNames.joined(separator: ", "))) and metrics (\(model.metricNames.joined(separator: ", "))); every name must be unique")
        }
    }

    private static func build(type: String, conf: [String: ConfigValue], moduleConf: [String: ConfigValue],
                              criterionConf: [String: ConfigValue], seed: UInt64) throws -> any Model {
        switch type {
        case ARASR.typeName:
            return try ARASR.make(modelConf: conf, moduleConf: moduleConf, criterionConf: criterionConf, seed: seed)
        case MLPClassifier.typeName:
            let conf = try flattenSpeeChainShape(conf)
            let reader = try ConfReader(conf, context: "model_conf", allowedKeys: ["encoder", "decoder", "label_smoothing"])
            func module(_ key: String) throws -> MLPClassifier.ModuleConf {
                guard case .map(let m)? = conf[key] else {
                    if let v = conf[key] { throw ConfigError.wrongType(context: "model_conf", key: key, expected: "a mapping with dims", found: v) }
                    throw ConfigError.missing(context: "model_conf", key: key)
                }
                let r = try ConfReader(m, context: "model_conf.\(key)", allowedKeys: ["dims", "activation", "approximate", "layer_norm", "dropout"])
                guard case .list(let items)? = m["dims"] else { throw ConfigError.missing(context: r.context, key: "dims") }
                let dims = try items.map { item -> Int in
                    guard case .int(let i) = item else {
                        throw ConfigError.wrongType(context: r.context, key: "dims", expected: "a list of integers", found: .list(items))
                    }
                    return i
                }
                var c = MLPClassifier.ModuleConf(dims: dims, activation: try r.string("activation", default: "ReLU"))
                c.approximate = try r.string("approximate", default: "none")
                c.layerNorm = try r.bool("layer_norm", default: false)
                c.dropout = Float(try r.double("dropout", default: 0))
                return c
            }
            return try MLPClassifier(encoder: module("encoder"), decoder: module("decoder"),
                                     labelSmoothing: Float(try reader.double("label_smoothing", default: 0)), seed: seed)
        default:
            throw ConfigError.unknownType(kind: "model_type", name: type, valid: types)
        }
    }

    /// SpeeChain's model_conf shape — `customize_conf` (the model's own arguments), `module_conf` (one entry per
    /// first-level module) and `criterion_conf` (the losses' arguments) — read into the flat shape the MLP takes
    /// (`encoder`, `decoder`, `label_smoothing`). A conf without those three keys is already flat.
    static func flattenSpeeChainShape(_ conf: [String: ConfigValue]) throws -> [String: ConfigValue] {
        let sections = ["customize_conf", "module_conf", "criterion_conf"]
        guard conf.keys.contains(where: sections.contains) else { return conf }
        _ = try ConfReader(conf, context: "model_conf", allowedKeys: sections)
        var flat: [String: ConfigValue] = [:]
        for key in sections {
            switch conf[key] {
            case nil, .null?: continue
            case .map(let m)?:
                for (k, v) in m {
                    if flat[k] != nil { throw ConfigError.conflict("model_conf: '\(k)' is given in two of \(sections.joined(separator: ", "))") }
                    flat[k] = v
                }
            case let other?: throw ConfigError.wrongType(context: "model_conf", key: key, expected: "a mapping", found: other)
            }
        }
        return flat
    }
}
