/// The optimizer state in torch's state_dict spirit: the step count and one flat Float32 array per state
/// tensor (e.g. `exp_avg`), laid out over the parameters this optimizer updates, in range order.
public struct OptimizerState: Codable, Equatable, Sendable {
    public var typeName: String
    public var step: Int
    public var lr: Double
    public var tensors: [String: [Float]]
    public init(typeName: String, step: Int, lr: Double, tensors: [String: [Float]]) {
        self.typeName = typeName; self.step = step; self.lr = lr; self.tensors = tensors
    }
}

/// A torch.optim algorithm over flat ranges of one parameter buffer and its gradient buffer.
/// State tensors cover the concatenation of `ranges` (the state offset of range i is the sum of the counts before it).
public protocol Optimizer: AnyObject {
    /// The `optim_type` that selects it (torch's class name, e.g. `Adam`).
    static var typeName: String { get }
    /// The `optim_conf` keys it takes (torch's constructor arguments).
    static var confKeys: [String] { get }
    init(conf: ConfReader, parameterCount: Int) throws
    /// The lr of the only param group; OptimScheduler sets it before every step.
    var lr: Double { get set }
    /// Steps taken so far (torch's `state['step']`).
    var stepCount: Int { get }
    /// One update; the gradient the algorithm sees is `gradientScale`·g (how a pending 1/world size of an
    /// allreduce sum, or a clipping coefficient, is applied without a pass of its own). With `zeroingGradients` the
    /// gradients of `ranges` are 0 afterwards, set as the update reads them (no zeroing pass of its own).
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
              gradientScale: Float, zeroingGradients: Bool)
    func stateDict() -> OptimizerState
    /// Checks that a state fits this optimizer (type, tensors, sizes) without loading it.
    func validateStateDict(_ state: OptimizerState) throws
    func loadStateDict(_ state: OptimizerState) throws
}

extension Optimizer {
    /// One update that leaves the gradients as they were.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>],
                     gradientScale: Float) {
        step(parameters: parameters, gradients: gradients, ranges: ranges, gradientScale: gradientScale, zeroingGradients: false)
    }
}

/// The registry `optim_type` is looked up in; a new optimizer is one type plus one line here.
public enum Optimizers {
    public static let all: [any Optimizer.Type] = [SGD.self, Adam.self, AdamW.self, Adagrad.self, RMSprop.self]

    public static func make(type: String, conf: [String: ConfigValue], parameterCount: Int, owner: String) throws -> any Optimizer {
        guard let t = all.first(where: { $0.typeName == type }) else {
            throw ConfigError.unknownType(kind: "optim_type", name: type, valid: all.map { $0.typeName })
        }
        let reader = try ConfReader(conf, context: "optim_conf of '\(owner)' (\(type))", allowedKeys: t.confKeys)
        return try t.init(conf: reader, parameterCount: parameterCount)
    }
}

/// What every flat optimizer shares: the lr, the step count, the named state tensors and their state_dict.
public class FlatOptimizer {
    public var lr: Double
    public internal(set) var stepCount = 0
    let state: StateSlots
    private let name: String

    init(typeName: String, lr: Double, state: StateSlots) {
        name = typeName; self.lr = lr; self.state = state
    }

    public func stateDict() -> OptimizerState {
        OptimizerState(typeName: name, step: stepCount, lr: lr, tensors: state.export())
    }

    public func validateStateDict(_ s: OptimizerState) throws {
        guard s.typeName == name else {
            throw OptimError.badState("state of a \(s.typeName) optimizer cannot be loaded into \(name)")
        }
        guard s.step >= 0 else { throw OptimError.badState("negative step count \(s.step)") }
        try state.validate(s.tensors, typeName: name)
    }

    public func loadStateDict(_ s: OptimizerState) throws {
        try validateStateDict(s)
        state.copy(s.tensors)
        stepCount = s.step; lr = s.lr
    }
}

/// Named state buffers shared by the optimizers: allocation, state_dict export and checked import.
final class StateSlots {
    let names: [String]
    private(set) var buffers: [FloatBuffer]
    let count: Int

    init(names: [String], count: Int, initialValue: Float = 0) {
        self.names = names; self.count = count
        buffers = names.map { _ in FloatBuffer(count: count, repeating: initialValue) }
    }

    subscript(name: String) -> UnsafeMutablePointer<Float> { buffers[names.firstIndex(of: name)!].pointer }

    func export() -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: zip(names, buffers.map { $0.toArray() }))
    }

    func validate(_ tensors: [String: [Float]], typeName: String) throws {
        for name in names {
            guard let values = tensors[name] else {
                throw OptimError.badState("\(typeName) state has no '\(name)'")
            }
            guard values.count == count else {
                throw OptimError.badState("\(typeName) state '\(name)' holds \(values.count) values, the parameters need \(count)")
            }
        }
    }

    /// Copies validated tensors in (see `validate`).
    func copy(_ tensors: [String: [Float]]) {
        for (i, name) in names.enumerated() { if let v = tensors[name] { buffers[i].copy(from: v) } }
    }
}

extension Optimizer {
    /// Calls `body(offsetInParameters, offsetInState, count)` for each range.
    @inline(__always)
    static func forEachSegment(_ ranges: [Range<Int>], _ body: (Int, Int, Int) -> Void) {
        var stateOffset = 0
        for r in ranges { body(r.lowerBound, stateOffset, r.count); stateOffset += r.count }
    }
}

/// Mistakes in optimizer use a user can cause, one line each.
public enum OptimError: Error, CustomStringConvertible, Equatable {
    case badState(String)
    case invalid(String)
    public var description: String {
        switch self {
        case .badState(let m): return "optimizer state: \(m)"
        case .invalid(let m): return m
        }
    }
}

/// torch's `lerp`: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w).
@inline(__always) func lerp(_ start: SIMD16<Float>, _ end: SIMD16<Float>, _ w: Float) -> SIMD16<Float> {
    w < 0.5 ? start + w * (end - start) : end - (end - start) * (1 - w)
}

func requireRange(_ value: Double, _ key: String, _ reader: ConfReader, _ ok: Bool, _ rule: String) throws {
    guard ok else { throw ConfigError.invalidValue(context: reader.context, key: key, reason: "\(rule), found \(value)") }
}
