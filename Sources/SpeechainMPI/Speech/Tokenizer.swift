import CSentencePiece
import Foundation

/// SpeeChain's token vocabulary, the `vocab` file of a `token_path` folder: one token a line, id = line number
/// from 0, with `<blank>` = 0 first (CTC blank and padding), `<unk>` = V − 2 and `<sos/eos>` = V − 1 last, as
/// every vocabulary script of SpeeChain writes it. `<space>`, where present, stands for ' '.
///
/// Lines end at \n, \r\n or \r (Python's universal newlines). Refused with one line naming the file (and line):
/// an empty line, a token written twice (SpeeChain would silently give it the later id and count one token
/// less), a line that is not UTF-8, and a vocabulary whose specials are not where the layout puts them.
public struct Vocabulary: Sendable, Equatable {
    public let path: String
    public let tokens: [String]
    public var count: Int { tokens.count }
    /// `ignore_idx`: 0.
    public let blank: Int32
    /// `unk_idx`: V − 2.
    public let unknown: Int32
    /// `sos_eos_idx`: V − 1.
    public let sosEos: Int32
    /// `space_idx`: the id of `<space>`, if the vocabulary has it.
    public let space: Int32?

    public static let blankToken = "<blank>", unknownToken = "<unk>", sosEosToken = "<sos/eos>", spaceToken = "<space>"

    /// Reads a `vocab` (or `token_vocab`) file.
    public static func load(_ path: String) throws -> Vocabulary {
        let bytes = try SpeechDataError.readBytes(path) { .tokenizer(path: path, line: nil, reason: $0) }
        var tokens: [String] = []
        var lineOf: [[UInt8]: Int] = [:]   // by bytes: Swift's String == would merge canonically equal tokens
        try IndexFile<String>.forEachLine(bytes) { line, raw in
            guard let token = String(validating: raw, as: UTF8.self) else {
                throw SpeechDataError.tokenizer(path: path, line: line, reason: "is not valid UTF-8")
            }
            if token.isEmpty { throw SpeechDataError.tokenizer(path: path, line: line, reason: "is empty; each line is one token") }
            if let first = lineOf[Array(raw)] {
                throw SpeechDataError.tokenizer(path: path, line: line,
                                                reason: "token \(SpeechDataError.quote(token)) is already on line \(first)")
            }
            lineOf[Array(raw)] = line
            tokens.append(token)
        }
        return try Vocabulary(tokens: tokens, path: path)
    }

    /// A vocabulary from its tokens (in id order), checked for SpeeChain's layout.
    public init(tokens: [String], path: String = "vocab") throws {
        let v = tokens.count
        func fail(_ reason: String) -> SpeechDataError { .tokenizer(path: path, line: nil, reason: reason) }
        guard v >= 3 else { throw fail("holds \(v) tokens; a vocabulary needs at least <blank>, <unk> and <sos/eos>") }
        let expected = [(0, Vocabulary.blankToken), (v - 2, Vocabulary.unknownToken), (v - 1, Vocabulary.sosEosToken)]
        for (id, token) in expected where tokens[id] != token {
            let found = tokens.firstIndex(of: token).map { "on line \($0 + 1)" } ?? "missing"
            throw fail("\(token) must be token \(id) (line \(id + 1)) of \(v), as SpeeChain lays a vocabulary out "
                + "(<blank> first, <unk> second to last, <sos/eos> last); it is \(found)")
        }
        if let i = tokens.firstIndex(where: { $0.isEmpty }) { throw fail("token \(i) is empty") }
        self.path = path
        self.tokens = tokens
        blank = 0
        unknown = Int32(v - 2)
        sosEos = Int32(v - 1)
        space = tokens.firstIndex(of: Vocabulary.spaceToken).map { Int32($0) }
    }

    /// Writes `tokens` one a line ("token\n", UTF-8), as `np.savetxt(path, tokens, fmt="%s")` does; the file is
    /// replaced atomically.
    public static func write(_ tokens: [String], to path: String) throws {
        var text = ""
        for token in tokens { text += token; text += "\n" }
        try InteropFile.writeAtomically(Data(text.utf8), to: URL(fileURLWithPath: path))
    }

    /// SpeeChain's char vocabulary (`datasets/pyscripts/vocab_generator.py --token_type char`): every character
    /// (Unicode scalar, as Python iterates a str) of the sentences, ' ' as `<space>`, sorted by count, most frequent
    /// first, ties in order of first appearance (Python's stable sort over a Counter); cut to `vocabSize − 3` when
    /// there are at least that many; then `<blank>` before and `<unk>`, `<sos/eos>` after.
    ///
    /// `sentences` must come in SpeeChain's order: the transcripts sorted by index (`IndexFile.indices`).
    public static func charTokens<S: Sequence>(sentences: S, vocabSize: Int? = nil) -> [String] where S.Element == String {
        var counts: [UInt32: Int] = [:]
        var order: [UInt32] = []
        for sentence in sentences {
            for scalar in sentence.unicodeScalars {
                let v = scalar.value
                if let c = counts[v] { counts[v] = c + 1 } else { counts[v] = 1; order.append(v) }
            }
        }
        // a stable sort by descending count: ties keep the order of first appearance
        var ranked = order.enumerated().map { (position: $0.offset, scalar: $0.element) }
        ranked.sort { a, b in
            let ca = counts[a.scalar]!, cb = counts[b.scalar]!
            return ca != cb ? ca > cb : a.position < b.position
        }
        var tokens = ranked.map { $0.scalar == 0x20 ? spaceToken : String(Unicode.Scalar($0.scalar)!) }
        if let vocabSize, tokens.count >= vocabSize - 3 { tokens = Array(tokens.prefix(max(vocabSize - 3, 0))) }
        return [blankToken] + tokens + [unknownToken, sosEosToken]
    }
}

/// SpeeChain's tokenizers (speechain/tokenizer): text ↔ token ids over a `Vocabulary`.
public protocol Tokenizer: Sendable {
    var vocabulary: Vocabulary { get }

    /// Appends the ids of `text` (no `<sos/eos>`) to `ids`.
    func encode(_ text: String, appendingTo ids: inout [Int32]) throws

    /// SpeeChain's `tensor2text`: the sentence of `ids`, `<sos/eos>` and `<blank>` skipped.
    func tensor2text<C: Collection>(_ ids: C) throws -> String where C.Element == Int32

    /// Writes the backup SpeeChain keeps in the result folder (`copy_path`): `token_vocab`, and `token_model` for
    /// SentencePiece. Called on one rank only.
    func writeBackup(toFolder folder: String) throws
}

extension Tokenizer {
    /// SpeeChain's `text2tensor`: `[sos/eos] + ids + [sos/eos]` (either end left off with `sos: false` /
    /// `eos: false`).
    public func text2tensor(_ text: String, sos: Bool = true, eos: Bool = true) throws -> [Int32] {
        var ids: [Int32] = []
        try text2tensor(text, into: &ids, sos: sos, eos: eos)
        return ids
    }

    /// `text2tensor` into a reused buffer (contents replaced, capacity kept).
    public func text2tensor(_ text: String, into ids: inout [Int32], sos: Bool = true, eos: Bool = true) throws {
        ids.removeAll(keepingCapacity: true)
        if sos { ids.append(vocabulary.sosEos) }
        try encode(text, appendingTo: &ids)
        if eos { ids.append(vocabulary.sosEos) }
    }

    func checkRange<C: Collection>(_ ids: C) throws where C.Element == Int32 {
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocabulary.count }) {
            throw SpeechDataError.tokenizer(path: vocabulary.path, line: nil,
                                            reason: "token id \(bad) is outside the vocabulary's \(vocabulary.count) tokens")
        }
    }
}

/// SpeeChain's `CharTokenizer`: one token per character (Unicode scalar, as Python iterates a str).
///
/// ' ' becomes `<space>`, the token SpeeChain's char vocabulary script writes for it. (SpeeChain's own
/// `text2tensor` looks ' ' itself up, which that vocabulary does not hold, so SpeeChain encodes every space of a
/// plain-string transcript as `<unk>`; the script's intent is followed here.) A character the vocabulary does not
/// hold becomes `<unk>`, as in SpeeChain. Decoding skips `<sos/eos>` and `<blank>`, writes `<space>` as ' ' and
/// `<unk>` as '*' (SpeeChain's `tensor2text`).
public struct CharTokenizer: Tokenizer {
    public let vocabulary: Vocabulary
    private let idOfScalar: [UInt32: Int32]

    public init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        var map: [UInt32: Int32] = [:]
        for (id, token) in vocabulary.tokens.enumerated() {
            let scalars = token.unicodeScalars
            if scalars.count == 1, map[scalars.first!.value] == nil { map[scalars.first!.value] = Int32(id) }
        }
        if let space = vocabulary.space { map[0x20] = space }
        idOfScalar = map
    }

    public func encode(_ text: String, appendingTo ids: inout [Int32]) {
        for scalar in text.unicodeScalars { ids.append(idOfScalar[scalar.value] ?? vocabulary.unknown) }
    }

    public func tensor2text<C: Collection>(_ ids: C) throws -> String where C.Element == Int32 {
        try checkRange(ids)
        var text = ""
        for id in ids where id != vocabulary.sosEos && id != vocabulary.blank {
            if id == vocabulary.space { text += " " }
            else if id == vocabulary.unknown { text += "*" }
            else { text += vocabulary.tokens[Int(id)] }
        }
        return text
    }

    public func writeBackup(toFolder folder: String) throws {
        try Vocabulary.write(vocabulary.tokens, to: folder + "/token_vocab")
    }
}

/// SpeeChain's `SentencePieceTokenizer`: a SentencePiece `model` beside the `vocab`. SpeeChain trains the model
/// with V − 1 pieces, `<blank>` as a user symbol (so id 0), `<unk>` at V − 2 and no bos/eos, and writes `vocab` as
/// the model's pieces in id order plus `<sos/eos>`: a model id is the vocabulary id. That correspondence is checked
/// on load (piece count V − 1, each piece equal to its vocabulary line, unk id V − 2).
///
/// Encoding is SentencePiece's (`encode_as_ids`: its normaliser, unknown characters → the unk id V − 2).
/// Decoding drops `<sos/eos>` and `<blank>` and lets SentencePiece decode the rest (`decode_ids`: `<unk>` comes
/// out as " ⁇ ").
public final class SentencePieceTokenizer: Tokenizer, @unchecked Sendable {
    public let vocabulary: Vocabulary
    /// The model file read.
    public let modelPath: String
    private let processor: OpaquePointer   // encoding and decoding are const in SentencePiece: thread-safe

    public init(vocabulary: Vocabulary, modelPath: String) throws {
        func fail(_ reason: String) -> SpeechDataError { .tokenizer(path: modelPath, line: nil, reason: reason) }
        if let reason = SpeechDataError.openFailure(modelPath) { throw fail(reason) }
        var err = [CChar](repeating: 0, count: 512)
        guard let p = speechain_sp_load(modelPath, &err, err.count) else {
            throw fail("is not a SentencePiece model (\(String(cString: err)))")
        }
        processor = p
        self.vocabulary = vocabulary
        self.modelPath = modelPath
        let pieces = Int(speechain_sp_piece_count(p))
        guard pieces == vocabulary.count - 1 else {
            throw fail("has \(pieces) pieces but \(vocabulary.path) has \(vocabulary.count) tokens; SpeeChain's "
                + "vocabulary is the model's pieces plus <sos/eos>")
        }
        var buffer = [CChar](repeating: 0, count: 256)
        for id in 0..<pieces {
            var n = Int(speechain_sp_piece(p, Int32(id), &buffer, buffer.count))
            if n > buffer.count {
                buffer = [CChar](repeating: 0, count: n)
                n = Int(speechain_sp_piece(p, Int32(id), &buffer, buffer.count))
            }
            let piece = String(decoding: buffer.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard n >= 0, Array(piece.utf8) == Array(vocabulary.tokens[id].utf8) else {
                throw fail("piece \(id) is \(SpeechDataError.quote(piece)) but line \(id + 1) of \(vocabulary.path) is "
                    + "\(SpeechDataError.quote(vocabulary.tokens[id])); the model and the vocabulary do not belong together")
            }
        }
        let unk = speechain_sp_unk_id(p)
        guard unk == vocabulary.unknown else {
            throw fail("has its unknown piece at id \(unk), not at \(vocabulary.unknown) where the vocabulary has <unk>")
        }
    }

    deinit { speechain_sp_free(processor) }

    public func encode(_ text: String, appendingTo ids: inout [Int32]) throws {
        var text = text   // withUTF8 needs a mutable string; a native one is not copied
        let failure: String? = text.withUTF8 { utf8 -> String? in
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { err -> String? in
                let bytes = UnsafeRawPointer(utf8.baseAddress).map { $0.assumingMemoryBound(to: CChar.self) }
                let start = ids.count
                // at most one id per byte, plus the leading '▁' SentencePiece adds; asked again if ever short
                var capacity = utf8.count + 8
                while true {
                    ids.append(contentsOf: repeatElement(0, count: capacity))
                    let n = ids.withUnsafeMutableBufferPointer { out in
                        Int(speechain_sp_encode(processor, bytes, utf8.count, out.baseAddress! + start, capacity,
                                                err.baseAddress, err.count))
                    }
                    guard n >= 0 else {
                        ids.removeLast(capacity)
                        return String(cString: err.baseAddress!)
                    }
                    if n <= capacity {
                        ids.removeLast(capacity - n)
                        return nil
                    }
                    ids.removeLast(capacity)
                    capacity = n
                }
            }
        }
        if let failure {
            throw SpeechDataError.tokenizer(path: modelPath, line: nil,
                                            reason: "cannot encode \(SpeechDataError.quote(text)) (\(failure))")
        }
    }

    public func tensor2text<C: Collection>(_ ids: C) throws -> String where C.Element == Int32 {
        try checkRange(ids)
        let kept = ids.filter { $0 != vocabulary.sosEos && $0 != vocabulary.blank }
        var capacity = kept.count * 8 + 16
        var err = [CChar](repeating: 0, count: 256)
        while true {
            var out = [UInt8](repeating: 0, count: capacity)
            let n = kept.withUnsafeBufferPointer { k in
                out.withUnsafeMutableBufferPointer { o in
                    o.withMemoryRebound(to: CChar.self) {
                        Int(speechain_sp_decode(processor, k.baseAddress, k.count, $0.baseAddress, capacity, &err, err.count))
                    }
                }
            }
            guard n >= 0 else {
                throw SpeechDataError.tokenizer(path: modelPath, line: nil, reason: "cannot decode ids (\(String(cString: err)))")
            }
            if n <= capacity { return String(decoding: out.prefix(n), as: UTF8.self) }
            capacity = n
        }
    }

    public func writeBackup(toFolder folder: String) throws {
        try Vocabulary.write(vocabulary.tokens, to: folder + "/token_vocab")
        let model = try SpeechDataError.readBytes(modelPath) { .tokenizer(path: self.modelPath, line: nil, reason: $0) }
        try InteropFile.writeAtomically(Data(model), to: URL(fileURLWithPath: folder + "/token_model"))
    }
}

/// Builds SpeeChain's tokenizer of `token_type` (`char` or `sentencepiece`, any case) from `token_path`, as
/// SpeeChain's models do: `token_path/vocab` (and `token_path/model`), or, when `token_path` is not given or holds
/// no such file, the backup `copy_path/token_vocab` (`copy_path/token_model`) an earlier run wrote. Paths follow
/// `SpeechainPath.resolve`.
public func makeTokenizer(tokenType: String, tokenPath: String?, copyPath: String? = nil) throws -> any Tokenizer {
    let type = tokenType.lowercased()
    guard type == "char" || type == "sentencepiece" else {
        throw SpeechDataError.setting("unknown token_type '\(tokenType)'; valid: char, sentencepiece")
    }
    func pick(_ name: String, _ backup: String) throws -> String {
        if let tokenPath {
            let candidate = try SpeechainPath.resolve(tokenPath, environment: SpeechTextBatches.environment()) + "/" + name
            if FileManager.default.fileExists(atPath: candidate) || copyPath == nil { return candidate }
        }
        guard let copyPath else { throw SpeechDataError.setting("token_path is not given (and there is no copy_path backup)") }
        return try SpeechainPath.resolve(copyPath, environment: SpeechTextBatches.environment()) + "/" + backup
    }
    let vocabulary = try Vocabulary.load(try pick("vocab", "token_vocab"))
    if type == "char" { return CharTokenizer(vocabulary: vocabulary) }
    return try SentencePieceTokenizer(vocabulary: vocabulary, modelPath: try pick("model", "token_model"))
}
