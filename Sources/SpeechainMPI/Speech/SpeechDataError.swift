import Foundation

/// Speech data a user gave that cannot be used: an audio file, an `idx2…` index file, a token vocabulary or a
/// tokenizer model. Its `description` is one line naming the file (and the line, where there is one).
public enum SpeechDataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An audio file that cannot be read as SpeeChain's speech path needs it.
    case audio(path: String, failure: AudioFailure, reason: String)
    /// An index file (`idx2wav`, `idx2wav_len`, `idx2<txt_format>_text`, …); `line` counts from 1.
    case indexFile(path: String, line: Int?, reason: String)
    /// A token vocabulary (`vocab`) or a SentencePiece `model`; `line` counts from 1.
    case tokenizer(path: String, line: Int?, reason: String)
    /// A setting of the speech path that cannot work (a sample rate of 0, a speed factor of −1, …).
    case setting(String)

    /// What is wrong with an audio file, for callers that treat some failures differently (SpeeChain skips an
    /// utterance whose waveform is empty instead of stopping).
    public enum AudioFailure: String, Sendable {
        case unreadable, truncated, empty, multiChannel, nonFinite, sampleRateTooLow
    }

    public var description: String {
        switch self {
        case .audio(let path, _, let reason):
            return InteropError.oneLine("\(path): \(reason)")
        case .indexFile(let path, let line, let reason), .tokenizer(let path, let line, let reason):
            return InteropError.oneLine(line.map { "\(path):\($0): \(reason)" } ?? "\(path): \(reason)")
        case .setting(let reason):
            return InteropError.oneLine(reason)
        }
    }

    /// The audio failure kind, when this is an audio error.
    public var audioFailure: AudioFailure? {
        if case .audio(_, let failure, _) = self { return failure }
        return nil
    }
}

extension SpeechDataError {
    /// Quotes a short excerpt of a user's text for a message: control characters written as Swift escapes (a tab
    /// as \t, so that a tab is not mistaken for the space it replaced), clipped to `limit` characters.
    static func quote(_ text: String, limit: Int = 40) -> String {
        var out = "'"
        var count = 0
        for u in text.unicodeScalars {
            if count == limit { out += "..."; break }
            count += 1
            switch u {
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\n": out += "\\n"
            case "\0": out += "\\0"
            case _ where u.value < 0x20 || (0x7F...0x9F).contains(u.value) || u == "\u{2028}" || u == "\u{2029}":
                out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "'"
    }

    /// Why `path` cannot be opened, in the project's words ("no such file", "is a folder, not a file", or the
    /// system's reason), or nil when it can.
    static func openFailure(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            let code = errno
            return code == ENOENT ? "no such file" : "cannot be opened (\(String(cString: strerror(code))))"
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { return "is a folder, not a file" }
        return nil
    }

    /// The whole file as bytes, or the error `make` builds from the reason it cannot be read.
    static func readBytes(_ path: String, _ make: (String) -> SpeechDataError) throws -> [UInt8] {
        if let reason = openFailure(path) { throw make(reason) }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw make("cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        var bytes = [UInt8]()
        if fstat(fd, &st) == 0, st.st_size > 0 { bytes.reserveCapacity(Int(st.st_size)) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw make("cannot be read (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }
}
