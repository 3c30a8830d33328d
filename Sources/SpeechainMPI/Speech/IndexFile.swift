import Foundation

/// What every `idx2…` map can tell a join: its files, its indices and where each was written.
public protocol IndexKeyed {
    /// The files read, in order.
    var paths: [String] { get }
    /// The indices, sorted as Python sorts strings (by code point), as SpeeChain's `load_idx2data_file` returns them.
    var indices: [String] { get }
    func contains(_ index: String) -> Bool
    /// The file and the line (from 1) that defined `index`.
    func origin(of index: String) -> (path: String, line: Int)?
}

/// One data source of SpeeChain's `main_data` or `data_len`: one or several `idx2…` files, each line
/// "index value" split at its first space (`idx2wav`: "idx path"; `idx2wav_len`: "idx samples";
/// `idx2<txt_format>_text`: "idx sentence"). Several files are merged as SpeeChain merges the list of paths of one
/// key; the indices come sorted by code point, as SpeeChain's dictionaries are.
///
/// Lines end at "\n", "\r\n" or "\r" (Python's universal newlines); the value keeps everything after the first
/// space, spaces included. Refused with one line naming the file and the line, where SpeeChain would crash or
/// silently keep the last of two values:
/// - a line that is empty, has no space, starts with a space (no index) or has nothing after the space;
/// - an index defined twice, in one file or across the files of one source (both places named);
/// - for lengths, a value that is not a non-negative integer; for transcripts, an empty or blank sentence;
/// - a line that is not UTF-8.
/// A UTF-8 byte-order mark at the start of a file is skipped. SpeeChain's other reading of a file whose first line
/// has no space (values numbered by line) is not kept: such a file is an error here. JSON index files are not read.
public struct IndexFile<Value: Sendable>: IndexKeyed, Sendable {
    public let paths: [String]
    public let indices: [String]
    private let entries: [String: Entry]

    private struct Entry: Sendable {
        let value: Value
        let file: Int32
        let line: Int32
    }

    public var count: Int { indices.count }

    public subscript(_ index: String) -> Value? { entries[index]?.value }

    public func contains(_ index: String) -> Bool { entries[index] != nil }

    public func origin(of index: String) -> (path: String, line: Int)? {
        entries[index].map { (paths[Int($0.file)], Int($0.line)) }
    }

    /// Reads `paths` (opened as given; see `SpeechainPath.resolve` for SpeeChain's rule), turning each value with `parse`,
    /// which throws a `ValueRefusal` for a value it refuses.
    public static func load(_ paths: [String], parse: (String) throws(ValueRefusal) -> Value) throws -> IndexFile {
        var entries: [String: Entry] = [:]
        for (fileNumber, path) in paths.enumerated() {
            let bytes = try SpeechDataError.readBytes(path) { .indexFile(path: path, line: nil, reason: $0) }
            func fail(_ line: Int, _ reason: String) -> SpeechDataError { .indexFile(path: path, line: line, reason: reason) }
            try forEachLine(bytes) { lineNumber, raw in
                if raw.isEmpty { throw fail(lineNumber, "is empty; each line is 'index value'") }
                // split at the first byte 0x20 (never part of a multi-byte UTF-8 sequence), as str.split(' ', 1)
                guard let space = raw.firstIndex(of: 0x20) else {
                    guard let text = String(validating: raw, as: UTF8.self) else { throw fail(lineNumber, "is not valid UTF-8") }
                    let hint = text.contains("\t") ? " (a tab does not separate them, a space does)" : ""
                    throw fail(lineNumber, "has no value after its index \(SpeechDataError.quote(text))\(hint)")
                }
                if space == raw.startIndex { throw fail(lineNumber, "starts with a space: no index before the value") }
                guard let key = String(validating: raw[..<space], as: UTF8.self),
                      let text = String(validating: raw[(space + 1)...], as: UTF8.self) else {
                    throw fail(lineNumber, "is not valid UTF-8")
                }
                let value: Value
                do throws(ValueRefusal) { value = try parse(text) } catch { throw fail(lineNumber, "index \(SpeechDataError.quote(key)): \(error.reason)") }
                if let earlier = entries[key] {
                    let place = Int(earlier.file) == fileNumber ? "line \(earlier.line)" : "\(paths[Int(earlier.file)]):\(earlier.line)"
                    throw fail(lineNumber, "index \(SpeechDataError.quote(key)) is already defined on \(place)")
                }
                entries[key] = Entry(value: value, file: Int32(fileNumber), line: Int32(clamping: lineNumber))
            }
        }
        let indices = entries.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return IndexFile(paths: paths, indices: indices, entries: entries)
    }

    /// The reason a value is refused (the loader adds the file, line and index).
    public struct ValueRefusal: Error, Sendable {
        public let reason: String
        public init(_ reason: String) { self.reason = reason }
    }

    /// Calls `body` with each line's number (from 1) and bytes, lines ending at \n, \r\n or \r.
    static func forEachLine(_ bytes: [UInt8], _ body: (Int, ArraySlice<UInt8>) throws -> Void) throws {
        var start = 0
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
        var i = start, lineNumber = 1
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b == 0x0A || b == 0x0D {
                try body(lineNumber, bytes[start..<i])
                lineNumber += 1
                i += (b == 0x0D && i + 1 < n && bytes[i + 1] == 0x0A) ? 2 : 1
                start = i
            } else {
                i += 1
            }
        }
        if start < n { try body(lineNumber, bytes[start..<n]) }
    }
}

extension IndexFile where Value == String {
    /// An `idx2…` file whose values are kept as text (`idx2wav`: the audio paths).
    public static func load(_ paths: String...) throws -> IndexFile<String> { try load(paths) }

    public static func load(_ paths: [String]) throws -> IndexFile<String> {
        try load(paths) { (value: String) throws(ValueRefusal) -> String in
            if value.isEmpty { throw ValueRefusal("has nothing after the space") }
            return value
        }
    }

    /// An `idx2<txt_format>_text` file: each value is a sentence, which must hold more than spaces.
    public static func loadTranscripts(_ paths: String...) throws -> IndexFile<String> { try loadTranscripts(paths) }

    public static func loadTranscripts(_ paths: [String]) throws -> IndexFile<String> {
        try load(paths) { (value: String) throws(ValueRefusal) -> String in
            if value.utf8.allSatisfy({ $0 == 0x20 }) { throw ValueRefusal("empty transcript") }
            return value
        }
    }
}

extension IndexFile where Value == Int {
    /// An `idx2wav_len` (or `idx2feat_len`, `idx2text_len`) file: each value a non-negative integer, as SpeeChain
    /// reads it with `int()` (surrounding spaces and a leading '+' accepted).
    public static func loadLengths(_ paths: String...) throws -> IndexFile<Int> { try loadLengths(paths) }

    public static func loadLengths(_ paths: [String]) throws -> IndexFile<Int> {
        try load(paths) { (value: String) throws(ValueRefusal) -> Int in
            let trimmed = value.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { throw ValueRefusal("has no length after the space") }
            let negative = trimmed.hasPrefix("-")
            let digits = trimmed.hasPrefix("+") || negative ? trimmed.dropFirst() : Substring(trimmed)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(digits) else {
                throw ValueRefusal("length \(SpeechDataError.quote(value)) is not an integer")
            }
            if negative && n != 0 { throw ValueRefusal("length \(SpeechDataError.quote(value)) is negative") }
            return n
        }
    }
}

/// Joins the `idx2…` maps of one dataset (SpeeChain's `read_idx2data_file_to_dict` and the iterator's `data_len`
/// check).
public enum IndexJoin {
    /// The indices every map has, sorted by code point; an index that one map has and another lacks is an error
    /// naming the file that lacks it and where the index was found.
    ///
    /// SpeeChain only warns ("There are N redundant keys …") and drops such indices; `intersection` does that.
    public static func commonIndices(_ maps: [any IndexKeyed]) throws -> [String] {
        for (a, map) in maps.enumerated() {
            for index in map.indices {
                for (b, other) in maps.enumerated() where b != a && !other.contains(index) {
                    let (path, line) = map.origin(of: index)!
                    throw SpeechDataError.indexFile(
                        path: other.paths.joined(separator: " + "), line: nil,
                        reason: "has no line for index \(SpeechDataError.quote(index)), which \(path) has on line \(line)")
                }
            }
        }
        return maps.first?.indices ?? []
    }

    /// SpeeChain's lenient join: the indices all maps share, and how many each map had beyond them (SpeeChain
    /// warns with that count and drops them).
    public static func intersection(_ maps: [any IndexKeyed]) -> (indices: [String], dropped: [(paths: [String], count: Int)]) {
        guard let first = maps.first else { return ([], []) }
        let common = first.indices.filter { index in maps.allSatisfy { $0.contains(index) } }
        let dropped = maps.map { ($0.paths, $0.indices.count - common.count) }.filter { $0.1 > 0 }
        return (common, dropped.map { (paths: $0.0, count: $0.1) })
    }
}
