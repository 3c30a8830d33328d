/// One named tensor of a batch, as a value of SpeeChain's batch dictionary: row-major `floats` or `ints` of `shape`
/// (the first dimension is the utterances), zero-padded past each utterance's valid length along the second
/// dimension (`lengths`, SpeeChain's `feat_len` / `text_len`; empty for a tensor without a time axis).
///
/// The arrays keep their capacity when a batch is refilled, so once the largest batch has been seen filling a
/// batch allocates nothing.
public struct BatchTensor: Sendable, Equatable {
    public var shape: [Int] = []
    public var floats: [Float] = []
    public var ints: [Int32] = []
    public var lengths: [Int] = []

    public init() {}

    /// Items along the first dimension.
    public var count: Int { shape.first ?? 0 }
    /// Elements per item (the product of the other dimensions).
    public var itemSize: Int { shape.dropFirst().reduce(1, *) }

    /// Sets a float tensor's shape in place and sizes its values to it, zeroed (no allocation once warm).
    public mutating func resetFloats(_ a: Int, _ b: Int, _ c: Int = 0) { setShape(a, b, c); resize(&floats, elementCount); ints.removeAll(keepingCapacity: true) }
    /// Sets an integer tensor's shape in place and sizes its values to it, zeroed.
    public mutating func resetInts(_ a: Int, _ b: Int = 0, _ c: Int = 0) { setShape(a, b, c); resize(&ints, elementCount); floats.removeAll(keepingCapacity: true) }

    /// The product of the shape.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Trailing zero sizes are dropped: (B, T, 0) is [B, T], (B, 0, 0) is [B].
    private mutating func setShape(_ a: Int, _ b: Int, _ c: Int) {
        let rank = c > 0 ? 3 : b > 0 ? 2 : 1
        if shape.count != rank { shape = [Int](repeating: 0, count: rank) }
        shape[0] = a
        if rank > 1 { shape[1] = b }
        if rank > 2 { shape[2] = c }
        lengths.removeAll(keepingCapacity: true)
    }

    private func resize<T: Numeric>(_ a: inout [T], _ n: Int) {
        if a.count > n { a.removeLast(a.count - n) }
        for k in a.indices { a[k] = 0 }
        if a.count < n { a.append(contentsOf: repeatElement(0, count: n - a.count)) }
    }
}

/// A batch: named padded tensors with their lengths, SpeeChain's batch dictionary (`feat` [B, T, 1] with its
/// lengths, `text` [B, L] with its lengths, …). The trainer, the OptimSchedulers and the monitor never look
/// inside; a Dataset fills it and a Model reads it by name.
///
/// Tables (the MLP's data) are `feat` [rows, cols] and `label` [rows].
public struct Batch: Sendable {
    public private(set) var names: [String] = []
    public var tensors: [BatchTensor] = []

    public init() {}

    /// The position of `name`, adding an empty tensor the first time (the only allocation).
    public mutating func slot(_ name: String) -> Int {
        if let k = names.firstIndex(of: name) { return k }
        names.append(name); tensors.append(BatchTensor())
        return names.count - 1
    }

    public subscript(name: String) -> BatchTensor? {
        names.firstIndex(of: name).map { tensors[$0] }
    }

    /// Utterances (rows) in the batch: the first dimension of its first tensor.
    public var size: Int { tensors.first?.count ?? 0 }

    // MARK: tables

    /// A table batch: `feat` [rows, cols] and `label` [rows].
    public init(features: [Float], labels: [Int32], cols: Int) {
        let f = slot("feat"), l = slot("label")
        tensors[f].shape = [labels.count, cols]; tensors[f].floats = features
        tensors[l].shape = [labels.count]; tensors[l].ints = labels
    }

    public var features: [Float] {
        get { self["feat"]?.floats ?? [] }
        _modify { let k = slot("feat"); yield &tensors[k].floats }
    }
    public var labels: [Int32] {
        get { self["label"]?.ints ?? [] }
        _modify { let k = slot("label"); yield &tensors[k].ints }
    }
    public var cols: Int { self["feat"].map { $0.itemSize } ?? 0 }
    public var rows: Int { self["label"]?.ints.count ?? 0 }
}
