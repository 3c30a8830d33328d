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
    /// `metadata` (if not empty) as the `__metadata__` entry. The header is
    /// padded with spaces to a multiple of 8 bytes, like the reference writer.
    /// The file is written to a temporary file in the same directory, fsynced
    /// and renamed over `url`, so `url` never holds a partial file.
    public static func write(_ tensors: [NamedTensor], metadata: [String: String] = [:], to url: URL) throws {
        let path = url.path
        var names = Set<String>()
        var header = "{"
        var needsComma = false
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            let entries = metadata.sorted { $0.key < $1.key }
                .map { jsonString($0.key) + ":" + jsonString($0.value) }
            header += entries.joined(separator: ",") + "}"
            needsComma = true
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
            if needsComma { header += "," }
            header += jsonString(tensor.name)
            header += ":{\"dtype\":\"F32\",\"shape\":["
            header += tensor.shape.map(String.init).joined(separator: ",")
            header += "],\"data_offsets\":[\(offset),\(end)]}"
            needsComma = true
            offset = end
        }
        header += "}"

        var headerBytes = Array(header.utf8)
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
        var headerIndex: Int
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
        let headerBytes = Array(raw[8..<headerEnd])
        guard String(bytes: headerBytes, encoding: .utf8) != nil else {
            throw InteropError.malformedHeader(path: path, reason: "header is not valid UTF-8")
        }
        let json: JSONValue
        do {
            var parser = JSONParser(bytes: headerBytes)
            json = try parser.parseDocument()
        } catch let error as JSONParser.Failure {
            throw InteropError.malformedHeader(path: path, reason: "header is not valid JSON (\(error.message) at byte \(error.offset) of the header)")
        }
        guard case .object(let members) = json else {
            throw InteropError.malformedHeader(path: path, reason: "header JSON is not an object")
        }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        var seen = Set<String>()
        for (index, (name, value)) in members.enumerated() {
            guard seen.insert(name).inserted else {
                throw InteropError.invalidLayout(path: path, reason: "duplicate tensor name \(InteropError.excerpt(name)) in header")
            }
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
                continue
            }
            entries.append(try parseEntry(name: name, value: value, index: index, path: path))
        }

        let dataSize = fileSize - headerEnd
        let neededSize = entries.map(\.end).max() ?? 0
        guard neededSize <= dataSize else {
            throw InteropError.truncated(
                path: path, reason: "file is truncated (header says \(neededSize) bytes of data, file has \(dataSize))")
        }

        entries.sort { ($0.begin, $0.end, $0.headerIndex) < ($1.begin, $1.end, $1.headerIndex) }
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

    private static func parseMetadata(_ value: JSONValue, path: String) throws -> [String: String] {
        if case .null = value { return [:] }
        guard case .object(let members) = value else {
            throw InteropError.malformedHeader(path: path, reason: "__metadata__ is not an object of strings")
        }
        var metadata: [String: String] = [:]
        for (key, item) in members {
            guard case .string(let text) = item else {
                throw InteropError.malformedHeader(
                    path: path, reason: "__metadata__ value for \(InteropError.excerpt(key)) is not a string")
            }
            guard metadata.updateValue(text, forKey: key) == nil else {
                throw InteropError.malformedHeader(path: path, reason: "duplicate __metadata__ key \(InteropError.excerpt(key))")
            }
        }
        return metadata
    }

    private static func parseEntry(name: String, value: JSONValue, index: Int, path: String) throws -> Entry {
        let label = "tensor \(InteropError.excerpt(name))"
        guard case .object(let fields) = value else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) is not described by a JSON object")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let found = fields.first(where: { $0.0 == key }) else {
                throw InteropError.malformedHeader(path: path, reason: "\(label) has no \"\(key)\"")
            }
            return found.1
        }
        guard case .string(let dtypeName) = try field("dtype") else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) dtype is not a string")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw InteropError.unsupportedDType(
                path: path,
                reason: "\(label) has dtype \(InteropError.excerpt(dtypeName)); only F32, F16, BF16 and F64 can be read")
        }
        guard case .array(let shapeItems) = try field("shape") else {
            throw InteropError.malformedHeader(path: path, reason: "\(label) shape is not an array")
        }
        var shape: [Int] = []
        for item in shapeItems {
            guard let dimension = item.nonNegativeInt else {
                throw InteropError.malformedHeader(path: path, reason: "\(label) shape contains a value that is not a non-negative integer")
            }
            shape.append(dimension)
        }
        guard case .array(let offsetItems) = try field("data_offsets"), offsetItems.count == 2,
              let begin = offsetItems[0].nonNegativeInt, let end = offsetItems[1].nonNegativeInt else {
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
        return Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end, headerIndex: index)
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

    /// A JSON string literal for `text`.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - Minimal JSON parser

extension Safetensors {
    /// A parsed JSON value. Objects keep their members in order, duplicates
    /// included, so the caller can reject duplicate names. Numbers keep their text
    /// so 64-bit offsets are read exactly.
    enum JSONValue {
        case object([(String, JSONValue)])
        case array([JSONValue])
        case string(String)
        case number(String)
        case bool(Bool)
        case null

        /// The value as an Int if it is a JSON integer literal in 0...Int.max.
        var nonNegativeInt: Int? {
            guard case .number(let text) = self, !text.isEmpty,
                  text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                return nil
            }
            return Int(text)
        }
    }

    /// Recursive-descent JSON parser over UTF-8 bytes with a nesting limit; it
    /// reports failures as values, never traps.
    struct JSONParser {
        struct Failure: Error {
            var message: String
            var offset: Int
        }

        private let bytes: [UInt8]
        private var position = 0
        private var depth = 0
        private static let maxDepth = 64

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        /// Parses one value followed only by whitespace.
        mutating func parseDocument() throws -> JSONValue {
            let value = try parseValue()
            skipWhitespace()
            guard position == bytes.count else { throw fail("unexpected text after the JSON value") }
            return value
        }

        private func fail(_ message: String) -> Failure {
            Failure(message: message, offset: position)
        }

        private var current: UInt8? {
            position < bytes.count ? bytes[position] : nil
        }

        private mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D {
                position += 1
            }
        }

        private mutating func expect(_ literal: String) throws {
            for byte in literal.utf8 {
                guard current == byte else { throw fail("invalid literal") }
                position += 1
            }
        }

        private mutating func parseValue() throws -> JSONValue {
            skipWhitespace()
            guard let byte = current else { throw fail("unexpected end of header") }
            switch byte {
            case UInt8(ascii: "{"): return try parseObject()
            case UInt8(ascii: "["): return try parseArray()
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
            default: throw fail("unexpected character")
            }
        }

        private mutating func enter() throws {
            depth += 1
            guard depth <= Self.maxDepth else { throw fail("nesting too deep") }
        }

        private mutating func parseObject() throws -> JSONValue {
            try enter()
            defer { depth -= 1 }
            position += 1  // {
            var members: [(String, JSONValue)] = []
            skipWhitespace()
            if current == UInt8(ascii: "}") {
                position += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let key = try parseString()
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { throw fail("expected ':'") }
                position += 1
                let value = try parseValue()
                members.append((key, value))
                skipWhitespace()
                guard let byte = current else { throw fail("unexpected end of header") }
                position += 1
                if byte == UInt8(ascii: "}") { return .object(members) }
                guard byte == UInt8(ascii: ",") else {
                    position -= 1
                    throw fail("expected ',' or '}'")
                }
            }
        }

        private mutating func parseArray() throws -> JSONValue {
            try enter()
            defer { depth -= 1 }
            position += 1  // [
            var items: [JSONValue] = []
            skipWhitespace()
            if current == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                items.append(try parseValue())
                skipWhitespace()
                guard let byte = current else { throw fail("unexpected end of header") }
                position += 1
                if byte == UInt8(ascii: "]") { return .array(items) }
                guard byte == UInt8(ascii: ",") else {
                    position -= 1
                    throw fail("expected ',' or ']'")
                }
            }
        }

        private mutating func parseNumber() throws -> JSONValue {
            let start = position
            func digits() -> Int {
                let from = position
                while let byte = current, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { position += 1 }
                return position - from
            }
            if current == UInt8(ascii: "-") { position += 1 }
            guard let first = current, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
                throw fail("invalid number")
            }
            if first == UInt8(ascii: "0") {
                position += 1
            } else {
                _ = digits()
            }
            if current == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw fail("invalid number") }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                position += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw fail("invalid number") }
            }
            return .number(String(decoding: bytes[start..<position], as: UTF8.self))
        }

        private mutating func parseHex4() throws -> UInt32 {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard let byte = current else { throw fail("unexpected end of header") }
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw fail("invalid \\u escape")
                }
                value = value << 4 | UInt32(digit)
                position += 1
            }
            return value
        }

        private mutating func parseString() throws -> String {
            position += 1  // opening quote
            var out: [UInt8] = []
            while true {
                guard let byte = current else { throw fail("unterminated string") }
                position += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let escape = current else { throw fail("unterminated string") }
                    position += 1
                    switch escape {
                    case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
                    case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
                    case UInt8(ascii: "/"): out.append(UInt8(ascii: "/"))
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var code = try parseHex4()
                        if (0xD800...0xDBFF).contains(code) {
                            guard current == UInt8(ascii: "\\") else { throw fail("unpaired surrogate in \\u escape") }
                            position += 1
                            guard current == UInt8(ascii: "u") else { throw fail("unpaired surrogate in \\u escape") }
                            position += 1
                            let low = try parseHex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate in \\u escape") }
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw fail("unpaired surrogate in \\u escape") }
                        UTF8.encode(scalar) { out.append($0) }
                    default:
                        throw fail("invalid escape in string")
                    }
                default:
                    guard byte >= 0x20 else { throw fail("control character in string") }
                    out.append(byte)
                }
            }
        }
    }
}
