import Foundation

/// `speechain-mpi data`: one epoch of an experiment's training data, read as training reads it — the iterator's plan,
/// each rank its share of every global batch, loaded ahead on the loading thread — and, for speech, turned into
/// log-mel features by `module_conf.frontend` (SpeeChain's recipe frontend when the config has none). Rank 0
/// prints the plan, the first batch and the totals over all ranks; nothing is trained. It checks a corpus and its
/// config before a long run, and measures whether loading keeps up (the time a step waits for its batch).
public final class DataPass {
    public struct Totals: Codable, Sendable, Equatable {
        public var steps = 0
        public var items = 0
        public var samples = 0
        public var frames = 0
        public var tokens = 0
        public var waitSeconds = 0.0
        public var frontendSeconds = 0.0
    }

    public let experiment: Experiment
    public let communicator: Communicator
    public let source: any BatchSource
    private let frontend: Speech2MelSpec?
    private let output: (String) -> Void

    /// Local set-up (Launcher's rule): the data is read and checked here, on every rank.
    public init(experiment: Experiment, communicator: Communicator, output: @escaping (String) -> Void = { print($0) }) throws {
        self.experiment = experiment
        self.communicator = communicator
        self.output = output
        source = try experiment.train.makeBatches(batchSize: experiment.batchSize, shuffle: experiment.shuffle,
                                                  seed: experiment.seed, world: communicator.size)
        if experiment.train.isSpeech {
            if case .map(let model)? = experiment.trainConfig["model"], case .map(let modules)? = model["module_conf"],
               case .map(let f)? = modules["frontend"], case .map(let c)? = f["conf"] {
                frontend = try Speech2MelSpec(conf: c, context: "train_cfg.model.module_conf.frontend.conf")
            } else {
                frontend = try Speech2MelSpec()   // SpeeChain's recipe frontend: 80 mels, 25 ms windows every 10 ms
            }
        } else {
            frontend = nil
        }
    }

    /// Reads epoch `epoch` and returns the totals over all ranks.
    @discardableResult
    public func run(epoch: Int = 1) throws -> Totals {
        let rank = communicator.rank, world = communicator.size
        let local = source.trainingSteps(epoch: epoch, rank: rank, world: world)
        let steps = try communicator.allreduceMin(local.count)
        say("data_cfg.train: \(source)")
        if world > 1 { say("\(world) ranks: each global batch is split by stride, rank r takes utterances r, r+\(world), r+\(2*world), … of it (\(steps) steps on every rank)") }
        let slots = BatchSlots(count: 2)
        let loader = BatchLoader(source: source, steps: Array(local.prefix(steps)), slots: slots,
                                 random: BatchLoader.random(seed: experiment.seed, epoch: epoch, rank: rank))
        defer { loader.finish() }
        var totals = Totals()
        var features: [Float] = [], featureLengths: [Int] = []
        while true {
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard let slot = try loader.next() else { break }
            let t1 = DispatchTime.now().uptimeNanoseconds
            let batch = slot.pointee
            totals.steps += 1
            totals.items += batch.size
            if let feat = batch["feat"] { totals.samples += feat.lengths.reduce(0, +) }
            if let text = batch["text"] { totals.tokens += text.lengths.reduce(0, +) }
            if let frontend, let feat = batch["feat"], feat.shape.count == 3 {
                let b = feat.shape[0], t = feat.shape[1]
                let frames = frontend.frameCount(samples: t)
                if features.count < b * frames * frontend.nMels { features = [Float](repeating: 0, count: b * frames * frontend.nMels) }
                if featureLengths.count < b { featureLengths = [Int](repeating: 0, count: b) }
                try feat.floats.withUnsafeBufferPointer { w in
                    try features.withUnsafeMutableBufferPointer { out in
                        try featureLengths.withUnsafeMutableBufferPointer { fl in
                            try frontend.compute(waveforms: w.baseAddress!, batchSize: b, samples: t, lengths: feat.lengths,
                                                 output: out.baseAddress!, featureLengths: fl.baseAddress!)
                        }
                    }
                }
                totals.frames += featureLengths[0..<b].reduce(0, +)
                if totals.steps == 1 && rank == 0 { describeFirst(batch, frames: frames, featureLengths: Array(featureLengths[0..<b]), mels: frontend.nMels) }
            } else if totals.steps == 1 && rank == 0 {
                describeFirst(batch, frames: nil, featureLengths: [], mels: 0)
            }
            let t2 = DispatchTime.now().uptimeNanoseconds
            totals.waitSeconds += Double(t1 - t0) * 1e-9
            totals.frontendSeconds += Double(t2 - t1) * 1e-9
        }
        let rankItems = totals.items
        var counts = [Double(totals.items), Double(totals.samples), Double(totals.frames), Double(totals.tokens),
                      totals.waitSeconds, totals.frontendSeconds]
        try counts.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: $0.count) }
        var all = Totals(steps: steps, items: Int(counts[0]), samples: Int(counts[1]), frames: Int(counts[2]), tokens: Int(counts[3]),
                         waitSeconds: counts[4] / Double(world), frontendSeconds: counts[5] / Double(world))
        if all.steps == 0 { all.waitSeconds = 0 }
        let rate = Double(frontend?.sampleRate ?? 16000)
        say("epoch \(epoch): \(all.steps) steps, \(all.items) utterances over \(world) rank(s) (rank 0: \(rankItems)), "
            + String(format: "%.1f s of audio", Double(all.samples) / rate)
            + (frontend != nil ? ", \(all.frames) frames" : "") + (all.tokens > 0 ? ", \(all.tokens) tokens" : ""))
        say(String(format: "per step and rank: waited for the batch %.3f ms, frontend %.3f ms (the loading thread reads the next batch meanwhile)",
                   all.waitSeconds * 1000 / Double(max(all.steps, 1)), all.frontendSeconds * 1000 / Double(max(all.steps, 1))))
        return all
    }

    private func describeFirst(_ batch: Batch, frames: Int?, featureLengths: [Int], mels: Int) {
        var parts: [String] = []
        for (name, t) in zip(batch.names, batch.tensors) {
            var text = "\(name) \(t.shape)"
            if !t.lengths.isEmpty { text += " \(name)_len \(t.lengths.prefix(8).map(String.init).joined(separator: " "))\(t.lengths.count > 8 ? " …" : "")" }
            parts.append(text)
        }
        say("first batch on rank 0: " + parts.joined(separator: "; "))
        if let frames { say("  log-mel: [\(featureLengths.count), \(frames), \(mels)] with feat_len \(featureLengths.prefix(8).map(String.init).joined(separator: " "))\(featureLengths.count > 8 ? " …" : "")") }
        if let text = batch["text"], let first = text.lengths.first, let s = source as? SpeechTextBatches, let tok = s.tokenizer {
            let ids = text.ints[0..<first]
            say("  text[0]: \(ids.map(String.init).joined(separator: " ")) = '\((try? tok.tensor2text(ids)) ?? "?")'")
        }
    }

    private func say(_ line: String) { if communicator.isRoot { output(line) } }
}
