import Foundation

/// Reads and writes NumPy `.npy` files: 2-D little-endian float32 feature
/// matrices and 1-D integer label vectors.
///
/// Reading accepts format versions 1.0, 2.0 and 3.0; writing produces 1.0,
/// atomically (temporary file, fsync, rename). Matrices must be C-ordered
/// (`fortran_order` False) `'<f4'` with exactly two dimensions. Label vectors
/// must be 1-D `'<i8'`, or `'<i4'`, which is widened to Int64 (`fortran_order`
/// is irrelevant for 1-D data and is accepted either way). Anything else —
/// other dtypes, big-endian data, Fortran-ordered matrices, the wrong number of
/// dimensions, truncated or trailing data, a malformed header — throws
/// `InteropError`.
public enum NPY {
    /// Reads a 2-D `'<f4'` array; `values` are row-major, `rows * cols` long.
    public static func readFloat32Matrix(contentsOf url: URL) throws -> (rows: Int, cols: Int, values: [Float]) {
        let data = try InteropFile.read(url)
        let path = url.path
        return try data.withUnsafeBytes { raw in
            let header = try parseHeader(raw, path: path)
            guard header.descr == "<f4" else {
                if header.descr == ">f4" {
                    throw InteropError.unsupportedDType(
                        path: path, reason: "expected little-endian float32 ('<f4') features, found big-endian '>f4'")
                }
                throw InteropError.unsupportedDType(
                    path: path, reason: "expected float32 ('<f4') features, found \(InteropError.excerpt(header.descr))")
            }
            guard header.shape.count == 2 else {
                throw InteropError.invalidLayout(
                    path: path,
                    reason: "expected 2-D features (rows, cols), found shape \(pythonShape(header.shape))")
            }
            guard !header.fortranOrder else {
                throw InteropError.invalidLayout(
                    path: path,
                    reason: "features are stored in Fortran (column-major) order; save a C-ordered array (np.ascontiguousarray)")
            }
            let count = try dataCount(header, itemSize: 4, fileSize: raw.count, path: path)
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBufferPointer { out in
                #if _endian(little)
                if let source = raw.baseAddress, let target = out.baseAddress {
                    UnsafeMutableRawPointer(target).copyMemory(from: source + header.dataStart, byteCount: 4 * count)
                    return
                }
                #endif
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: header.dataStart + 4 * index, as: UInt32.self)
                    out[index] = Float(bitPattern: UInt32(littleEndian: bits))
                }
            }
            return (header.shape[0], header.shape[1], values)
        }
    }

    /// Reads a 1-D `'<i8'` array, or a 1-D `'<i4'` array widened to Int64.
    public static func readInt64Vector(contentsOf url: URL) throws -> [Int64] {
        let data = try InteropFile.read(url)
        let path = url.path
        return try data.withUnsafeBytes { raw in
            let header = try parseHeader(raw, path: path)
            let itemSize: Int
            switch header.descr {
            case "<i8": itemSize = 8
            case "<i4": itemSize = 4
            case ">i8", ">i4":
                throw InteropError.unsupportedDType(
                    path: path,
                    reason: "expected little-endian int64 ('<i8') or int32 ('<i4') labels, found big-endian \(InteropError.excerpt(header.descr))")
            default:
                throw InteropError.unsupportedDType(
                    path: path,
                    reason: "expected int64 ('<i8') or int32 ('<i4') labels, found \(InteropError.excerpt(header.descr))")
            }
            guard header.shape.count == 1 else {
                throw InteropError.invalidLayout(
                    path: path, reason: "expected 1-D labels, found shape \(pythonShape(header.shape))")
            }
            let count = try dataCount(header, itemSize: itemSize, fileSize: raw.count, path: path)
            var values = [Int64](repeating: 0, count: count)
            values.withUnsafeMutableBufferPointer { out in
                if itemSize == 8 {
                    #if _endian(little)
                    if let source = raw.baseAddress, let target = out.baseAddress {
                        UnsafeMutableRawPointer(target).copyMemory(from: source + header.dataStart, byteCount: 8 * count)
                        return
                    }
                    #endif
                    for index in 0..<count {
                        let bits = raw.loadUnaligned(fromByteOffset: header.dataStart + 8 * index, as: Int64.self)
                        out[index] = Int64(littleEndian: bits)
                    }
                } else {
                    for index in 0..<count {
                        let bits = raw.loadUnaligned(fromByteOffset: header.dataStart + 4 * index, as: Int32.self)
                        out[index] = Int64(Int32(littleEndian: bits))
                    }
                }
            }
            return values
        }
    }

    /// Writes a row-major `rows × cols` float32 matrix as a version 1.0 `.npy`
    /// file, atomically.
    public static func write(float32Matrix values: [Float], rows: Int, cols: Int, to url: URL) throws {
        let path = url.path
        guard rows >= 0, cols >= 0 else {
            throw InteropError.invalidArgument(path: path, reason: "matrix shape (\(rows), \(cols)) has a negative dimension")
        }
        let (count, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard !overflow, count == values.count else {
            throw InteropError.invalidArgument(
                path: path, reason: "matrix shape (\(rows), \(cols)) does not match \(values.count) values")
        }
        let header = try headerBytes(descr: "<f4", shape: [rows, cols], path: path)
        try InteropFile.writeAtomically(to: url) { writer in
            try writer.write(header)
            try writer.writeLittleEndian(values)
        }
    }

    /// Writes a 1-D int64 vector as a version 1.0 `.npy` file, atomically.
    public static func write(int64Vector values: [Int64], to url: URL) throws {
        let header = try headerBytes(descr: "<i8", shape: [values.count], path: url.path)
        try InteropFile.writeAtomically(to: url) { writer in
            try writer.write(header)
            try writer.writeLittleEndian(values)
        }
    }

    // MARK: - Header

    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    struct Header {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
        /// Byte offset of the array data in the file.
        var dataStart: Int
    }

    /// The numpy header for a version 1.0 file, padded with spaces and a final
    /// newline so the data starts at a multiple of 64 bytes, as numpy does.
    static func headerBytes(descr: String, shape: [Int], path: String) throws -> [UInt8] {
        var text = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(pythonShape(shape)), }"
        let unpadded = magic.count + 4 + text.utf8.count + 1
        text += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = text.utf8.count
        guard length <= Int(UInt16.max) else {
            throw InteropError.invalidArgument(path: path, reason: "header too long for .npy version 1.0")
        }
        return magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8)
    }

    /// Formats a shape as Python prints a tuple: `(64,)`, `(64, 16)`, `()`.
    static func pythonShape(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    /// Number of elements, after checking the file holds exactly their bytes.
    private static func dataCount(_ header: Header, itemSize: Int, fileSize: Int, path: String) throws -> Int {
        guard let count = Safetensors.elementCount(header.shape) else {
            throw InteropError.invalidLayout(path: path, reason: "shape \(pythonShape(header.shape)) is too large")
        }
        let (needed, overflow) = count.multipliedReportingOverflow(by: itemSize)
        let available = fileSize - header.dataStart
        guard !overflow, needed <= available else {
            throw InteropError.truncated(
                path: path,
                reason: "file is truncated (header says \(overflow ? "more than \(Int.max)" : String(needed)) bytes of data, file has \(available))")
        }
        guard needed == available else {
            throw InteropError.invalidLayout(
                path: path,
                reason: "\(available - needed) unexpected bytes after the \(pythonShape(header.shape)) array data")
        }
        return count
    }

    static func parseHeader(_ raw: UnsafeRawBufferPointer, path: String) throws -> Header {
        guard raw.count >= magic.count, raw.prefix(magic.count).elementsEqual(magic) else {
            if raw.count < magic.count && raw.elementsEqual(magic.prefix(raw.count)) {
                throw InteropError.truncated(path: path, reason: "file is truncated (\(raw.count) bytes)")
            }
            throw InteropError.malformedHeader(path: path, reason: "not a .npy file (bad magic bytes)")
        }
        guard raw.count >= magic.count + 2 else {
            throw InteropError.truncated(path: path, reason: "file is truncated (\(raw.count) bytes, no format version)")
        }
        let major = raw[magic.count]
        let minor = raw[magic.count + 1]
        let lengthBytes: Int
        switch (major, minor) {
        case (1, 0): lengthBytes = 2
        case (2, 0), (3, 0): lengthBytes = 4
        default:
            throw InteropError.malformedHeader(path: path, reason: "unsupported .npy format version \(major).\(minor)")
        }
        let lengthStart = magic.count + 2
        guard raw.count >= lengthStart + lengthBytes else {
            throw InteropError.truncated(path: path, reason: "file is truncated (\(raw.count) bytes, no header length)")
        }
        var headerLength = 0
        for index in (0..<lengthBytes).reversed() {
            headerLength = headerLength << 8 | Int(raw[lengthStart + index])
        }
        let headerStart = lengthStart + lengthBytes
        let available = raw.count - headerStart
        guard headerLength <= available else {
            throw InteropError.truncated(
                path: path,
                reason: "file is truncated (header length is \(headerLength) bytes, but only \(available) bytes follow)")
        }
        let dataStart = headerStart + headerLength
        var parser = PyLiteralParser(bytes: Array(raw[headerStart..<dataStart]))
        let literal: PyLiteral
        do {
            literal = try parser.parseDocument()
        } catch let failure as PyLiteralParser.Failure {
            throw InteropError.malformedHeader(
                path: path, reason: "header is not a valid Python dict literal (\(failure.message) at byte \(failure.offset) of the header)")
        }
        guard case .dict(let members) = literal else {
            throw InteropError.malformedHeader(path: path, reason: "header is not a Python dict")
        }
        var descr: PyLiteral?
        var fortran: PyLiteral?
        var shape: PyLiteral?
        for (key, value) in members {
            let previous: PyLiteral?
            switch key {
            case "descr": previous = descr; descr = value
            case "fortran_order": previous = fortran; fortran = value
            case "shape": previous = shape; shape = value
            default:
                throw InteropError.malformedHeader(path: path, reason: "header has an unexpected key \(InteropError.excerpt(key))")
            }
            guard previous == nil else {
                throw InteropError.malformedHeader(path: path, reason: "header repeats the key \(InteropError.excerpt(key))")
            }
        }
        guard let descr, let fortran, let shape else {
            let missing = [("descr", descr), ("fortran_order", fortran), ("shape", shape)]
                .filter { $0.1 == nil }.map { "'\($0.0)'" }.joined(separator: ", ")
            throw InteropError.malformedHeader(path: path, reason: "header is missing \(missing)")
        }
        let descrText: String
        switch descr {
        case .string(let text): descrText = text
        case .sequence, .dict:
            throw InteropError.unsupportedDType(path: path, reason: "structured dtypes are not supported")
        default:
            throw InteropError.malformedHeader(path: path, reason: "header 'descr' is not a string")
        }
        guard case .bool(let fortranOrder) = fortran else {
            throw InteropError.malformedHeader(path: path, reason: "header 'fortran_order' is not True or False")
        }
        guard case .sequence(let items, isTuple: true) = shape else {
            throw InteropError.malformedHeader(path: path, reason: "header 'shape' is not a tuple")
        }
        var dimensions: [Int] = []
        for item in items {
            guard case .int(let dimension) = item, dimension >= 0 else {
                throw InteropError.malformedHeader(path: path, reason: "header 'shape' holds a value that is not a non-negative integer")
            }
            dimensions.append(dimension)
        }
        return Header(descr: descrText, fortranOrder: fortranOrder, shape: dimensions, dataStart: dataStart)
    }
}

// MARK: - Python literal parser

extension NPY {
    /// The subset of Python literals found in `.npy` headers.
    indirect enum PyLiteral {
        case string(String)
        case int(Int)
        case bool(Bool)
        case noneValue
        /// A tuple (`isTuple`) or a list.
        case sequence([PyLiteral], isTuple: Bool)
        case dict([(String, PyLiteral)])
    }

    /// Parses a Python literal (dicts with string keys, tuples, lists, strings,
    /// integers, True/False/None) with a nesting limit; never traps.
    struct PyLiteralParser {
        struct Failure: Error {
            var message: String
            var offset: Int
        }

        private let bytes: [UInt8]
        private var position = 0
        private var depth = 0
        private static let maxDepth = 32

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        /// Parses one literal followed only by whitespace (numpy ends the header
        /// with spaces and a newline).
        mutating func parseDocument() throws -> PyLiteral {
            let value = try parseValue()
            skipWhitespace()
            guard position == bytes.count else { throw fail("unexpected text after the dict") }
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

        private static func isIdentifierByte(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "_")
        }

        private mutating func parseValue() throws -> PyLiteral {
            skipWhitespace()
            guard let byte = current else { throw fail("unexpected end of header") }
            switch byte {
            case UInt8(ascii: "{"): return try parseDict()
            case UInt8(ascii: "("): return try parseSequence(close: UInt8(ascii: ")"))
            case UInt8(ascii: "["): return try parseSequence(close: UInt8(ascii: "]"))
            case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseInt()
            default:
                let start = position
                while let next = current, Self.isIdentifierByte(next) { position += 1 }
                switch String(decoding: bytes[start..<position], as: UTF8.self) {
                case "True": return .bool(true)
                case "False": return .bool(false)
                case "None": return .noneValue
                default:
                    position = start
                    throw fail("unexpected character")
                }
            }
        }

        private mutating func enter() throws {
            depth += 1
            guard depth <= Self.maxDepth else { throw fail("nesting too deep") }
        }

        private mutating func parseDict() throws -> PyLiteral {
            try enter()
            defer { depth -= 1 }
            position += 1  // {
            var members: [(String, PyLiteral)] = []
            while true {
                skipWhitespace()
                if current == UInt8(ascii: "}") {
                    position += 1
                    return .dict(members)
                }
                guard case .string(let key) = try parseValue() else {
                    throw fail("dict key is not a string")
                }
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { throw fail("expected ':'") }
                position += 1
                members.append((key, try parseValue()))
                skipWhitespace()
                guard let byte = current else { throw fail("unexpected end of header") }
                if byte == UInt8(ascii: ",") {
                    position += 1
                } else if byte != UInt8(ascii: "}") {
                    throw fail("expected ',' or '}'")
                }
            }
        }

        /// `(a, b)`, `(a,)`, `()`, `[a, b]`; `(a)` is just `a`, as in Python.
        private mutating func parseSequence(close: UInt8) throws -> PyLiteral {
            try enter()
            defer { depth -= 1 }
            position += 1  // ( or [
            let isTuple = close == UInt8(ascii: ")")
            var items: [PyLiteral] = []
            var sawComma = false
            while true {
                skipWhitespace()
                if current == close {
                    position += 1
                    if isTuple && items.count == 1 && !sawComma { return items[0] }
                    return .sequence(items, isTuple: isTuple)
                }
                items.append(try parseValue())
                skipWhitespace()
                guard let byte = current else { throw fail("unexpected end of header") }
                if byte == UInt8(ascii: ",") {
                    sawComma = true
                    position += 1
                } else if byte != close {
                    throw fail("expected ',' or closing bracket")
                }
            }
        }

        private mutating func parseInt() throws -> PyLiteral {
            var negative = false
            if current == UInt8(ascii: "-") || current == UInt8(ascii: "+") {
                negative = current == UInt8(ascii: "-")
                position += 1
            }
            var value = 0
            var digits = 0
            while let byte = current, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = shifted.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
                guard !overflow1, !overflow2 else { throw fail("integer too large") }
                value = sum
                digits += 1
                position += 1
            }
            guard digits > 0 else { throw fail("invalid number") }
            // Python 2 era files may write long integers as `64L`.
            if current == UInt8(ascii: "L") || current == UInt8(ascii: "l") { position += 1 }
            if let byte = current, Self.isIdentifierByte(byte) || byte == UInt8(ascii: ".") {
                throw fail("invalid number")
            }
            return .int(negative ? -value : value)
        }

        private mutating func parseString() throws -> String {
            guard let quote = current else { throw fail("unexpected end of header") }
            position += 1
            var out: [UInt8] = []
            while true {
                guard let byte = current else { throw fail("unterminated string") }
                position += 1
                if byte == quote {
                    return String(decoding: out, as: UTF8.self)
                }
                if byte == UInt8(ascii: "\\") {
                    guard let escaped = current else { throw fail("unterminated string") }
                    position += 1
                    switch escaped {
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    default: out.append(escaped)
                    }
                } else if byte == 0x0A {
                    throw fail("unterminated string")
                } else {
                    out.append(byte)
                }
            }
        }
    }
}
