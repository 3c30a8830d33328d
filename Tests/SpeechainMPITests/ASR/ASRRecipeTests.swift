import Foundation
import Testing
@testable import SpeechainMPI

/// The spoken-digits recipe end to end, as a user runs it: `speechain-mpi --config tiny.yaml` under mpirun trains
/// ar_asr.ARASR on real synthesised speech (data_prep.sh --train 600 --valid 30 --test 24, test voices never heard
/// in training), averages the best epochs, decodes the test set with beam search and scores it. The tiny recipe is
/// the committed recipes/asr/spoken_digits/exp_cfg/tiny.yaml with only its data folder moved.
@Suite(.serialized) struct ASRRecipeTests {
    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    static let corpus: Result<URL, Error> = Result {
        let root = try TestResources.scratchDirectory("asr-recipe")
        let out = root.appendingPathComponent("spoken_digits/data")
        let r = try ClusterSupport.run("/bin/bash", [SpokenDigitsCorpusTests.script.path, "--train", "600", "--valid", "30", "--test", "24",
                                                      "--seed", "0", "--jobs", "2", "--out", out.path], timeout: 600)
        guard r.status == 0 else { throw Failure("data_prep.sh failed (\(r.status)): \(r.output)") }
        return root
    }

    /// tiny.yaml with `dataset_path` pointing at the scratch corpus, written as `<dir>/tiny.yaml`.
    static func recipe(in dir: URL, named name: String = "tiny", replacing: [(String, String)] = []) throws -> URL {
        let source = ClusterSupport.repository.appendingPathComponent("recipes/asr/spoken_digits/exp_cfg/tiny.yaml")
        var text = try String(contentsOf: source, encoding: .utf8)
        let line = "dataset_path: recipes/asr"
        guard text.contains(line) else { throw Failure("tiny.yaml has no '\(line)' line") }
        text = text.replacingOccurrences(of: line, with: "dataset_path: \(try corpus.get().path)")
        for (a, b) in replacing {
            guard text.contains(a) else { throw Failure("tiny.yaml has no '\(a)'") }
            text = text.replacingOccurrences(of: a, with: b)
        }
        let url = dir.appendingPathComponent("\(name).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Runs speechain-mpi (under mpirun with `np`, alone when nil) with results in `dir`/tiny.
    static func run(np: Int?, _ config: URL, in dir: URL, _ extra: [String] = []) throws -> Executable.Result {
        let args = ["--config", config.path, "--train_result_path", dir.path] + extra
        if let np {
            return try Executable.run(["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + args,
                                      environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                                                    "OMPI_MCA_odls_base_sigkill_timeout": "0"],
                                      executable: MPIRun.mpirun)
        }
        return try Executable.run(args)
    }

    struct Overall: Decodable { let wer: Double; let cer: Double; let utterances: Int; let words: Int }

    static func overall(_ folder: URL) throws -> Overall {
        try JSONDecoder().decode(Overall.self, from: Data(contentsOf: folder.appendingPathComponent("overall_results.json")))
    }

    /// The test results of the recipe's one decoding run on its one test set.
    static func results(_ dir: URL) throws -> URL {
        let base = dir.appendingPathComponent("tiny")
        let runs = try FileManager.default.contentsOfDirectory(atPath: base.path).filter { $0.contains("beam_size=") }.sorted()
        guard runs.count == 1 else { throw Failure("expected one decoding run folder in \(base.path), found \(runs)") }
        return base.appendingPathComponent(runs[0]).appendingPathComponent("3_valid_accuracy_average/test")
    }

    /// The test stage's keys (the rest are in ExperimentKeyTests), each from the config file and from the command
    /// line, shown on what a test-only run leaves against the same run without the key. One short training (3 epochs,
    /// models latest and 3_valid_accuracy_average), then test-only runs of 24 utterances.
    @Test func everyTestStageKeyChangesTheTestRun() throws {
        let dir = try TestResources.scratchDirectory("asr-test-keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        let train = try Self.run(np: nil, try Self.recipe(in: dir, replacing: [("num_epochs: 20", "num_epochs: 3")]), in: dir, ["--train", "true", "--test", "false"])
        try #require(train.status == 0, "\(train.stderr.suffix(2000))")
        let inferBlock = "infer_cfg:\n  shared_args:\n    beam_size: 4\n    min_f2t_ratio: 1.0\n  exclu_args:\n    - ctc_weight: 0.3"
        struct Case { let key: String, yaml: String, option: [String], effect: (_ out: URL, _ stdout: String) -> Bool }
        let elsewhere = dir.appendingPathComponent("elsewhere")
        func exists(_ url: URL) -> Bool { FileManager.default.fileExists(atPath: url.path) }
        let run = "beam_size=4_ctc_weight=0.3_min_f2t_ratio=1.0"   // the recipe's run name (SpeeChain's naming)
        let cases = [
            Case(key: "test_model", yaml: "latest", option: ["--test_model", "latest"]) { out, _ in
                exists(out.appendingPathComponent("tiny/\(run)/latest/test/overall_results.json"))
            },
            Case(key: "test_result_path", yaml: elsewhere.path, option: ["--test_result_path", elsewhere.path]) { _, _ in
                exists(elsewhere.appendingPathComponent("\(run)/3_valid_accuracy_average/test/overall_results.json"))
            },
            Case(key: "infer_cfg", yaml: "{beam_size: 1}", option: ["--set", "infer_cfg={beam_size: 1}"]) { out, _ in
                exists(out.appendingPathComponent("tiny/beam_size=1/3_valid_accuracy_average/test/overall_results.json"))
            },
            Case(key: "attach_model_folder_when_test", yaml: "false", option: ["--set", "attach_model_folder_when_test=false"]) { out, _ in
                exists(out.appendingPathComponent("tiny/\(run)/test/overall_results.json"))
            },
            Case(key: "bad_cases_selection", yaml: "[[wer, max, 2]]", option: ["--set", "bad_cases_selection=[[wer, max, 2]]"]) { out, _ in
                let folder = out.appendingPathComponent("tiny/\(run)/3_valid_accuracy_average/test")
                return exists(folder.appendingPathComponent("top2_max_wer.md")) && !exists(folder.appendingPathComponent("top30_max_wer.md"))
            },
        ]
        // the run without any of them: none of the effects shows
        let plain = try Self.run(np: nil, try Self.recipe(in: dir), in: dir, ["--train", "false", "--test", "true"])
        try #require(plain.status == 0, "\(plain.stderr.suffix(2000))")
        for c in cases {
            #expect(!c.effect(dir, plain.stdout), "\(c.key): the effect shows without the key")
        }
        for c in cases {
            for fromConfig in [true, false] {
                try? FileManager.default.removeItem(at: elsewhere)
                let replacing: [(String, String)]
                switch c.key {
                case "test_model": replacing = [("test_model: 3_valid_accuracy_average", "test_model: \(fromConfig ? c.yaml : "3_valid_accuracy_average")")]
                case "infer_cfg": replacing = fromConfig ? [(inferBlock, "infer_cfg: \(c.yaml)")] : []
                default: replacing = fromConfig ? [("num_epochs: 20", "num_epochs: 20\n\(c.key): \(c.yaml)")] : []
                }
                // results of earlier cases out of the way (the test folder is the training folder)
                for entry in try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("tiny").path) where entry.contains("beam_size=") {
                    try FileManager.default.removeItem(at: dir.appendingPathComponent("tiny/\(entry)"))
                }
                let config = try Self.recipe(in: dir, named: "tiny", replacing: replacing)
                let r = try Self.run(np: nil, config, in: dir, ["--train", "false", "--test", "true"] + (fromConfig ? [] : c.option))
                #expect(r.status == 0, "\(c.key) (\(fromConfig ? "config" : "command line")): \(r.stderr.suffix(1500))")
                #expect(c.effect(dir, r.stdout), "\(c.key) (\(fromConfig ? "config" : "command line")): no effect")
            }
        }
    }

    @Test(arguments: [1, 2])
    func theTinyRecipeTrainsAndRecognisesUnheardVoices(_ np: Int) throws {
        let dir = try TestResources.scratchDirectory("asr-recipe-np\(np)")
        let r = try Self.run(np: np, try Self.recipe(in: dir), in: dir)
        try #require(r.status == 0, "np \(np): \(r.stderr.suffix(3000))")
        let folder = try Self.results(dir)
        let o = try Self.overall(folder)
        #expect(o.utterances == 24)
        #expect(o.wer <= 0.2, "np \(np): WER \(o.wer)")
        #expect(r.stdout.contains("WER"), "the result line")
        // the files SpeeChain's test stage leaves, one line per utterance where it is a table
        for name in ["idx2text", "idx2wer", "idx2cer", "overall_results.md", "instance_reports.md", "top30_max_wer.md"] {
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path), "\(name)")
        }
        let hyps = try String(contentsOf: folder.appendingPathComponent("idx2text"), encoding: .utf8).split(separator: "\n")
        #expect(hyps.count == 24)
        let md = try String(contentsOf: folder.appendingPathComponent("overall_results.md"), encoding: .utf8)
        #expect(md.contains("# Overall Evaluation (mean ± std):") && md.contains("# gender-wise Evaluation:"))
        // the corpus WER recomputed from the files: errors of idx2text against the reference transcripts
        let refs = try SpokenDigitsCorpusTests.lines(try Self.corpus.get().appendingPathComponent("spoken_digits/data/wav/test/idx2no-punc_text"))
        var errors = 0, words = 0
        let hypothesis = Dictionary(uniqueKeysWithValues: hyps.map { line -> (String, String) in
            let parts = line.split(separator: " ", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        })
        for (idx, ref) in refs {
            let h = (hypothesis[idx] ?? "").split(separator: " ").map(String.init), w = ref.split(separator: " ").map(String.init)
            errors += ErrorRate.editDistance(h, w); words += w.count
        }
        #expect(abs(Double(errors) / Double(words) - o.wer) < 1e-12)
    }

    /// Killed (SIGKILL, rank 1) during training, resumed and killed again during the test stage, resumed again: the
    /// trained model is bit-identical to an uninterrupted run's and the test results are complete and equal.
    @Test func killedInTrainingAndInTestingThenResumedEqualsAnUninterruptedRun() throws {
        let whole = try TestResources.scratchDirectory("asr-recipe-whole")
        let config = try Self.recipe(in: whole)
        try #require(try Self.run(np: 2, config, in: whole).status == 0)

        let cut = try TestResources.scratchDirectory("asr-recipe-cut")
        let config2 = try Self.recipe(in: cut)
        let first = try Self.run(np: 2, config2, in: cut, ["--fail_rank", "1", "--fail_step", "120", "--fail_mode", "kill"])   // epoch 3 of 52 steps
        #expect(first.status != 0)
        let second = try Self.run(np: 2, config2, in: cut, ["--resume", "--fail_rank", "1", "--kill_after_test_round", "1"])
        #expect(second.status != 0)
        let checkpoint = try Self.results(cut).appendingPathComponent("checkpoint.json")
        #expect(FileManager.default.fileExists(atPath: checkpoint.path), "the test stage's checkpoint after round 1")
        #expect(!FileManager.default.fileExists(atPath: try Self.results(cut).appendingPathComponent("overall_results.json").path))
        let third = try Self.run(np: 2, config2, in: cut, ["--resume"])
        try #require(third.status == 0, "\(third.stderr.suffix(2000))")
        #expect(third.stdout.contains("done before (resumed)"), "\(third.stdout.suffix(1500))")

        for file in ["model.safetensors", "models/3_valid_accuracy_average.safetensors", "models/latest.safetensors"] {
            let a = try Data(contentsOf: whole.appendingPathComponent("tiny/\(file)"))
            let b = try Data(contentsOf: cut.appendingPathComponent("tiny/\(file)"))
            #expect(a == b, "\(file) differs after the kills and resumes")
        }
        for file in ["idx2text", "idx2wer", "idx2text_confid", "overall_results.json"] {
            let a = try String(contentsOf: try Self.results(whole).appendingPathComponent(file), encoding: .utf8)
            let b = try String(contentsOf: try Self.results(cut).appendingPathComponent(file), encoding: .utf8)
            #expect(a == b, "\(file)")
        }
        // the same model tested again by one rank alone (--test true): the batches are planned as for one rank, so
        // the hypotheses and their scores do not depend on how many ranks decode them
        let alone = whole.appendingPathComponent("np1-test")
        let r = try Self.run(np: nil, config, in: whole, ["--test", "true", "--test_result_path", alone.path])
        try #require(r.status == 0, "\(r.stderr.suffix(2000))")
        let run = try Self.results(whole).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent
        for file in ["idx2text", "idx2text_confid"] {
            let a = try String(contentsOf: try Self.results(whole).appendingPathComponent(file), encoding: .utf8)
            let b = try String(contentsOf: alone.appendingPathComponent("\(run)/3_valid_accuracy_average/test/\(file)"), encoding: .utf8)
            #expect(a == b, "np 1 decoding of the np 2 model: \(file)")
        }
    }

    /// Bad input of the test stage: one line naming it, a non-zero exit, on every rank.
    @Test func badTestStageInputIsOneLineOnEveryRank() throws {
        let dir = try TestResources.scratchDirectory("asr-recipe-bad")
        let config = try Self.recipe(in: dir)
        // an infer_cfg key that does not exist; a test set whose files do not exist (set-up, before any training)
        let badKey = try Self.recipe(in: dir, named: "badkey", replacing: [("beam_size: 4", "beam_size: 4\n    beam_width: 4")])
        let r1 = try Self.run(np: 2, badKey, in: dir)
        #expect(r1.status != 0)
        let lines1 = r1.stderr.split(separator: "\n").filter { $0.contains("speechain-mpi: error:") }
        #expect(lines1.count == 2 && lines1.allSatisfy { $0.contains("beam_width") }, "\(r1.stderr.suffix(1500))")
        let missing = try Self.recipe(in: dir, named: "missing", replacing: [("test_set: test\n", "test_set: tset\n")])
        let r2 = try Self.run(np: 2, missing, in: dir)
        #expect(r2.status != 0)
        let lines2 = r2.stderr.split(separator: "\n").filter { $0.contains("speechain-mpi: error:") }
        #expect(lines2.count == 2 && lines2.allSatisfy { $0.contains("tset") }, "\(r2.stderr.suffix(1500))")
        // an unknown test_model (test only: there are no models at all)
        let r3 = try Self.run(np: 2, config, in: dir, ["--test", "true", "--test_model", "9_valid_accuracy_average"])
        #expect(r3.status != 0)
        let lines3 = r3.stderr.split(separator: "\n").filter { $0.contains("speechain-mpi: error:") }
        #expect(lines3.count == 2 && lines3.allSatisfy { $0.contains("9_valid_accuracy_average") }, "\(r3.stderr.suffix(1500))")
        #expect(!r3.stderr.contains("crashed") && !r3.stderr.contains("Fatal error"), "no trace: \(r3.stderr)")
    }
}
