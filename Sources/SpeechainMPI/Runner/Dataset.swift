import Foundation

/// An in-memory classification set: features [count, width] row-major (float32) and one label per row.
public struct Dataset: Sendable {
    public let features: [Float]
    public let labels: [Int32]
    public let width: Int
    public var count: Int { labels.count }

    public init(features: [Float], labels: [Int32], width: Int) throws {
        guard width > 0, features.count == labels.count * width else {
            throw DataError.mismatch("features hold \(features.count) values, which is not \(labels.count) rows of \(width)")
        }
        self.features = features; self.labels = labels; self.width = width
    }

    /// Loads features (float32 [N, D]) and labels (int64 [N]) from .npy files.
    public static func load(features: URL, labels: URL) throws -> Dataset {
        let f = try NPY.readFloat32Matrix(contentsOf: features)
        let l = try NPY.readInt64Vector(contentsOf: labels)
        guard l.count == f.rows else {
            throw DataError.mismatch("\(labels.lastPathComponent) has \(l.count) labels but \(features.lastPathComponent) has \(f.rows) rows")
        }
        if let i = l.firstIndex(where: { $0 < 0 || $0 > Int64(Int32.max) }) {
            throw DataError.mismatch("\(labels.path): label \(l[i]) at row \(i) is not a class index")
        }
        if let i = f.values.firstIndex(where: { !$0.isFinite }) {
            throw DataError.mismatch("\(features.path): value \(f.values[i]) at row \(i / max(f.cols, 1)), column \(i % max(f.cols, 1)); features must be finite")
        }
        return try Dataset(features: f.values, labels: l.map { Int32($0) }, width: f.cols)
    }

    /// Learnable synthetic data: x ~ N(0, I) in `width` dims, label = argmax of a fixed random two-layer teacher
    /// network (tanh hidden layer), so that the classes are separable but not linearly.
    public static func synthetic(count: Int, width: Int, classes: Int, seed: UInt64, teacherSeed: UInt64 = 7) throws -> Dataset {
        guard count > 0, width > 0, classes >= 2 else {
            throw DataError.mismatch("synthetic data needs count > 0, width > 0 and at least 2 classes")
        }
        try MemoryLimit.check([count, width], context: "data_cfg (synthetic)", key: "count", what: "\(count) rows of \(width) features")
        try MemoryLimit.check([width, 2 * width + classes, 2], context: "data_cfg (synthetic)", key: "width", what: "the teacher network")
        var teacherRNG = Xoshiro256(seed: teacherSeed, stream: 0x7EAC)
        let hidden = 2 * width
        let w1 = (0..<(hidden * width)).map { _ in teacherRNG.normal() / Float(width).squareRoot() * 2 }
        let w2 = (0..<(classes * hidden)).map { _ in teacherRNG.normal() / Float(hidden).squareRoot() }
        var rng = Xoshiro256(seed: seed, stream: 0xDA7A)
        var features = [Float](repeating: 0, count: count * width)
        var labels = [Int32](repeating: 0, count: count)
        var h = [Float](repeating: 0, count: hidden)
        for n in 0..<count {
            for j in 0..<width { features[n * width + j] = rng.normal() }
            for i in 0..<hidden {
                var s: Float = 0
                for j in 0..<width { s += w1[i * width + j] * features[n * width + j] }
                h[i] = tanhf(s)
            }
            var best = -Float.infinity, arg = 0
            for k in 0..<classes {
                var s: Float = 0
                for i in 0..<hidden { s += w2[k * hidden + i] * h[i] }
                if s > best { best = s; arg = k }
            }
            labels[n] = Int32(arg)
        }
        return try Dataset(features: features, labels: labels, width: width)
    }

    /// The rows `indices` as one batch, written into `batch` (`feat` [rows, width], `label` [rows]; the arrays keep
    /// their capacity, so no allocation once the largest batch has been seen).
    public func fill(_ batch: inout Batch, rows indices: ArraySlice<Int>) {
        indices.withUnsafeBufferPointer { rows in fillRows(&batch, count: rows.count) { k in rows[k] } }
    }

    /// The rows `order[start]`, `order[start + step]`, … (`count` of them) as one batch: a rank's stride share of a
    /// global batch.
    public func fill(_ batch: inout Batch, from order: [Int], start: Int, count: Int, step: Int) {
        fillRows(&batch, count: count) { k in order[start + k * step] }
    }

    private func fillRows(_ batch: inout Batch, count: Int, row: (Int) -> Int) {
        let f = batch.slot("feat"), l = batch.slot("label")
        batch.tensors[f].resetFloats(count, width)
        batch.tensors[l].resetInts(count)
        features.withUnsafeBufferPointer { src in
            batch.tensors[f].floats.withUnsafeMutableBufferPointer { dst in
                for k in 0..<count {
                    let i = row(k)
                    (dst.baseAddress! + k * width).update(from: src.baseAddress! + i * width, count: width)
                }
            }
        }
        for k in 0..<count { batch.tensors[l].ints[k] = labels[row(k)] }
    }

    /// The epoch's order of rows: shuffled from (seed, epoch) or in order.
    public func order(epoch: Int, seed: UInt64, shuffle: Bool) -> [Int] {
        var idx = Array(0..<count)
        guard shuffle else { return idx }
        var rng = Xoshiro256(seed: seed, stream: 0x5EED_0000 &+ UInt64(epoch))
        idx.shuffle(using: &rng)
        return idx
    }
}

/// Data a user gave that cannot be used, one line naming the file or the problem.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case mismatch(String)
    public var description: String {
        switch self { case .mismatch(let m): return m }
    }
}

/// A table as the trainer draws it (data_cfg `batch_size`, `shuffle`): each epoch the rows are shuffled from
/// (seed, epoch), global batch i is the rows order[i·world·b ..< (i+1)·world·b], and rank r takes the r-th block of
/// b of them. (Tables are shuffled by row, so a block is as good as SpeeChain's stride, which matters for
/// length-sorted speech; and a block keeps 1 rank × accum_grad w equal to w ranks, micro-batch by micro-batch.)
/// Evaluation: batches of b rows in order, rank r taking every world-th batch from the r-th.
public final class TableBatches: BatchSource {
    public let table: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let seed: UInt64
    /// The labels' .npy file, for messages (nil for synthetic data).
    public let labelFile: String?

    public init(_ set: Dataset, batchSize: Int, shuffle: Bool, seed: UInt64, labelFile: String? = nil) {
        self.table = set; self.batchSize = batchSize; self.shuffle = shuffle; self.seed = seed; self.labelFile = labelFile
    }

    public var itemCount: Int { table.count }
    public var description: String { "\(table.count) rows × \(table.width) features, batch_size \(batchSize)" }

    public func trainingSteps(epoch: Int, rank: Int, world: Int) -> [[Int]] {
        let order = table.order(epoch: epoch, seed: seed, shuffle: shuffle)
        let (global, overflow) = batchSize.multipliedReportingOverflow(by: world)
        let steps = overflow ? 0 : table.count / global
        return (0..<steps).map { i in Array(order[((i * world + rank) * batchSize)..<((i * world + rank + 1) * batchSize)]) }
    }

    public func evaluationSteps(rank: Int, world: Int) -> [[Int]] {
        stride(from: rank * batchSize, to: table.count, by: batchSize * world).map { Array($0..<min($0 + batchSize, table.count)) }
    }

    public func collate(_ items: [Int], into batch: inout Batch, random: inout Xoshiro256) throws {
        table.fill(&batch, rows: items[...])
    }

    public func check(for model: any Model, set name: String) throws {
        guard let tableModel = model as? TableModel else {
            throw DataError.mismatch("data_cfg.\(name) is a table (rows of features with a label), which \(type(of: model)) does not take")
        }
        if table.width != tableModel.inputWidth {
            throw DataError.mismatch("the data has \(table.width) features per row but the model's input is \(tableModel.inputWidth) wide")
        }
        // labels are checked here, at set-up (where all ranks agree), not when a batch first meets them
        let classes = tableModel.classCount
        if let row = table.labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw DataError.mismatch("\(labelFile ?? "data_cfg.\(name)"): label \(table.labels[row]) at row \(row) is outside the model's \(classes) classes [0, \(classes - 1)]")
        }
    }

    /// Rows, width and the CRC-32C of the features' F32 bytes and of the labels' Int32 bytes.
    public var fingerprint: String {
        let f = table.features.withUnsafeBytes { CRC32C.checksum($0) }, l = table.labels.withUnsafeBytes { CRC32C.checksum($0) }
        return "\(table.count) rows × \(table.width) features (crc32c \(Checkpoint.hex(f)), labels \(Checkpoint.hex(l)))"
    }
}
