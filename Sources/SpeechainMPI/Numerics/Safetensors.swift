import Foundation

/// A named Float32 tensor in row-major order, as stored in a safetensors file.
public struct NamedTensor: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// Reads and writes the safetensors format (an 8-byte little-endian header
/// length, a JSON header, then the raw little-endian tensor data).
///
/// `read` accepts F32 tensors and converts F16, BF16 and F64 tensors to Float
/// (F64 values are rounded to the nearest Float; magnitudes beyond Float's
/// range become infinities). Any other dtype, and any malformed file, throws
/// `InteropError`. `write` always stores F32 and replaces the destination
/// atomically.
public enum Safetensors {
    /// The reference implementation refuses headers larger than this.
    static let maxHeaderBytes: UInt64 = 100_000_000

    /// Reads every tensor and the `__metadata__` map. Tensors come back in the
    /// order of their data offsets (the order their bytes appear in the file).
    public static func read(contentsOf url: URL) throws -> (tensors: [NamedTensor], metadata: [String: String]) {
        let data = try InteropFile.read(url)
        let path = url.path
        return try data.withUnsafeBytes { raw in
            try parse(raw, path: path)
        }
    }

    /// Writes `tensors` in the given order as contiguous F32 data, with
    /// `metadata` (if not empty) as the `__metadata__` entry. The header lists
    /// its keys in sorted order and is padded with spaces to a multiple of 8
    /// bytes, like the reference writer.
    /// The file is written to a temporary file in the same directory, fsynced
    /// and renamed over `url`, so `url` never holds a partial file.
    /// `midWrite` (a test hook) runs once the header is in the temporary file and before the data.
    public static func write(_ tensors: [NamedTensor], metadata: [String: String] = [:], to url: URL,
                             midWrite: (() -> Void)? = nil) throws {
        let path = url.path
        var names = Set<String>()
        var header: [String: Any] = [:]
        if !metadata.isEmpty {
            header["__metadata__"] = metadata
        }
        var offset = 0
        for tensor in tensors {
            if tensor.name == "__metadata__" {
                throw InteropError.invalidArgument(path: path, reason: "a tensor cannot be named '__metadata__'")
            }
            guard names.insert(tensor.name).inserted else {
                throw InteropError.invalidArgument(path: path, reason: "duplicate tensor name \(InteropError.excerpt(tensor.name))")
            }
            guard let count = elementCount(tensor.shape) else {
                throw InteropError.invalidArgument(
                    path: path, reason: "tensor \(InteropError.excerpt(tensor.name)) has an invalid shape \(tensor.shape)")
            }
            guard count == tensor.values.count else {
                throw InteropError.invalidArgument(
                    path: path,
                    reason: "tensor \(InteropError.excerpt(tensor.name)) has shape \(tensor.shape) (\(count) elements) but \(tensor.values.count) values")
            }
            let (byteCount, overflow1) = count.multipliedReportingOverflow(by: 4)
            let (end, overflow2) = offset.addingReportingOverflow(byteCount)
            guard !overflow1, !overflow2 else {
                throw InteropError.invalidArgument(path: path, reason: "tensors are too large to store")
            }
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, end]] as [String: Any]
            offset = end
        }

        var headerBytes: [UInt8]
        do {
            headerBytes = [UInt8](try JSONSerialization.data(withJSONObject: header, options: .sortedKeys))
        } catch {
            throw InteropError.writeFailed(path: path, reason: "cannot encode the header as JSON (\(error.localizedDescription))")
        }
        let padding = (8 - headerBytes.count % 8) % 8
        headerBytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padding))
        var prefix = [UInt8](repeating: 0, count: 8)
        var length = UInt64(headerBytes.count)
        for index in 0..<8 {
            prefix[index] = UInt8(truncatingIfNeeded: length)
            length >>= 8
        }

        try InteropFile.writeAtomically(to: url) { writer in
            try writer.write(prefix)
            try writer.write(headerBytes)
            midWrite?()
            for tensor in tensors {
                try writer.writeLittleEndian(tensor.values)
            }
        }
    }

    // MARK: - Reading

    private enum DType: String {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"

        var size: Int {
            switch self {
            case .f16, .bf16: return 2
            case .f32: return 4
            case .f64: return 8
            }
        }
    }

    private struct Entry {
        var name: String
        var dtype: DType
        var shape: [Int]
        var count: Int
        var begin: Int
        var end: Int
    }

    private static func parse(_ raw: UnsafeRawBufferPointer, path: String) throws -> (tensors: [NamedTensor], metadata: [String: String]) {
        let fileSize = raw.count
        guard fileSize >= 8 else {
            throw InteropError.truncated(
                path: path,
                reason: "file is truncated (\(fileSize) bytes; a safetensors file starts with an 8-byte header length)")
        }
        var headerLength: UInt64 = 0
        for index in (0..<8).reversed() {
            headerLength = (headerLength << 8) | UInt64(raw[index])
        }
        let available = UInt64(fileSize - 8)
        guard headerLength <= available else {
            throw InteropError.truncated(
                path: path,
                reason: "file is truncated or not a safetensors file (header length is \(headerLength) bytes, but only \(available) bytes follow)")
        }
        guard headerLength <= maxHeaderBytes else {
            throw InteropError.malformedHeader(
                path: path, reason: "header length \(headerLength) bytes exceeds the \(maxHeaderBytes)-byte limit")
        }
        let headerEnd = 8 + Int(headerLength)
        let headerBytes = Data(UnsafeRawBufferPointer(rebasing: raw[8..<headerEnd]))
        guard String(data: headerBytes, encoding: .utf8) != nil else {
            throw InteropError.malformedHeader(path: path, reason: "header is not valid UTF-8")
        }
        // JSONSerialization would also take UTF-16 or UTF-32 text (which always has NUL bytes) and a
        // leading byte-order mark; the reference reader takes neither, and UTF-8 JSON has no NUL bytes.
        guard !headerBytes.contains(0), !headerBytes.starts(with: [0xEF, 0xBB, 0xBF]) else {
            throw InteropError.malformedHeader(path: path, reason: "header is not valid JSON (it is not UTF-8 text without a byte-order mark)")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            throw InteropError.malformedHeader(path: path, reason: "header is not valid JSON (\(detail))")
        }
        guard let members = json as? [String: Any] else {
            throw InteropError.malformedHeader(path: path, reason: "header JSON is not an object")
        }

        // A repeated key keeps its last value (as in the reference reader). Sorting the names makes
        // the error reported for a header with several problems deterministic.
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members.sorted(by: { $0.key < $1.key }) {
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
            } else {
                entries.append(try parseEntry(name: name, value: value, path: path))
            }
        }

        let dataSize = fileSize - headerEnd
        let neededSize = entries.map(\.end).max() ?? 0
        guard neededSize <= dataSize else {
            throw InteropError.truncated(
                path: path, reason: "file is truncated (header says \(neededSize) bytes of data, file has \(dataSize))")
        }

        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var expected = 0
        var previous: String?
        for entry in entries {
            if entry.begin < expected {
                throw InteropError.invalidLayout(
                    path: path,
                    reason: "tensor \(InteropError.excerpt(entry.name)) data_offsets [\(entry.begin), \(entry.end)] overlap tensor \(InteropError.excerpt(previous ?? "")) which ends at \(expected)")
            }
            if entry.begin > expected {
                let after = previous.map { "the end of tensor \(InteropError.excerpt($0))" } ?? "the start of the data"
                throw InteropError.invalidLayout(
                    path: path,
                    reason: "tensor \(InteropError.excerpt(entry.name)) data_offsets [\(entry.begin), \(entry.end)] leave a gap of \(entry.begin - expected) bytes after \(after)")
            }
            expected = entry.end
            previous = entry.name
        }
        if expected < dataSize {
            throw InteropError.invalidLayout(
                path: path, reason: "\(dataSize - expected) bytes after the last tensor are not described by the header")
        }

        var tensors: [NamedTensor] = []
        tensors.reserveCapacity(entries.count)
        for entry in entries {
            let start = headerEnd + entry.begin
            // Offsets were validated above: start + count * size <= fileSize.
            let values = decode(raw, start: start, count: entry.count, dtype: entry.dtype)
            tensors.append(NamedTensor(name: entry.name, shape: entry.shape, values: values))
        }
        return (tensors, metadata)
    }

    private static func parseMetadata(_ value: Any, path: String) throws -> [String: String] {
        if value is NSNull { return [:] }
        guard let members = value as? [String: Any] else {
            throw InteropError.malformedHeader(path: path, reason: "__metadata__ is not an object of strings")
        }
        var metadata: [String: String] = [:]
        for (key, item) in members.sorted(by: { $0.key < $1.key }) {
            guard let text = item as? String else {
                throw InteropError.malformedHeader(
                    path: path, reason: "__metadata__ value for \(InteropError.excerpt(key)) is not a string")
            }
            metadata[key] = text
        }
        return metadata
    }

    private static func parseEntry(name: String, value: Any, path: String) throws -> Entry {
        let label = "tensor \(InteropError.excerpt(name))"
        guard let fields = value as? [String: Any] else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) is not described by a JSON object")
        }
        func field(_ key: String) throws -> Any {
            guard let found = fields[key] else {
                throw InteropError.malformedHeader(path: path, reason: "\(label) has no \"\(key)\"")
            }
            return found
        }
        guard let dtypeName = try field("dtype") as? String else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) dtype is not a string")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw InteropError.unsupportedDType(
                path: path,
                reason: "\(label) has dtype \(InteropError.excerpt(dtypeName)); only F32, F16, BF16 and F64 can be read")
        }
        guard let shapeItems = try field("shape") as? [Any] else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) shape is not an array")
        }
        var shape: [Int] = []
        for item in shapeItems {
            guard let dimension = nonNegativeInt(item) else {
                throw InteropError.malformedHeader(path: path, reason: "\(label) shape contains a value that is not a non-negative integer")
            }
            shape.append(dimension)
        }
        guard let offsetItems = try field("data_offsets") as? [Any], offsetItems.count == 2,
              let begin = nonNegativeInt(offsetItems[0]), let end = nonNegativeInt(offsetItems[1]) else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) data_offsets is not a pair of non-negative integers")
        }
        guard begin <= end else {
            throw InteropError.invalidLayout(path: path, reason: "\(label) data_offsets [\(begin), \(end)] end before they begin")
        }
        guard let count = elementCount(shape) else {
            throw InteropError.invalidLayout(path: path, reason: "\(label) shape \(shape) is too large")
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, byteCount == end - begin else {
            throw InteropError.invalidLayout(
                path: path,
                reason: "\(label) shape \(shape) of \(dtypeName) needs \(overflow ? "too many" : String(byteCount)) bytes, but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end)
    }

    /// `value` as an Int if it is a JSON integer in 0...Int.max. JSONSerialization hands over every
    /// number, and true/false, as an NSNumber: booleans have objCType "c", and numbers written with a
    /// fraction or an exponent are doubles ("d"), which the reference reader refuses even when
    /// integral (3.0); unsigned values above Int.max fail the exact conversion.
    private static func nonNegativeInt(_ value: Any) -> Int? {
        guard let number = value as? NSNumber,
              !["c", "f", "d"].contains(String(cString: number.objCType)),
              let integer = Int(exactly: number), integer >= 0 else {
            return nil
        }
        return integer
    }

    /// Decodes `count` little-endian elements starting at `start`; the caller
    /// guarantees `start + count * dtype.size <= raw.count`.
    private static func decode(_ raw: UnsafeRawBufferPointer, start: Int, count: Int, dtype: DType) -> [Float] {
        guard count > 0 else { return [] }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { out in
            switch dtype {
            case .f32:
                #if _endian(little)
                if let source = raw.baseAddress, let target = out.baseAddress {
                    UnsafeMutableRawPointer(target).copyMemory(from: source + start, byteCount: 4 * count)
                    return
                }
                #endif
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: start + 4 * index, as: UInt32.self)
                    out[index] = Float(bitPattern: UInt32(littleEndian: bits))
                }
            case .f16:
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: start + 2 * index, as: UInt16.self)
                    out[index] = halfToFloat(UInt16(littleEndian: bits))
                }
            case .bf16:
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: start + 2 * index, as: UInt16.self)
                    out[index] = Float(bitPattern: UInt32(UInt16(littleEndian: bits)) << 16)
                }
            case .f64:
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: start + 8 * index, as: UInt64.self)
                    out[index] = Float(Double(bitPattern: UInt64(littleEndian: bits)))
                }
            }
        }
        return values
    }

    /// IEEE 754 binary16 to binary32, exact (every half value is a float).
    static func halfToFloat(_ half: UInt16) -> Float {
        let sign = UInt32(half & 0x8000) << 16
        let exponent = UInt32((half >> 10) & 0x1F)
        let mantissa = UInt32(half & 0x3FF)
        switch exponent {
        case 0:
            // Zero or subnormal: mantissa * 2^-24.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            // Infinity or NaN (payload kept).
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
        }
    }

    /// The product of `shape`, or nil for a negative dimension or on overflow.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { return nil }
            count = product
        }
        return count
    }
}
