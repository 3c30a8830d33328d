import Foundation
import Testing
@testable import SpeechainMPI

/// The ASR model over MPI, on real audio (recipes/asr/spoken_digits/data_prep.sh --tiny): two ranks with half of
/// each global batch end where one rank with the whole batch ends; BatchNorm statistics per rank differ from that
/// by design (as under DDP) and SyncBatchNorm's do not; BatchNorm's running statistics survive a kill and resume.
@Suite(.serialized) struct ASRDataParallelTests {
    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// The tiny corpus (60 train, 12 valid utterances of 1–7 digit words, varied lengths), made once.
    static let corpus: Result<URL, Error> = Result {
        let out = try TestResources.scratchDirectory("asr-dp").appendingPathComponent("data")
        let r = try SpokenDigitsCorpusTests.prepare(out, seed: 11, jobs: 2)
        guard r.status == 0 else { throw Failure("data_prep.sh failed (\(r.status)): \(r.output)") }
        return out
    }

    /// The same corpus with every waveform padded with silence or cut to exactly 1.6 s (sox), so that a global batch
    /// and its per-rank halves have the same padded length. Equality across world sizes needs it: the frontend's
    /// centred STFT reflects the *padded* batch at its end (torch.stft, as in SpeeChain), so the last frame of a
    /// batch's longest utterance depends on how long the batch is padded — in SpeeChain under DDP as well — and
    /// BatchNorm's statistics cover the padding (as in torch).
    static let sameLength: Result<URL, Error> = Result {
        let src = try corpus.get()
        let out = try TestResources.scratchDirectory("asr-dp-same").appendingPathComponent("data")
        let samples = 25_600
        try FileManager.default.createDirectory(at: out.appendingPathComponent("char"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: src.appendingPathComponent("char/train"), to: out.appendingPathComponent("char/train"))
        for set in ["train", "valid"] {
            let dir = out.appendingPathComponent("wav/\(set)/audio")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let text = src.appendingPathComponent("wav/\(set)/idx2no-punc_text")
            try FileManager.default.copyItem(at: text, to: out.appendingPathComponent("wav/\(set)/idx2no-punc_text"))
            var wav = "", len = ""
            for (idx, path) in try SpokenDigitsCorpusTests.lines(src.appendingPathComponent("wav/\(set)/idx2wav")) {
                let target = dir.appendingPathComponent("\(idx).wav").path
                try SpeechFixtures.run("sox", [path, target, "pad", "0", "2", "trim", "0s", "\(samples)s"])
                wav += "\(idx) \(target)\n"; len += "\(idx) \(samples)\n"
            }
            try wav.write(to: out.appendingPathComponent("wav/\(set)/idx2wav"), atomically: true, encoding: .utf8)
            try len.write(to: out.appendingPathComponent("wav/\(set)/idx2wav_len"), atomically: true, encoding: .utf8)
        }
        return out
    }

    /// A small ar_asr.ARASR experiment on `data`: log-mel 40, utterance normalisation, conv prenet [8, 8] → 32,
    /// 2 encoder and 1 decoder layers, CTC weight 0.3, label smoothing 0.1, no dropout and no SpecAugment (their
    /// masks are drawn per rank), Noam-scheduled `optimizer`, global batches of 12 utterances.
    static func config(_ data: URL, in dir: URL, batchNorm: String = "conv_batchnorm: false", epochs: Int = 2,
                       optimizer: String = sgd) throws -> URL {
        let d = data.path
        let yaml = """
            seed: 5
            num_epochs: \(epochs)
            best_model_selection: !tuple (valid, accuracy, max, 2)
            data_cfg:
              train:
                type: abs.Iterator
                conf:
                  dataset_type: speech_text.SpeechTextDataset
                  dataset_conf:
                    main_data:
                      feat: \(d)/wav/train/idx2wav
                      text: \(d)/wav/train/idx2no-punc_text
                  data_len: \(d)/wav/train/idx2wav_len
                  shuffle: True
                  batch_size: 12
              valid:
                type: abs.Iterator
                conf:
                  dataset_type: speech_text.SpeechTextDataset
                  dataset_conf:
                    main_data:
                      feat: \(d)/wav/valid/idx2wav
                      text: \(d)/wav/valid/idx2no-punc_text
                  data_len: \(d)/wav/valid/idx2wav_len
                  shuffle: False
                  batch_size: 6
            train_cfg:
              model:
                model_type: ar_asr.ARASR
                model_conf:
                  customize_conf:
                    ctc_weight: 0.3
                    token_type: char
                    token_path: \(d)/char/train/full_tokens/no-punc
                module_conf:
                  frontend:
                    type: frontend.speech2mel.Speech2MelSpec
                    conf: {sr: 16000, hop_length: 0.01, win_length: 0.025, n_mels: 40}
                  normalize: True
                  enc_prenet:
                    type: prenet.conv2d.Conv2dPrenet
                    conf: {conv_dims: [8, 8], lnr_dims: 32, \(batchNorm)}
                  encoder:
                    type: transformer.encoder.TransformerEncoder
                    conf: {num_heads: 2, num_layers: 2, fdfwd_dim: 64, posenc_dropout: 0, att_dropout: 0, fdfwd_dropout: 0, res_dropout: 0}
                  dec_emb:
                    type: prenet.embed.EmbedPrenet
                    conf: {embedding_dim: 32}
                  decoder:
                    type: transformer.decoder.TransformerDecoder
                    conf: {num_heads: 2, num_layers: 1, fdfwd_dim: 64, posenc_dropout: 0, att_dropout: 0, fdfwd_dropout: 0, res_dropout: 0}
                criterion_conf:
                  ce_loss: {label_smoothing: 0.1}
              optim_sches:
                type: noam.Noamlr
                conf:
                  \(optimizer)
                  warmup_steps: 4
            """
        let url = dir.appendingPathComponent("asr.yaml")
        try yaml.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Equality across world sizes is checked with SGD: Adam's first updates are close to lr·sign(g), so a
    /// gradient entry that is nearly zero (rounding noise around a cancelling sum) moves by ±lr either way and the
    /// runs part by 1e-4 in such entries, although every gradient agreed to rounding.
    static let sgd = "optim_type: SGD\n      optim_conf: {lr: 0.05, momentum: 0.9}"
    static let adam = "optim_type: Adam\n      optim_conf: {lr: 0.002, betas: [0.9, 0.98]}"

    /// The largest per-tensor max-norm relative difference, but for the attention's key biases: their true gradient
    /// is exactly zero (the softmax does not change when a constant is added to every score of a row), so they hold
    /// rounding noise only and are checked to stay that small instead.
    static func difference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Double {
        let keyBias = { (n: String) in n.hasSuffix("k_layer.bias") }
        for (n, v) in a where keyBias(n) { #expect(v.allSatisfy { abs($0) < 1e-6 }, "\(n) holds more than rounding noise") }
        return maxRelativeDifference(a.filter { !keyBias($0.key) }, b.filter { !keyBias($0.key) })
    }

    static func run(np: Int?, _ config: URL, _ extra: [String] = []) throws -> MPIRun.Outcome {
        let r = try MPIRun.run(np: np, ["--config", config.path] + extra)
        #expect(r.result.status == 0, "np \(np ?? 1): \(r.result.stderr.suffix(2000))")
        // results go to <train_result_path>/<config name>/, as SpeeChain's do
        return MPIRun.Outcome(result: r.result, directory: r.directory.appendingPathComponent("asr"), seconds: r.seconds)
    }

    static func split(_ w: [String: [Float]]) -> (parameters: [String: [Float]], buffers: [String: [Float]]) {
        let isBuffer = { (n: String) in n.contains("running_") || n.hasSuffix("num_batches_tracked") || n.hasPrefix("encoder.normalize.") }
        return (w.filter { !isBuffer($0.key) }, w.filter { isBuffer($0.key) })
    }

    @Test func twoRanksOfHalfBatchesEqualOneRankWithoutBatchNorm() throws {
        let dir = try TestResources.scratchDirectory("asr-np")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try Self.config(try Self.sameLength.get(), in: dir)
        let one = try Self.run(np: nil, cfg), two = try Self.run(np: 2, cfg)
        defer { for o in [one, two] { try? FileManager.default.removeItem(at: o.directory) } }
        #expect(try one.summary().steps == 10 && two.summary().steps == 10)
        let (p1, b1) = Self.split(try one.weights()), (p2, b2) = Self.split(try two.weights())
        #expect(p1.count == p2.count && p1.count > 20)
        let d = Self.difference(p2, p1)
        #expect(d <= 1e-5, "np 2 vs np 1: parameters differ by \(d)")
        // the normalisation's statistics are gathered over the ranks
        #expect(!b1.isEmpty && maxRelativeDifference(b2, b1) <= 1e-5)
        // and training did something (a run that changes nothing would agree as well)
        struct Summary: Decodable { let history: [EpochRecord] }
        let dec = JSONDecoder(); dec.keyDecodingStrategy = .convertFromSnakeCase
        let h = try dec.decode(Summary.self, from: Data(contentsOf: one.directory.appendingPathComponent("summary.json"))).history
        #expect(h.count == 2 && h[1].train["loss"]! < h[0].train["loss"]!, "\(h.map(\.train))")
    }

    @Test func syncBatchNormEqualsOneRankAndPlainBatchNormDoesNot() throws {
        let dir = try TestResources.scratchDirectory("asr-bn")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try Self.sameLength.get()
        let sync = try Self.config(data, in: dir, batchNorm: "conv_batchnorm: true, sync_batchnorm: true")
        let one = try Self.run(np: nil, sync), two = try Self.run(np: 2, sync)
        let (p1, b1) = Self.split(try one.weights()), (p2, b2) = Self.split(try two.weights())
        #expect(b1.keys.contains("encoder.prenet.conv.1.running_mean"), "\(b1.keys.sorted())")
        let dp = Self.difference(p2, p1), db = maxRelativeDifference(b2, b1)
        #expect(dp <= 1e-5, "SyncBatchNorm np 2 vs np 1: parameters differ by \(dp)")
        #expect(db <= 1e-5, "SyncBatchNorm np 2 vs np 1: running statistics differ by \(db)")

        let plainDir = try TestResources.scratchDirectory("asr-bn-plain")
        defer { try? FileManager.default.removeItem(at: plainDir) }
        let plain = try Self.run(np: 2, try Self.config(data, in: plainDir, batchNorm: "conv_batchnorm: true"))
        let (p3, b3) = Self.split(try plain.weights())
        let dPlain = Self.difference(p3, p1), dPlainBuffers = maxRelativeDifference(b3, b1)
        #expect(dPlain > 1e-4 && dPlainBuffers > 1e-4,
                "per-rank batch statistics should differ from the global batch's (\(dPlain), \(dPlainBuffers))")
        for o in [one, two, plain] { try? FileManager.default.removeItem(at: o.directory) }
    }

    /// BatchNorm's running statistics are the model's state at evaluation: a run killed in epoch 2 and resumed
    /// validates and ends exactly as the uninterrupted run, whose rank 1 never saw rank 0's statistics but for the
    /// copy before each validation.
    @Test func batchNormStatisticsSurviveAKillAndResume() throws {
        let dir = try TestResources.scratchDirectory("asr-resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try Self.config(try Self.corpus.get(), in: dir, batchNorm: "conv_batchnorm: true", epochs: 3, optimizer: Self.adam)
        let straight = try Self.run(np: 2, cfg)
        let brokenRoot = try TestResources.scratchDirectory("asr-broken"), brokenDir = brokenRoot.appendingPathComponent("asr")
        defer { try? FileManager.default.removeItem(at: brokenRoot); try? FileManager.default.removeItem(at: straight.directory) }
        func launch(_ extra: [String]) throws -> Executable.Result {
            try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path, "--config", cfg.path,
                                "--train_result_path", brokenRoot.path, "--report_per_steps", "1000"] + extra,
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                               executable: MPIRun.mpirun)
        }
        let killed = try launch(["--fail_rank", "1", "--fail_step", "8", "--fail_mode", "kill"])
        #expect(killed.status != 0)
        let resumed = try launch(["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(2000))")
        #expect(resumed.stdout.contains("resumed from checkpoint.safetensors: 1 epochs"), "\(resumed.stdout.suffix(1500))")
        // the pending gradients went back into the shared-memory window (the models below are byte-identical)
        #expect(resumed.stdout.contains("steps done; gradients summed in shared memory (2 ranks on one node)"), "\(resumed.stdout.prefix(1500))")
        for file in ["model.safetensors", "models/latest.safetensors", "models/2_valid_accuracy_average.safetensors"] {
            let a = try Data(contentsOf: straight.directory.appendingPathComponent(file))
            let b = try Data(contentsOf: brokenDir.appendingPathComponent(file))
            #expect(a == b, "\(file) differs after the resume")
        }
        let latest = try Safetensors.read(contentsOf: brokenDir.appendingPathComponent("models/latest.safetensors"))
        let tracked = try #require(latest.tensors.first { $0.name == "encoder.prenet.conv.1.num_batches_tracked" })
        #expect(tracked.values == [15], "rank 0 saw one batch per step for 3 epochs of 5 steps")
        struct Summary: Decodable { let history: [EpochRecord] }
        let dec = JSONDecoder(); dec.keyDecodingStrategy = .convertFromSnakeCase
        let a = try dec.decode(Summary.self, from: Data(contentsOf: straight.directory.appendingPathComponent("summary.json")))
        let b = try dec.decode(Summary.self, from: Data(contentsOf: brokenDir.appendingPathComponent("summary.json")))
        #expect(a.history.count == 3 && a.history.map(\.valid) == b.history.map(\.valid))
    }
}
