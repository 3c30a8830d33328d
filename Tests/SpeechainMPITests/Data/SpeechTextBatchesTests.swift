import Foundation
import MallocCounter
import Testing
@testable import SpeechainMPI

/// `speech_text.SpeechTextDataset` behind SpeeChain's iterators, on real espeak-ng audio: what a batch holds
/// (checked against sox's decoding and a vocabulary looked up by hand), how ranks share global batches, speed
/// perturbation, the loading thread, bad data at set-up, and a whole epoch of `speechain-mpi data` under mpirun.
@Suite(.serialized) struct SpeechTextBatchesTests {
    static let clips = ["one_two_three_four", "speech_chain", "three_oh_seven", "yes"]
    static let words = ["one two three four", "speech chain", "three oh seven", "yes"]
    /// Ten utterances cycling over the four clips, with their transcripts.
    static let count = 10

    /// The corpus folder (SpeeChain's layout) and a vocabulary of the transcripts' characters.
    static let corpus: String = {
        do { return try makeCorpus() } catch { fatalError("corpus fixture: \(error)") }
    }()

    static let vocabulary: [String] = {
        let chars = Set(words.joined().unicodeScalars.filter { $0 != " " }.map(String.init)).sorted()
        return ["<blank>", "<space>"] + chars + ["<unk>", "<sos/eos>"]
    }()

    static func index(_ k: Int) -> String { String(format: "utt%02d", k) }

    static func makeCorpus() throws -> String {
        let dir = try TestResources.scratchDirectory("speech-corpus").path
        var wav = "", lens = "", text = ""
        for k in 0..<count {
            let clip = clips[k % clips.count]
            let path = TestResources.url("speech/\(clip).wav").path
            let n = try SpeechFixtures.soxFloats(path).count
            wav += "\(index(k)) \(path)\n"; lens += "\(index(k)) \(n)\n"; text += "\(index(k)) \(words[k % words.count])\n"
        }
        try write(wav, dir + "/idx2wav"); try write(lens, dir + "/idx2wav_len"); try write(text, dir + "/idx2no-punc_text")
        try FileManager.default.createDirectory(atPath: dir + "/vocab", withIntermediateDirectories: true)
        try write(vocabulary.joined(separator: "\n") + "\n", dir + "/vocab/vocab")
        return dir
    }

    static func write(_ text: String, _ path: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) }

    static func conf(_ iterator: SpeechTextBatches.Conf.Iterator = .abs, dir: String = corpus, batchSize: Int = 4,
                     shuffle: Bool = false) -> SpeechTextBatches.Conf {
        var c = SpeechTextBatches.Conf(iterator: iterator, featPaths: [dir + "/idx2wav"], textPaths: [dir + "/idx2no-punc_text"],
                                       lengthPaths: [dir + "/idx2wav_len"])
        c.batchSize = batchSize
        c.batchLength = 40_000
        c.shuffle = shuffle
        c.tokenType = "char"
        c.tokenPath = corpus + "/vocab"
        return c
    }

    /// The token ids of a transcript by hand: [sos] + line numbers of its characters (' ' is <space>) + [eos].
    static func ids(_ sentence: String) -> [Int32] {
        let eos = Int32(vocabulary.count - 1)
        return [eos] + sentence.unicodeScalars.map { Int32(vocabulary.firstIndex(of: $0 == " " ? "<space>" : String($0))!) } + [eos]
    }

    @Test func aBatchIsPaddedWaveformsAndTokenIds() throws {
        let source = try SpeechTextBatches(Self.conf(), world: 1, seed: 0)
        #expect(source.itemCount == Self.count)
        let decoded = try Self.clips.map { try SpeechFixtures.soxFloats(TestResources.url("speech/\($0).wav").path) }
        var batch = Batch(), random = Xoshiro256(seed: 1)
        var seen: [String] = []
        for items in source.trainingSteps(epoch: 1, rank: 0, world: 1) {
            try source.collate(items, into: &batch, random: &random)
            let feat = try #require(batch["feat"]), text = try #require(batch["text"])
            let expected = items.map { decoded[$0 % Self.clips.count] }
            let longest = expected.map(\.count).max()!
            #expect(feat.shape == [items.count, longest, 1])
            #expect(feat.lengths == expected.map(\.count))
            // sorted longest first (is_descending: True)
            #expect(feat.lengths == feat.lengths.sorted(by: >))
            for (k, wave) in expected.enumerated() {
                let row = Array(feat.floats[(k * longest)..<((k + 1) * longest)])
                #expect(Array(row[0..<wave.count]) == wave)
                #expect(row[wave.count...].allSatisfy { $0 == 0 })
            }
            let sentences = items.map { Self.ids(Self.words[$0 % Self.words.count]) }
            let widest = sentences.map(\.count).max()!
            #expect(text.shape == [items.count, widest])
            #expect(text.lengths == sentences.map(\.count))
            for (k, s) in sentences.enumerated() {
                #expect(Array(text.ints[(k * widest)..<((k + 1) * widest)]) == s + [Int32](repeating: 0, count: widest - s.count))
            }
            seen += items.map { source.indices[$0] }
        }
        #expect(seen.sorted() == (0..<Self.count).map(Self.index))
    }

    /// Under data parallelism every global batch is split by stride over the ranks, all ranks run the same number
    /// of steps, and together they see exactly the global batches one plan makes, each utterance once an epoch.
    @Test(arguments: [SpeechTextBatches.Conf.Iterator.abs, .block])
    func ranksShareEachGlobalBatch(iterator: SpeechTextBatches.Conf.Iterator) throws {
        let source = try SpeechTextBatches(Self.conf(iterator, shuffle: true), world: 2, seed: 3)
        for epoch in 1...3 {
            let global = source.iterator.batches(epoch: epoch)
            let r0 = source.trainingSteps(epoch: epoch, rank: 0, world: 2), r1 = source.trainingSteps(epoch: epoch, rank: 1, world: 2)
            #expect(r0.count == r1.count && r0.count == global.count)
            for (i, batch) in global.enumerated() {
                #expect(Set(r0[i]).isDisjoint(with: r1[i]) && Set(r0[i] + r1[i]) == Set(batch))
                // the stride: rank 1 (world − rank − 1 = 0 with is_descending) takes positions 0, 2, …
                #expect(r1[i] == stride(from: 0, to: batch.count, by: 2).map { batch[$0] })
            }
            #expect((r0 + r1).flatMap { $0 }.sorted() == Array(0..<Self.count))
        }
        // shuffling depends on the epoch
        #expect(source.iterator.batches(epoch: 1) != source.iterator.batches(epoch: 2))
    }

    @Test func speedPerturbationIsSeededAndUsesEachFactor() throws {
        var c = Self.conf(batchSize: 10)
        c.useSpeedPerturb = true
        let source = try SpeechTextBatches(c, world: 1, seed: 0)
        let items = Array(0..<Self.count)
        var a = Batch(), b = Batch()
        var r1 = Xoshiro256(seed: 9), r2 = Xoshiro256(seed: 9)
        try source.collate(items, into: &a, random: &r1)
        try source.collate(items, into: &b, random: &r2)
        #expect(a["feat"] == b["feat"])
        // each perturbed length is one of torchaudio's three output lengths for 0.9, 1.0, 1.1 (sr·f Hz taken as sr)
        var used = Set<Int>()
        var random = Xoshiro256(seed: 4)
        for _ in 0..<6 {
            try source.collate(items, into: &a, random: &random)
            for (k, n) in a["feat"]!.lengths.enumerated() {
                let original = source.lengths[items[k]]
                let candidates = [14400, 16000, 17600].map { (original * $0 + 15999) / 16000 }   // ceil(n·sr′/sr)
                let f = candidates.firstIndex(of: n)
                #expect(f != nil, "length \(n) from \(original)")
                if let f { used.insert(f) }
            }
        }
        #expect(used == [0, 1, 2])
    }

    @Test func theLoaderHandsOutEveryBatchInOrderAndRethrowsAtTheStep() throws {
        let source = try SpeechTextBatches(Self.conf(batchSize: 3), world: 1, seed: 0)
        let steps = source.trainingSteps(epoch: 1, rank: 0, world: 1)
        let loader = BatchLoader(source: source, steps: steps, slots: BatchSlots(count: 2), random: Xoshiro256(seed: 0))
        // a source's collate runs on one thread at a time: the batches to compare come from a second one
        let reference = try SpeechTextBatches(Self.conf(batchSize: 3), world: 1, seed: 0)
        var direct = Batch(), random = Xoshiro256(seed: 0)
        var k = 0
        while let slot = try loader.next() {
            try reference.collate(steps[k], into: &direct, random: &random)
            #expect(slot.pointee["feat"] == direct["feat"] && slot.pointee["text"] == direct["text"])
            k += 1
        }
        #expect(k == steps.count)
        // an item that cannot be loaded (its file removed after set-up) fails the step that needs it, not earlier
        let dir = try TestResources.scratchDirectory("speech-vanish").path
        var wav = ""
        for k in 0..<4 {
            let copy = dir + "/\(k).wav"
            try FileManager.default.copyItem(atPath: TestResources.url("speech/yes.wav").path, toPath: copy)
            wav += "\(Self.index(k)) \(copy)\n"
        }
        try Self.write(wav, dir + "/idx2wav")
        try Self.write((0..<4).map { "\(Self.index($0)) 9161\n" }.joined(), dir + "/idx2wav_len")
        try Self.write((0..<4).map { "\(Self.index($0)) yes\n" }.joined(), dir + "/idx2no-punc_text")
        let vanishing = try SpeechTextBatches(Self.conf(dir: dir, batchSize: 1), world: 1, seed: 0)
        let plan = vanishing.trainingSteps(epoch: 1, rank: 0, world: 1)
        try FileManager.default.removeItem(atPath: vanishing.audioPaths[plan[3][0]])
        let failing = BatchLoader(source: vanishing, steps: plan, slots: BatchSlots(count: 2), random: Xoshiro256(seed: 0))
        for _ in 0..<3 { #expect(try failing.next() != nil) }
        #expect(throws: SpeechDataError.self) { _ = try failing.next() }
        #expect(try failing.next() == nil)
    }

    /// Taking a batch from the loader and computing its log-mel features allocates nothing once warm (the loading
    /// thread reads files meanwhile; libsndfile's own allocations happen there).
    @Test(.enabled(if: optimizedBuild, "allocation counts are only meaningful in optimised builds"))
    func aWarmStepTakingABatchAllocatesNothing() throws {
        let source = try SpeechTextBatches(Self.conf(batchSize: 3), world: 1, seed: 0)
        let frontend = try Speech2MelSpec()
        // one OpenBLAS thread, as each rank runs: OpenBLAS's thread pool allocates on every threaded call
        let threads = BLAS.threadCount
        BLAS.setThreadCount(1)
        defer { BLAS.setThreadCount(threads) }
        let slots = BatchSlots(count: 2)
        var features = [Float](repeating: 0, count: 3 * frontend.frameCount(samples: 20_000) * 80), featureLengths = [Int](repeating: 0, count: 3)
        func epoch(counting: Bool) throws -> Int {
            let steps = source.trainingSteps(epoch: 1, rank: 0, world: 1)
            let loader = BatchLoader(source: source, steps: steps, slots: slots, random: Xoshiro256(seed: 0))
            var allocations = 0
            while true {
                if counting { malloc_counter_start() }
                guard let slot = try loader.next() else { if counting { _ = malloc_counter_stop() }; break }
                let feat = slot.pointee.tensors[0]
                try feat.floats.withUnsafeBufferPointer { w in
                    try features.withUnsafeMutableBufferPointer { out in
                        try featureLengths.withUnsafeMutableBufferPointer { fl in
                            try frontend.compute(waveforms: w.baseAddress!, batchSize: feat.shape[0], samples: feat.shape[1],
                                                 lengths: feat.lengths, output: out.baseAddress!, featureLengths: fl.baseAddress!)
                        }
                    }
                }
                if counting { allocations += malloc_counter_stop() }
            }
            return allocations
        }
        _ = try epoch(counting: false)
        #expect(try epoch(counting: true) == 0)
    }

    // MARK: bad data: one line naming the file and line, at set-up

    static func badCorpus(_ name: String, wav: [String]? = nil, lens: [String]? = nil, text: [String]? = nil) throws -> SpeechTextBatches.Conf {
        let dir = try TestResources.scratchDirectory("speech-bad-\(name)").path
        let good = try String(contentsOfFile: corpus + "/idx2wav", encoding: .utf8).split(separator: "\n").map(String.init)
        let goodLens = try String(contentsOfFile: corpus + "/idx2wav_len", encoding: .utf8).split(separator: "\n").map(String.init)
        let goodText = try String(contentsOfFile: corpus + "/idx2no-punc_text", encoding: .utf8).split(separator: "\n").map(String.init)
        try write((wav ?? good).joined(separator: "\n") + "\n", dir + "/idx2wav")
        try write((lens ?? goodLens).joined(separator: "\n") + "\n", dir + "/idx2wav_len")
        try write((text ?? goodText).joined(separator: "\n") + "\n", dir + "/idx2no-punc_text")
        return conf(dir: dir)
    }

    static func replacingLine(_ file: String, _ line: Int, with text: String) throws -> [String] {
        var lines = try String(contentsOfFile: corpus + "/" + file, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[line - 1] = text
        return lines
    }

    static func badCases() throws -> [(String, SpeechTextBatches.Conf, String)] {
        let f = SpeechFixtures.self
        return [
            ("missing", try badCorpus("missing", wav: try replacingLine("idx2wav", 3, with: "utt02 /nonexistent/utt02.wav")), "idx2wav:3: /nonexistent/utt02.wav"),
            ("unindexed", try badCorpus("unindexed", text: Array(try replacingLine("idx2no-punc_text", 1, with: "utt00 one").dropLast())),
             "idx2no-punc_text: has no line for index 'utt09', which"),
            ("empty", try badCorpus("empty", text: try replacingLine("idx2no-punc_text", 5, with: "utt04  ")), "idx2no-punc_text:5:"),
            ("unknown", try badCorpus("unknown", text: try replacingLine("idx2no-punc_text", 2, with: "utt01 speech queue")),
             "idx2no-punc_text:2: transcript 'speech queue' has a token the vocabulary"),
            ("truncated", try badCorpus("truncated", wav: try replacingLine("idx2wav", 4, with: "utt03 \(f.path("truncated.wav"))")), "idx2wav:4:"),
            ("8k", try badCorpus("8k", wav: try replacingLine("idx2wav", 1, with: "utt00 \(f.path("seven8k.wav"))")),
             "idx2wav:1: \(f.path("seven8k.wav")): is sampled at 8000 Hz, below the configured sample_rate of 16000 Hz"),
            ("stereo", try badCorpus("stereo", wav: try replacingLine("idx2wav", 2, with: "utt01 \(f.path("stereo.wav"))")), "idx2wav:2: \(f.path("stereo.wav")): has 2 channels"),
            ("garbage", try badCorpus("garbage", wav: try replacingLine("idx2wav", 2, with: "utt01 \(f.path("garbage.wav"))")), "idx2wav:2: \(f.path("garbage.wav"))"),
            ("zero", try badCorpus("zero", lens: try replacingLine("idx2wav_len", 6, with: "utt05 0")), "idx2wav_len:6: utterance 'utt05' has length 0"),
        ]
    }

    @Test func badDataIsOneLineNamingFileAndLine() throws {
        for (name, conf, message) in try Self.badCases() {
            do {
                _ = try SpeechTextBatches(conf, world: 1, seed: 0)
                Issue.record("\(name): no error")
            } catch {
                let line = "\(error)"
                #expect(line.contains(message) && !line.contains("\n"), "\(name): \(line)")
            }
        }
        // a higher sample rate is resampled, not refused
        var c = try Self.badCorpus("48k", wav: try Self.replacingLine("idx2wav", 1, with: "utt00 \(SpeechFixtures.path("seven48k24.wav"))"))
        c.batchSize = 10
        let source = try SpeechTextBatches(c, world: 1, seed: 0)
        var batch = Batch(), random = Xoshiro256(seed: 0)
        try source.collate([source.indices.firstIndex(of: "utt00")!], into: &batch, random: &random)
        let at16k = try SpeechFixtures.soxFloats(SpeechFixtures.path("seven16k.wav")).count
        #expect(abs(batch["feat"]!.lengths[0] - at16k) <= 1)
    }

    // MARK: the command

    static func yaml(_ conf: SpeechTextBatches.Conf, speedPerturb: Bool = false) -> String {
        """
        data_cfg:
          train:
            type: block.BlockIterator
            conf:
              dataset_type: speech_text.SpeechTextDataset
              dataset_conf:
                main_data:
                  feat: \(conf.featPaths[0])
                  text: \(conf.textPaths[0])
                use_speed_perturb: \(speedPerturb ? "True" : "False")
              data_len: \(conf.lengthPaths[0])
              batch_len: 30000
        train_cfg:
          model:
            model_type: ar_asr.ARASR
            model_conf:
              customize_conf:
                token_type: char
                token_path: \(corpus)/vocab
          optim_sches:
            type: noam.Noamlr
            conf: {optim_type: Adam, warmup_steps: 10}

        """
    }

    @Test func anEpochUnderMPIRunCountsEveryUtteranceOnce() throws {
        let file = Self.corpus + "/data.yaml"
        try Self.write(Self.yaml(Self.conf()), file)
        let r = try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path, "data", "--config", file],
                                   environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                   executable: MPIRun.mpirun)
        #expect(r.status == 0, "\(r.stderr)")
        let samples = try Self.clips.map { try SpeechFixtures.soxFloats(TestResources.url("speech/\($0).wav").path).count }
        let totalSamples = (0..<Self.count).map { samples[$0 % 4] }.reduce(0, +)
        let tokens = (0..<Self.count).map { Self.ids(Self.words[$0 % 4]).count }.reduce(0, +)
        // frames per utterance: SpeeChain's feat_len = (len + 2·(400/2) − 400) / 160 + 1
        let frames = (0..<Self.count).map { samples[$0 % 4] / 160 + 1 }.reduce(0, +)
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("epoch 1:") }.map(String.init) ?? ""
        #expect(line.contains("\(Self.count) utterances over 2 rank(s)") && line.contains(String(format: "%.1f s of audio", Double(totalSamples) / 16000))
                && line.contains("\(frames) frames") && line.contains("\(tokens) tokens"), "\(r.stdout)")
        #expect(r.stdout.contains("first batch on rank 0: feat ["), "\(r.stdout)")
    }

    @Test func badDataEndsEveryRankWithItsLine() throws {
        for (name, conf, message) in try Self.badCases() where ["missing", "unknown", "8k"].contains(name) {
            let file = Self.corpus + "/bad-\(name).yaml"
            try Self.write(Self.yaml(conf), file)
            let alone = try Executable.run(["data", "--config", file])
            #expect(alone.status != 0 && alone.stderr.split(separator: "\n").count == 1 && alone.stderr.contains(message), "\(alone.stderr)")
            let r = try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path, "data", "--config", file],
                                       environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                       executable: MPIRun.mpirun)
            let ours = r.stderr.split(separator: "\n").filter { $0.hasPrefix("speechain-mpi data: error: rank ") }
            #expect(r.status != 0 && ours.count == 2, "\(r.stderr)")
            for rank in 0..<2 { #expect(ours.contains { $0.hasPrefix("speechain-mpi data: error: rank \(rank): ") && $0.contains(message) }, "\(r.stderr)") }
        }
    }
}
