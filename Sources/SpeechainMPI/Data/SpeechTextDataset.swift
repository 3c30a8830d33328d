import Foundation

/// SpeeChain's `speech_text.SpeechTextDataset` behind its iterators (`abs.Iterator`, `block.BlockIterator`): the
/// utterances of `main_data` (`feat`: `idx2wav`, `text`: `idx2<txt_format>_text`) with their lengths (`data_len`:
/// `idx2wav_len`), read with libsndfile at `sample_rate` (a higher rate resampled down, a lower one refused),
/// optionally speed-perturbed (`use_speed_perturb`: 0.9 / 1.0 / 1.1 drawn per utterance from the step's generator),
/// and collated as SpeeChain's `collate_main_data_fn` does: `feat` [B, T, 1] zero-padded with `feat_len`, and — with
/// a tokenizer — `text` [B, L] = `[sos] + ids + [eos]` zero-padded with `text_len`.
///
/// Checked at set-up, on every rank, so that bad data stops the job before its first step with one line naming the
/// file and line: every index in every file (an index one file has and another lacks), a transcript that is empty
/// or holds a character the vocabulary lacks (SpeeChain would train on `<unk>`), every audio file's header (missing,
/// unreadable, not mono, empty, truncated, sampled below `sample_rate`).
///
/// Where we differ: the transcripts are tokenised once at set-up instead of in every step's model pre-processing
/// (the same ids); SpeeChain skips an utterance whose waveform is empty, here it is an error at set-up.
public final class SpeechTextBatches: BatchSource {
    public struct Conf: Sendable, Equatable {
        public enum Iterator: String, Sendable { case abs = "abs.Iterator", block = "block.BlockIterator" }
        public var iterator: Iterator
        public var featPaths: [String]
        public var textPaths: [String]
        public var lengthPaths: [String]
        public var sampleRate = 16000
        public var useSpeedPerturb = false
        public var batchSize: Int?
        public var batchLength: Int?
        public var isDescending: Bool? = true
        public var shuffle = true
        public var batchesPerEpoch: Int?
        /// `token_type` and `token_path` of the model's customize_conf (text is not collated without them).
        public var tokenType: String?
        public var tokenPath: String?
        public var groupInfo: [String: [String]] = [:]

        public init(iterator: Iterator, featPaths: [String], textPaths: [String], lengthPaths: [String]) {
            self.iterator = iterator; self.featPaths = featPaths; self.textPaths = textPaths; self.lengthPaths = lengthPaths
        }
    }

    public let conf: Conf
    /// Utterance indices (sorted by code point, as SpeeChain's dictionaries are).
    public let indices: [String]
    public let audioPaths: [String]
    /// `idx2wav_len`: samples per utterance at `sample_rate` (what sorting and `batch_len` count).
    public let lengths: [Int]
    /// `[sos] + ids + [eos]` per utterance (empty when no tokenizer is given).
    public let tokens: [[Int32]]
    public let tokenizer: (any Tokenizer)?
    public let iterator: BatchIterator
    private let reader: AudioReader
    private let perturbation: SpeedPerturbation?
    /// Per position of a batch, its waveform (capacity kept across batches).
    private var waveforms: [[Float]] = []
    private var perturbed: [Float] = []

    public init(_ conf: Conf, world: Int, seed: Int) throws {
        self.conf = conf
        let env = Self.environment()
        func resolve(_ p: [String]) throws -> [String] { try p.map { try SpeechainPath.resolve($0, environment: env) } }
        let wav = try IndexFile.load(try resolve(conf.featPaths))
        var maps: [any IndexKeyed] = [wav]
        var text: IndexFile<String>?
        if !conf.textPaths.isEmpty { text = try IndexFile.loadTranscripts(try resolve(conf.textPaths)); maps.append(text!) }
        let lens = try IndexFile.loadLengths(try resolve(conf.lengthPaths))
        maps.append(lens)
        indices = try IndexJoin.commonIndices(maps)
        guard !indices.isEmpty else { throw SpeechDataError.indexFile(path: wav.paths.joined(separator: " + "), line: nil, reason: "holds no utterance") }
        audioPaths = indices.map { wav[$0]! }
        lengths = indices.map { lens[$0]! }
        if let z = lengths.firstIndex(of: 0) {
            let (path, line) = lens.origin(of: indices[z])!
            throw SpeechDataError.indexFile(path: path, line: line, reason: "utterance \(SpeechDataError.quote(indices[z])) has length 0")
        }
        if let type = conf.tokenType, let text {
            let tok = try makeTokenizer(tokenType: type, tokenPath: conf.tokenPath.map { try SpeechainPath.resolve($0, environment: env) })
            tokenizer = tok
            let unk = tok.vocabulary.unknown
            tokens = try indices.map { index in
                let ids = try tok.text2tensor(text[index]!)
                if ids.contains(unk) {
                    let (path, line) = text.origin(of: index)!
                    throw SpeechDataError.indexFile(path: path, line: line,
                        reason: "transcript \(SpeechDataError.quote(text[index]!)) has a token the vocabulary \(tok.vocabulary.path) does not hold (it would be <unk>)")
                }
                return ids
            }
        } else {
            tokenizer = nil
            tokens = []
        }
        reader = try AudioReader(sampleRate: conf.sampleRate)
        perturbation = conf.useSpeedPerturb ? try SpeedPerturbation(sampleRate: conf.sampleRate) : nil
        // every audio file's header, before any step: a bad file stops every rank at set-up
        for (k, path) in audioPaths.enumerated() {
            do {
                try reader.checkHeader(path)
            } catch let error as SpeechDataError {
                let (file, line) = wav.origin(of: indices[k])!
                throw SpeechDataError.indexFile(path: file, line: line, reason: error.description)
            }
        }
        let strategy: BatchIterator.Strategy
        switch conf.iterator {
        case .abs:
            guard let b = conf.batchSize, b > 0 else { throw SpeechDataError.setting("abs.Iterator needs batch_size > 0") }
            strategy = .fixed(batchSize: b)
        case .block:
            guard let l = conf.batchLength, l > 0 else { throw SpeechDataError.setting("block.BlockIterator needs batch_len > 0") }
            strategy = .block(batchLength: l)
        }
        iterator = BatchIterator(lengths: lengths, strategy: strategy, isDescending: conf.isDescending, world: world,
                                 shuffle: conf.shuffle, seed: seed, batchesPerEpoch: conf.batchesPerEpoch)
        guard iterator.stepsPerEpoch > 0 else {
            throw SpeechDataError.setting("\(conf.featPaths.joined(separator: " + ")): \(indices.count) utterances make no batch that \(world) ranks can share")
        }
    }

    /// SpeeChain takes a relative path that does not start with '.' from `$SPEECHAIN_ROOT`; without it set, from the
    /// current directory (where our recipes run).
    static func environment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        if (env["SPEECHAIN_ROOT"] ?? "").isEmpty { env["SPEECHAIN_ROOT"] = FileManager.default.currentDirectoryPath }
        return env
    }

    public var itemCount: Int { indices.count }

    public var description: String {
        let seconds = Double(lengths.reduce(0, +)) / Double(conf.sampleRate)
        let batching = conf.iterator == .block ? "batch_len \(conf.batchLength ?? 0)" : "batch_size \(conf.batchSize ?? 0)"
        return "\(conf.iterator.rawValue) over \(indices.count) utterances (\(String(format: "%.1f", seconds / 3600)) h), \(batching), "
            + "\(iterator.stepsPerEpoch) batches per epoch" + (conf.useSpeedPerturb ? ", speed perturbation" : "")
    }

    public func trainingSteps(epoch: Int, rank: Int, world: Int) -> [[Int]] {
        iterator.batches(epoch: epoch).map { iterator.share(of: $0, rank: rank) }
    }

    /// Every planned batch in order (the ones too small for every rank too), each rank its stride share.
    public func evaluationSteps(rank: Int, world: Int) -> [[Int]] {
        iterator.planned.map { iterator.share(of: $0, rank: rank) }.filter { !$0.isEmpty }
    }

    public func collate(_ items: [Int], into batch: inout Batch, random: inout Xoshiro256) throws {
        while waveforms.count < items.count { waveforms.append([]) }
        var longest = 0
        for (k, item) in items.enumerated() {
            do {
                try reader.read(audioPaths[item], into: &waveforms[k])
            } catch let error as SpeechDataError {
                throw SpeechDataError.setting("utterance \(SpeechDataError.quote(indices[item])): \(error.description)")
            }
            if let perturbation {
                let factor = perturbation.randomFactorIndex(using: &random)
                try perturbation.perturb(waveforms[k], factorIndex: factor, into: &perturbed)
                swap(&waveforms[k], &perturbed)
            }
            longest = max(longest, waveforms[k].count)
        }
        let f = batch.slot("feat")
        batch.tensors[f].resetFloats(items.count, longest, 1)
        batch.tensors[f].floats.withUnsafeMutableBufferPointer { dst in
            for k in items.indices {
                waveforms[k].withUnsafeBufferPointer { src in
                    (dst.baseAddress! + k * longest).update(from: src.baseAddress!, count: src.count)
                }
            }
        }
        for k in items.indices { batch.tensors[f].lengths.append(waveforms[k].count) }
        guard !tokens.isEmpty else { return }
        let t = batch.slot("text")
        var widest = 0
        for item in items { widest = max(widest, tokens[item].count) }
        batch.tensors[t].resetInts(items.count, widest)
        for (k, item) in items.enumerated() {
            let ids = tokens[item]
            for (j, id) in ids.enumerated() { batch.tensors[t].ints[k * widest + j] = id }
            batch.tensors[t].lengths.append(ids.count)
        }
    }

    public func check(for model: any Model, set: String) throws {
        if model is TableModel {
            throw DataError.mismatch("data_cfg.\(set) is speech (\(conf.iterator.rawValue) over speech_text.SpeechTextDataset), which \(type(of: model)) does not take")
        }
    }

    /// Utterances, samples and a CRC-32C over the indices, lengths and token ids.
    public var fingerprint: String {
        var bytes: [UInt8] = []
        for (k, index) in indices.enumerated() {
            bytes += index.utf8
            bytes.append(0)
            withUnsafeBytes(of: Int64(lengths[k]).littleEndian) { bytes += $0 }
            if !tokens.isEmpty { tokens[k].withUnsafeBytes { bytes += $0 } }
        }
        let crc = CRC32C.checksum(bytes)
        return "\(indices.count) utterances, \(lengths.reduce(0, +)) samples (crc32c \(Checkpoint.hex(crc)))"
    }
}
