import Foundation

/// SpeeChain's test stage, as read from the experiment: which models of models/ (`test_model`), which decoding
/// runs (`infer_cfg`), which sets (`data_cfg.test`), where results go (`test_result_path`, default the training
/// result folder; `attach_model_folder_when_test`) and which worst cases get a file (`bad_cases_selection`).
public struct TestStageConf: Sendable {
    public struct InferRun: Sendable {
        public var name: String
        public var options: DecodingOptions
        public var args: [String: ConfigValue]
    }
    public var testModels: [String]
    public var inferRuns: [InferRun]
    public var sets: [(name: String, conf: SpeechTextBatches.Conf)]
    public var resultPath: String?
    public var attachModelFolder = true
    public var badCases: [(metric: String, mode: String, number: Int)]

    /// ARASR's bad_cases_selection_init_fn.
    public static let defaultBadCases: [(metric: String, mode: String, number: Int)] = [
        ("wer", "max", 30), ("cer", "max", 30), ("feat_token_len_ratio", "min", 30), ("feat_token_len_ratio", "max", 30),
        ("text_confid", "min", 30), ("text_confid", "max", 30),
    ]
}

/// Runs the test stage over the ranks. Each test set's batches are planned once for a world of one (`abs.Iterator`
/// order), so that what an utterance is decoded with — its batch and padding — and hence every result do not
/// depend on the number of ranks; round k gives batch k·W + r to rank r; after every round the ranks' results go
/// to rank 0, which appends them to `checkpoint.json` in the set's result folder (atomically). A run with
/// `resume` skips the batches the checkpoint holds. At the end rank 0 writes SpeeChain's files (TestReport):
/// `idx2text`, `idx2wer`, …, `overall_results.md`, `overall_results.json`, the worst cases.
///
/// The weights: rank 0 reads `models/<test_model>.safetensors` and every rank takes its parameters and buffers by
/// broadcast, so only rank 0 needs the result folder (as in training).
public final class Tester {
    public let experiment: Experiment
    public let conf: TestStageConf
    public let model: ARASR
    public let communicator: Communicator
    private let sets: [(name: String, batches: SpeechTextBatches, groups: [(name: String, idToGroup: [String: String])])]
    private let output: (String) -> Void
    /// Test hook: SIGKILL rank `rank` once `round` rounds of the first decoding are checkpointed.
    public var killAfterRound: (rank: Int, round: Int)?

    public init(experiment: Experiment, communicator: Communicator, output: @escaping (String) -> Void = { print($0) }) throws {
        guard let conf = experiment.testStage else { throw ConfigError.missing(context: "experiment", key: "data_cfg.test") }
        self.experiment = experiment
        self.conf = conf
        self.communicator = communicator
        self.output = output
        guard let built = try Models.make(type: experiment.modelType, conf: experiment.modelConf, moduleConf: experiment.moduleConf,
                                          criterionConf: experiment.criterionConf, seed: experiment.seed) as? ARASR else {
            throw ConfigError.invalidValue(context: "experiment", key: "test", reason: "the test stage is built for \(ARASR.typeName) models, not \(experiment.modelType)")
        }
        model = built
        // every set read and checked at set-up, on every rank (a missing file is one line before any decoding)
        sets = try conf.sets.map { set in
            let b = try SpeechTextBatches(set.conf, world: 1, seed: Int(clamping: experiment.seed))
            guard b.tokenizer != nil else {
                throw ConfigError.missing(context: "data_cfg.test.\(set.name).conf.dataset_conf.main_data", key: "text")
            }
            try b.check(for: built, set: "test")
            // group_info (idx2spk, idx2gen) read here too: a bad file is a set-up error, not one after the decoding
            var groups: [(name: String, idToGroup: [String: String])] = []
            for (kind, paths) in set.conf.groupInfo.sorted(by: { $0.key < $1.key }) {
                var map: [String: String] = [:]
                for p in paths {
                    let resolved = try SpeechainPath.resolve(p, environment: SpeechTextBatches.environment())
                    map.merge(try TestReport.readGroupInfo(at: URL(fileURLWithPath: resolved))) { a, _ in a }
                }
                groups.append((kind, map))
            }
            return (set.name, b, groups)
        }
        for run in conf.inferRuns where run.options.beamSize + 1 > built.vocabSize {
            throw ConfigError.invalidValue(context: "infer_cfg \(run.name)", key: "beam_size",
                                           reason: "beam_size + 1 must not exceed the vocabulary of \(built.vocabSize) tokens, found \(run.options.beamSize)")
        }
    }

    private var resultRoot: URL? {
        (conf.resultPath ?? experiment.trainResultPath).map { URL(fileURLWithPath: $0, isDirectory: true) }
    }

    public func run() throws {
        guard let root = resultRoot else {
            throw ConfigError.missing(context: "experiment", key: "train_result_path (the test stage reads models/ and writes its results there)")
        }
        let models = URL(fileURLWithPath: experiment.trainResultPath ?? root.path, isDirectory: true).appendingPathComponent("models")
        var first = true
        for testModel in conf.testModels {
            try loadWeights(models.appendingPathComponent("\(testModel).safetensors"), name: testModel, folder: models)
            for run in conf.inferRuns {
                for (name, batches, groups) in sets {
                    var folder = root.appendingPathComponent(run.name)
                    if conf.attachModelFolder { folder.appendPathComponent(testModel) }
                    folder.appendPathComponent(name.replacingOccurrences(of: "/", with: "%"))
                    try decode(batches, groups: groups, run: run, testModel: testModel, setName: name, folder: folder, hook: first ? killAfterRound : nil)
                    first = false
                }
            }
        }
    }

    // MARK: weights

    /// Rank 0 reads the file; a missing or unreadable one is one line on every rank; every rank takes rank 0's
    /// parameters and buffers.
    private func loadWeights(_ url: URL, name: String, folder: URL) throws {
        var problem = ""
        if communicator.isRoot {
            do {
                guard FileManager.default.fileExists(atPath: url.path) else {
                    let there = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
                        .filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.map { String($0.dropLast(12)) }.sorted()
                    throw ConfigError.invalidValue(context: "experiment", key: "test_model",
                        reason: "'\(name)': \(url.path) does not exist" + (there.isEmpty ? " (no models there)" : "; models/ holds: \(there.joined(separator: ", "))"))
                }
                let file = try Safetensors.read(contentsOf: url)
                try model.loadStateDict(file.tensors, source: url.path)
            } catch {
                problem = "\(error)"
            }
        }
        let agreed = try TextExchange.fromRoot(problem, communicator)
        if !agreed.isEmpty { throw TestStageError.rootFailed(agreed) }
        let p = model.parameters
        try communicator.broadcast(p.values.pointer, count: p.count, root: 0)
        // rank 0's buffers: names and shapes first (a fresh model's normalisation statistics may still be empty)
        let rootBuffers = communicator.isRoot ? model.bufferTensors : []
        let layout = try TextExchange.fromRoot(rootBuffers.map { "\($0.name) \($0.shape.map(String.init).joined(separator: ","))" }
            .joined(separator: "\n"), communicator)
        var buffers: [NamedTensor] = layout.split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            let shape = parts.count > 1 ? parts[1].split(separator: ",").compactMap { Int($0) } : []
            return NamedTensor(name: String(parts[0]), shape: shape, values: [Float](repeating: 0, count: shape.reduce(1, *)))
        }
        if communicator.isRoot { buffers = rootBuffers }
        var flat = buffers.flatMap { $0.values }
        try flat.withUnsafeMutableBufferPointer { try communicator.broadcast($0.baseAddress!, count: $0.count, root: 0) }
        var k = 0
        for i in buffers.indices { let n = buffers[i].values.count; buffers[i].values = Array(flat[k..<(k + n)]); k += n }
        if !buffers.isEmpty && !communicator.isRoot { try model.loadBuffers(buffers, source: "rank 0's \(name)") }
    }

    // MARK: decoding one set

    struct Progress: Codable {
        var testModel: String
        var infer: String
        var set: String
        var batches: Int
        var done: [Int]
        var results: [UtteranceResult]
    }

    private func decode(_ set: SpeechTextBatches, groups: [(name: String, idToGroup: [String: String])], run: TestStageConf.InferRun, testModel: String, setName: String,
                        folder: URL, hook: (rank: Int, round: Int)?) throws {
        let world = communicator.size, rank = communicator.rank
        let planned = set.iterator.planned
        let checkpointURL = folder.appendingPathComponent("checkpoint.json")
        var progress = Progress(testModel: testModel, infer: run.name, set: setName, batches: planned.count, done: [], results: [])
        // rank 0 reads the checkpoint of an interrupted run (resume) and tells every rank which batches are done
        var doneText = ""
        if communicator.isRoot {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            if experiment.resume, FileManager.default.fileExists(atPath: checkpointURL.path) {
                do {
                    let p = try JSONDecoder().decode(Progress.self, from: Data(contentsOf: checkpointURL))
                    guard p.batches == planned.count, p.testModel == testModel, p.infer == run.name, p.set == setName else {
                        throw TestStageError.staleCheckpoint(checkpointURL.path)
                    }
                    progress = p
                } catch let e as TestStageError {
                    doneText = "!" + e.description
                } catch {
                    doneText = "!" + TestStageError.unreadableCheckpoint(checkpointURL.path, "\(error)").description
                }
            }
            if !doneText.hasPrefix("!") { doneText = progress.done.map(String.init).joined(separator: " ") }
        }
        doneText = try TextExchange.fromRoot(doneText, communicator)
        if doneText.hasPrefix("!") { throw TestStageError.rootFailed(String(doneText.dropFirst())) }
        let done = Set(doneText.split(separator: " ").compactMap { Int($0) })
        let remaining = planned.indices.filter { !done.contains($0) }
        let label = "\(run.name)/\(conf.attachModelFolder ? testModel + "/" : "")\(setName)"
        let started = DispatchTime.now().uptimeNanoseconds
        if communicator.isRoot {
            output("test \(label): \(set.itemCount) utterances in \(planned.count) batches" + (done.isEmpty ? "" : ", \(done.count) done before (resumed)")
                   + ", \(world) rank\(world == 1 ? "" : "s")")
        }
        var batch = Batch()
        var random = Xoshiro256(seed: 0)
        let rounds = (remaining.count + world - 1) / world
        var lastReport = 0
        for round in 0..<rounds {
            var mine: [UtteranceResult] = []
            let k = round * world + rank
            if k < remaining.count {
                let items = planned[remaining[k]]
                try set.collate(items, into: &batch, random: &random)
                let decoded = try model.decode(batch, options: run.options)
                let tok = set.tokenizer!
                for (item, u) in zip(items, decoded) {
                    let hypothesis = try tok.tensor2text(u.tokens)
                    let reference = try tok.tensor2text(set.tokens[item])
                    mine.append(.score(id: set.indices[item], hypothesis: hypothesis, reference: reference, confidence: u.score,
                                       featTokenRatio: Double(u.encoderFrames) / (Double(u.tokens.count) + 1e-10), textLength: u.tokens.count + 1))
                }
            }
            let text = String(decoding: try JSONEncoder().encode(mine), as: UTF8.self)
            let gathered = try TextExchange.allgather(text, communicator)
            if communicator.isRoot {
                for g in gathered { progress.results += try JSONDecoder().decode([UtteranceResult].self, from: Data(g.utf8)) }
                for r in 0..<world where round * world + r < remaining.count { progress.done.append(remaining[round * world + r]) }
                try InteropFile.writeAtomically(try JSONEncoder().encode(progress), to: checkpointURL)
                let finished = progress.done.count
                if finished * 10 / planned.count > lastReport || round == rounds - 1 {
                    lastReport = finished * 10 / planned.count
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                    output("test \(label): \(finished)/\(planned.count) batches, \(String(format: "%.1f", seconds)) s")
                }
            }
            if let hook, hook.round == round + 1, hook.rank == rank {
                try communicator.barrier()   // the checkpoint of this round is written
                kill(getpid(), SIGKILL)
            }
        }
        if communicator.isRoot {
            let summary = try TestReport.write(progress.results, groups: groups, badCases: conf.badCases, to: folder)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            output("test \(label): WER \(String(format: "%.2f", summary.wer * 100))% (\(summary.wordErrors)/\(summary.words) words), "
                   + "CER \(String(format: "%.2f", summary.cer * 100))% over \(summary.utterances) utterances, \(String(format: "%.1f", seconds)) s → \(folder.path)")
        }
        try communicator.barrier()
    }
}

public enum TestStageError: AgreedFailure, CustomStringConvertible {
    case rootFailed(String)
    case staleCheckpoint(String)
    case unreadableCheckpoint(String, String)
    public var description: String {
        switch self {
        case .rootFailed(let m): return m
        case .staleCheckpoint(let p): return "\(p) belongs to another test run (model, infer_cfg, set or batches differ); remove it or run without --resume"
        case .unreadableCheckpoint(let p, let why): return "\(p) cannot be read (\(why)); remove it or run without --resume"
        }
    }
}

/// Text between ranks over the collectives a Communicator has: lengths by allgather, the bytes (as doubles, each
/// rank writing only its own segment) by a sum.
enum TextExchange {
    static func allgather(_ text: String, _ c: Communicator) throws -> [String] {
        guard c.size > 1 else { return [text] }
        let bytes = Array(text.utf8)
        let lengths = try c.allgather(Int64(bytes.count)).map { Int($0) }
        let total = lengths.reduce(0, +)
        guard total > 0 else { return lengths.map { _ in "" } }
        var buffer = [Double](repeating: 0, count: total)
        let offset = lengths[..<c.rank].reduce(0, +)
        for (i, b) in bytes.enumerated() { buffer[offset + i] = Double(b) }
        try buffer.withUnsafeMutableBufferPointer { try c.allreduceSum($0.baseAddress!, count: total) }
        var out: [String] = []
        var k = 0
        for n in lengths { out.append(String(decoding: buffer[k..<(k + n)].map { UInt8($0) }, as: UTF8.self)); k += n }
        return out
    }

    /// Rank 0's text on every rank.
    static func fromRoot(_ text: String, _ c: Communicator) throws -> String {
        try allgather(c.isRoot ? text : "", c)[0]
    }
}
