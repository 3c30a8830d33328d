/// One named parameter: a view (offset, shape) into the model's flat buffers, named as in PyTorch's state_dict.
public struct ParameterInfo: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
}

/// All parameters of a model in one contiguous Float32 buffer and all gradients in one other, laid out
/// module by module, so that a first-level module is one contiguous range: an allreduce, an optimizer step,
/// a norm or a checkpoint is one pass over a few ranges.
public final class ParameterStore {
    public private(set) var entries: [ParameterInfo] = []
    /// First-level modules in layout order with their contiguous ranges.
    public private(set) var modules: [(name: String, range: Range<Int>)] = []
    public private(set) var values: FloatBuffer
    public private(set) var gradients: FloatBuffer
    private var index: [String: Int] = [:]
    /// Σ g² of gradients recorded where they were written (see GradientNormTally).
    public let normTally = GradientNormTally()

    public init() {
        values = FloatBuffer(count: 0)
        gradients = FloatBuffer(count: 0)
    }

    public var count: Int { values.count }

    /// Declares a parameter and returns its offset; call during model construction, before `allocate()`.
    public func declare(_ name: String, shape: [Int], module: String) -> Int {
        precondition(index[name] == nil, "parameter \(name) declared twice")
        let offset = entries.last.map { $0.offset + $0.count } ?? 0
        let info = ParameterInfo(name: name, shape: shape, offset: offset)
        index[name] = entries.count
        entries.append(info)
        if let last = modules.last, last.name == module {
            modules[modules.count - 1].range = last.range.lowerBound..<info.range.upperBound
        } else {
            precondition(!modules.contains { $0.name == module }, "module \(module) is not contiguous")
            modules.append((module, offset..<info.range.upperBound))
        }
        return offset
    }

    /// Sizes the flat buffers once all parameters are declared.
    public func allocate() {
        let n = entries.last.map { $0.offset + $0.count } ?? 0
        values = FloatBuffer(count: n)
        gradients = FloatBuffer(count: n)
    }

    /// Moves the gradients into `buffer` (as many floats; the current values are copied): a rank's segment of a
    /// shared-memory window, where the ranks of a node sum them (SharedGradientWindow).
    public func adoptGradients(_ buffer: FloatBuffer) {
        precondition(buffer.count == gradients.count)
        buffer.pointer.update(from: gradients.pointer, count: gradients.count)
        gradients = buffer
    }

    public func info(_ name: String) -> ParameterInfo? { index[name].map { entries[$0] } }

    public func range(ofModule name: String) -> Range<Int>? { modules.first { $0.name == name }?.range }

    public var moduleNames: [String] { modules.map(\.name) }

    /// The ranges of the given modules (all when nil), adjacent ones merged, in layout order.
    public func ranges(ofModules names: [String]?) -> [Range<Int>] {
        let selected = modules.filter { names?.contains($0.name) ?? true }.map(\.range)
        var merged: [Range<Int>] = []
        for r in selected {
            if let last = merged.last, last.upperBound == r.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<r.upperBound
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    public func zeroGradients(_ ranges: [Range<Int>]) {
        normTally.forget(ranges)
        for r in ranges { Kernels.fill(gradients.pointer + r.lowerBound, count: r.count, value: 0) }
    }

    /// The parameters as PyTorch-named tensors (for safetensors).
    public func namedTensors() -> [NamedTensor] {
        entries.map { NamedTensor(name: $0.name, shape: $0.shape, values: values.toArray($0.range)) }
    }

    /// Checks that named tensors are exactly this model's parameters (names and shapes), changing nothing.
    public func validate(_ tensors: [NamedTensor], source: String) throws {
        var byName: [String: NamedTensor] = [:]
        for t in tensors { byName[t.name] = t }
        for e in entries {
            guard let t = byName[e.name] else {
                throw ModelError.weightsMismatch(source: source, reason: "missing parameter '\(e.name)'")
            }
            guard t.shape == e.shape else {
                throw ModelError.weightsMismatch(source: source,
                    reason: "'\(e.name)' has shape \(t.shape), the model expects \(e.shape)")
            }
        }
        if let extra = tensors.first(where: { index[$0.name] == nil }) {
            throw ModelError.weightsMismatch(source: source, reason: "unexpected parameter '\(extra.name)'")
        }
        for t in tensors {
            if let i = t.values.firstIndex(where: { !$0.isFinite }) {
                throw ModelError.weightsMismatch(source: source, reason: "'\(t.name)' holds \(t.values[i]) at index \(i); weights must be finite")
            }
        }
    }

    /// Loads every parameter from named tensors; names and shapes must match exactly (nothing changes otherwise).
    public func load(_ tensors: [NamedTensor], source: String) throws {
        try validate(tensors, source: source)
        for t in tensors { if let i = index[t.name] { values.copy(from: t.values, at: entries[i].offset) } }
    }
}
