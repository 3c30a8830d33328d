/// The registry `model_type` is looked up in, building a model from its `model_conf`.
public enum Models {
    public static let types = [MLPClassifier.typeName]

    public static func make(type: String, conf: [String: ConfigValue], seed: UInt64) throws -> any Model {
        switch type {
        case MLPClassifier.typeName:
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
}
