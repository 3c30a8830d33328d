/// SpeeChain-style `mlp.MLPClassifier`: two first-level modules, `encoder` = Linear, act, Linear, act, …
/// (an activation after every Linear) and `decoder` = Linear, act, …, Linear (none after the last);
/// logits = decoder(encoder(x)); losses: `loss` (cross-entropy with label smoothing); metrics: `accuracy`.
/// Optional per-module `layer_norm` (LayerNorm after each Linear that has an activation) and `dropout`
/// (after each activation) shift the Sequential indices exactly as they would in torch.
public final class MLPClassifier: TableModel {
    public static let typeName = "mlp.MLPClassifier"
    public let parameters = ParameterStore()
    public let encoder: Sequential
    public let decoder: Sequential
    public let lossNames = ["loss"]
    public let metricNames = ["accuracy"]
    private let criterion: CrossEntropy
    private let inputBuffer = FloatBuffer(count: 0)
    private let dlogits = FloatBuffer(count: 0)

    public struct ModuleConf: Sendable {
        public var dims: [Int]
        public var activation: String = "ReLU"
        public var approximate: String = "none"
        public var layerNorm = false
        public var dropout: Float = 0
        public init(dims: [Int], activation: String = "ReLU") { self.dims = dims; self.activation = activation }
    }

    public init(encoder enc: ModuleConf, decoder dec: ModuleConf, labelSmoothing: Float = 0, seed: UInt64 = 0) throws {
        guard enc.dims.count >= 2 else { throw ConfigError.invalidValue(context: "model_conf.encoder", key: "dims", reason: "needs at least two sizes, e.g. [16, 32]") }
        guard dec.dims.count >= 2 else { throw ConfigError.invalidValue(context: "model_conf.decoder", key: "dims", reason: "needs at least two sizes, e.g. [32, 4]") }
        guard enc.dims.last == dec.dims.first else {
            throw ConfigError.invalidValue(context: "model_conf", key: "decoder.dims",
                reason: "must start with the encoder's output size \(enc.dims.last!), found \(dec.dims.first!)")
        }
        guard (0..<1).contains(labelSmoothing) else {
            throw ConfigError.invalidValue(context: "model_conf", key: "label_smoothing", reason: "must be in [0, 1), found \(labelSmoothing)")
        }
        // parameters, gradients and up to three optimizer slots per parameter, before anything is allocated
        var modelBytes = 0
        for (name, conf) in [("encoder", enc), ("decoder", dec)] {
            for i in 1..<conf.dims.count {
                modelBytes += try MemoryLimit.check([conf.dims[i - 1], conf.dims[i], 5], context: "model_conf.\(name)", key: "dims",
                                                    what: "the \(conf.dims[i - 1])×\(conf.dims[i]) layer with its gradients and optimizer state")
            }
        }
        try MemoryLimit.check([modelBytes], bytesPerElement: 1, context: "model_conf", key: "dims", what: "the model with its gradients and optimizer state")
        encoder = Sequential(name: "encoder", inputWidth: enc.dims[0],
                             layers: try Self.layers(enc, context: "model_conf.encoder", activationAfterLast: true))
        decoder = Sequential(name: "decoder", inputWidth: dec.dims[0],
                             layers: try Self.layers(dec, context: "model_conf.decoder", activationAfterLast: false))
        criterion = CrossEntropy(labelSmoothing: labelSmoothing)
        encoder.declareParameters(in: parameters)
        decoder.declareParameters(in: parameters)
        parameters.allocate()
        var rng = Xoshiro256(seed: seed, stream: 0x1417)
        encoder.initialize(in: parameters, rng: &rng)
        decoder.initialize(in: parameters, rng: &rng)
    }

    private static func layers(_ conf: ModuleConf, context: String, activationAfterLast: Bool) throws -> [Layer] {
        guard conf.dims.allSatisfy({ $0 > 0 }) else {
            throw ConfigError.invalidValue(context: context, key: "dims", reason: "must be positive sizes, found \(conf.dims)")
        }
        guard (0..<1).contains(conf.dropout) else {
            throw ConfigError.invalidValue(context: context, key: "dropout", reason: "must be in [0, 1), found \(conf.dropout)")
        }
        var result: [Layer] = []
        for i in 1..<conf.dims.count {
            result.append(Linear(conf.dims[i - 1], conf.dims[i]))
            let isLast = i == conf.dims.count - 1
            guard !isLast || activationAfterLast else { break }
            if conf.layerNorm { result.append(LayerNorm(conf.dims[i])) }
            result.append(try activation(conf, context: context))
            if conf.dropout > 0 { result.append(Dropout(p: conf.dropout)) }
        }
        return result
    }

    static let activations = ["ReLU", "GELU", "Tanh"]

    private static func activation(_ conf: ModuleConf, context: String) throws -> Layer {
        switch conf.activation {
        case "ReLU": return ReLU()
        case "Tanh": return Tanh()
        case "GELU":
            guard let a = GELU.Approximation(rawValue: conf.approximate) else {
                throw ConfigError.invalidValue(context: context, key: "approximate", reason: "must be 'none' or 'tanh', found '\(conf.approximate)'")
            }
            return GELU(approximate: a)
        default:
            throw ConfigError.invalidValue(context: context, key: "activation",
                reason: "must be one of \(activations.joined(separator: ", ")), found '\(conf.activation)'")
        }
    }

    public var inputWidth: Int { encoder.inputWidth }
    public var classCount: Int { decoder.outputWidth }

    public func forward(_ batch: Batch, context: ForwardContext, losses: inout NamedValues, metrics: inout NamedValues) throws {
        guard batch.cols == inputWidth, batch.features.count == batch.rows * batch.cols, batch.rows > 0 else {
            throw ModelError.dataMismatch("batch has \(batch.rows) rows of \(batch.cols) features; the model expects \(inputWidth) features")
        }
        let k = Int32(classCount)
        if let bad = batch.labels.first(where: { $0 < 0 || $0 >= k }) {
            throw ModelError.dataMismatch("label \(bad) is outside the model's \(classCount) classes [0, \(classCount - 1)]")
        }
        inputBuffer.resize(to: batch.features.count)
        inputBuffer.copy(from: batch.features)
        let x = Matrix(inputBuffer.pointer, rows: batch.rows, cols: batch.cols)
        let h = encoder.forward(x, context: context)
        let logits = decoder.forward(h, context: context, inputPrecision: encoder.outputPrecision)
        let (loss, accuracy) = batch.labels.withUnsafeBufferPointer { criterion.forward(logits: logits, labels: $0) }
        losses.values[0] = loss
        metrics.values[0] = accuracy
        dlogits.resize(to: logits.count)
        lastRows = batch.rows
    }

    private var lastRows = 0

    public func backward(loss: String, seed: Float, modules: [String]) throws {
        guard loss == "loss" else { throw ModelError.unknownLoss(name: loss, valid: lossNames) }
        let wantEncoder = modules.contains("encoder"), wantDecoder = modules.contains("decoder")
        guard wantEncoder || wantDecoder else { return }
        let d = Matrix(dlogits.pointer, rows: lastRows, cols: classCount)
        criterion.backward(seed: seed, into: d)
        // cross-entropy runs in float32 on the upcast logits (autocast's float32 list); the upcast's backward rounds
        // the (loss-scaled) gradient to the logits' dtype, the first place where a too-large scale overflows.
        decoder.outputPrecision?.round(d.data, count: d.count)
        let dh = decoder.backward(d, needInputGradient: wantEncoder, accumulate: wantDecoder)
        if wantEncoder, let dh { _ = encoder.backward(dh, needInputGradient: false, accumulate: true) }
    }

    public var description: String {
        "MLPClassifier(\n  (encoder): " + encoder.description.replacingOccurrences(of: "\n", with: "\n  ")
            + "\n  (decoder): " + decoder.description.replacingOccurrences(of: "\n", with: "\n  ") + "\n)"
    }
}

import Foundation
