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
