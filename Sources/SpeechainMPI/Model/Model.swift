/// Named scalar values (losses or metrics) in a fixed order, so a step reads and writes them without allocating.
public struct NamedValues: Sendable, Equatable, CustomStringConvertible {
    public let names: [String]
    public var values: [Float]

    public init(names: [String]) { self.names = names; values = [Float](repeating: 0, count: names.count) }
    public init(_ pairs: KeyValuePairs<String, Float>) { names = pairs.map(\.key); values = pairs.map(\.value) }

    public subscript(name: String) -> Float? {
        get { names.firstIndex(of: name).map { values[$0] } }
        set { if let i = names.firstIndex(of: name), let v = newValue { values[i] = v } }
    }

    public var description: String {
        zip(names, values).map { "\($0)=\(String(format: "%.4f", $1))" }.joined(separator: ", ")
    }
}

/// A trainable model: first-level modules over one ParameterStore; `forward` computes every named loss
/// (always `loss`) and metric; `backward` adds seed·∂loss/∂θ into the gradient buffer for the parameters of
/// the given modules only, skipping work no requested gradient depends on.
public protocol Model: AnyObject, CustomStringConvertible {
    var parameters: ParameterStore { get }
    var lossNames: [String] { get }
    var metricNames: [String] { get }
    /// Runs the model on `batch`, writing into `losses` and `metrics` (shaped by lossNames / metricNames).
    func forward(_ batch: Batch, context: ForwardContext, losses: inout NamedValues, metrics: inout NamedValues) throws
    func backward(loss: String, seed: Float, modules: [String]) throws
    /// The model's state that is not trained (BatchNorm running statistics, a normalisation's global statistics),
    /// under its state-dict names: saved beside the parameters in every weight file and checkpoint.
    var bufferTensors: [NamedTensor] { get }
    /// Loads buffers by their state-dict names; a name the model does not have or a wrong size is an error naming
    /// `source`, and then nothing is loaded. Buffers not given keep their values.
    func loadBuffers(_ tensors: [NamedTensor], source: String) throws
    /// Loads a state dict: exactly the model's parameters (names and shapes), and buffers as `loadBuffers`.
    func loadStateDict(_ tensors: [NamedTensor], source: String) throws
}

extension Model {
    public var bufferTensors: [NamedTensor] { [] }

    public func loadBuffers(_ tensors: [NamedTensor], source: String) throws {
        if let t = tensors.first {
            throw ModelError.weightsMismatch(source: source, reason: "unexpected tensor '\(t.name)' \(t.shape)")
        }
    }

    public func loadStateDict(_ tensors: [NamedTensor], source: String) throws {
        try loadParametersAndBuffers(tensors, source: source)
    }

    /// What every `loadStateDict` does with the tensors it keeps: the model's parameter names to the parameters,
    /// the rest to `loadBuffers`, everything checked before anything is loaded.
    public func loadParametersAndBuffers(_ tensors: [NamedTensor], source: String) throws {
        let params = tensors.filter { parameters.info($0.name) != nil }
        let buffers = tensors.filter { parameters.info($0.name) == nil }
        try parameters.validate(params, source: source)
        try loadBuffers(buffers, source: source)   // checks them all before it loads any
        try parameters.load(params, source: source)
    }

    /// Parameters then buffers, as a weight file holds them.
    public var stateDict: [NamedTensor] { parameters.namedTensors() + bufferTensors }
}

/// A model of table rows (`feat` [rows, inputWidth], `label` [rows] in 0..<classCount): what a table's data checks
/// itself against.
public protocol TableModel: Model {
    var inputWidth: Int { get }
    var classCount: Int { get }
}

extension Model {
    public var moduleNames: [String] { parameters.moduleNames }
}
