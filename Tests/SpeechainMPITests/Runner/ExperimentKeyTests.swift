import Foundation
import Testing
@testable import SpeechainMPI

/// Every experiment key, set once in a config file and once on the command line, changes the run it is set in
/// — shown on the run's own records against the same run without the key (not on the parsed value alone: a key
/// read and then ignored must fail here). The table must name every key of `Experiment.experimentKeys`; the test
/// stage's keys, which need a speech model's test stage, are listed with the tests that show them.
@Suite(.serialized) struct ExperimentKeyTests {
    /// One finished (or refused) run and what it left.
    struct Run {
        let status: Int32, stdout: String, stderr: String
        /// The scratch folder of the run (removed by the test).
        var root: URL? = nil
        /// The folder that holds summary.json (train_result_path, or its config-named subfolder).
        let folder: URL?
        var summary: [String: Any] {
            guard let folder, let data = try? Data(contentsOf: folder.appendingPathComponent("summary.json")),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
            return object
        }
        var steps: [StepRecord] {
            guard let folder else { return [] }
            return (try? StepRecords.read(in: folder)) ?? []   // a refused run has none: its effects check that
        }
        var weights: Data? { folder.flatMap { try? Data(contentsOf: $0.appendingPathComponent("model.safetensors")) } }
        var modelFiles: [String] {
            guard let folder else { return [] }
            return ((try? FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("models").path)) ?? []).sorted()
        }
        var history: [[String: Any]] { summary["history"] as? [[String: Any]] ?? [] }
        var firstLoss: Double? { steps.first?.values["loss"] }
    }

    struct KeyCase: CustomTestStringConvertible, Sendable {
        let key: String
        /// The value as YAML text (one line) and, when the key has an option of its own, the command-line form.
        let value: String
        let option: [String]?
        /// Arguments given to both runs (with and without the key).
        var extra: [String] = []
        var np: Int? = nil
        /// Run before each of the two runs into the same folder (a checkpoint to resume, …).
        var prepare: (@Sendable (URL) throws -> Void)? = nil
        /// What the key must change: true when `with` shows the key's effect against `without`.
        let effect: @Sendable (_ with: Run, _ without: Run) -> Bool
        let what: String
        var testDescription: String { "\(key): \(value)" }
    }

    static let base = ["--num_epochs", "2", "--report_per_steps", "4", "--set", "data_cfg.train.conf.count=256"]

    static func weightsFile(_ dir: URL) -> URL { dir.appendingPathComponent("init.safetensors") }

    static let cases: [KeyCase] = [
        KeyCase(key: "seed", value: "5", option: ["--seed", "5"], effect: { $0.firstLoss != nil && $0.firstLoss != $1.firstLoss },
                what: "another initialisation: the first loss differs"),
        KeyCase(key: "num_epochs", value: "1", option: ["--num_epochs", "1"], effect: { $0.summary["epochs"] as? Int == 1 && $1.summary["epochs"] as? Int == 3 },
                what: "one epoch instead of the default three"),
        KeyCase(key: "accum_grad", value: "2", option: ["--accum_grad", "2"], effect: { w, _ in
            let s = w.summary, updates = ((s["schedulers"] as? [String: Any])?["main"] as? [String: Any])?["updates"] as? Int
            return updates != nil && updates == (s["steps"] as? Int ?? 0) / 2
        }, what: "an update every second step"),
        KeyCase(key: "ft_factor", value: "0.5", option: ["--ft_factor", "0.5"], effect: { w, wo in
            guard let a = w.steps.first?.lr["main"], let b = wo.steps.first?.lr["main"] else { return false }
            return abs(a - 0.5 * b) <= 1e-12 * b
        }, what: "every lr halved"),
        KeyCase(key: "grad_clip", value: "0.001", option: ["--grad_clip", "0.001"], effect: { $0.weights != nil && $0.weights != $1.weights && $0.steps.first?.gradNorm == $1.steps.first?.gradNorm },
                what: "the same first gradient norm, clipped: other weights"),
        KeyCase(key: "grad_norm_type", value: "1", option: ["--grad_norm_type", "1"], effect: { w, wo in
            guard let a = w.steps.first?.gradNorm["main"], let b = wo.steps.first?.gradNorm["main"] else { return false }
            return a > 2 * b   // an L1 norm over thousands of entries is far above the L2 norm
        }, what: "the first gradient norm is an L1 norm"),
        KeyCase(key: "use_amp", value: "true", option: ["--use_amp", "true"], effect: { !($0.steps.first?.lossScale.isEmpty ?? true) && ($1.steps.first?.lossScale.isEmpty ?? false) },
                what: "a GradScaler: loss scales recorded"),
        KeyCase(key: "amp_dtype", value: "bfloat16", option: ["--amp_dtype", "bfloat16"], extra: ["--use_amp", "true"],
                effect: { $0.firstLoss != nil && $0.firstLoss != $1.firstLoss }, what: "bfloat16 rounding: another first loss"),
        KeyCase(key: "grad_scaler", value: "{init_scale: 1024}", option: nil, extra: ["--use_amp", "true"],
                effect: { $0.steps.first?.lossScale["main"] == 1024 && $1.steps.first?.lossScale["main"] == 65536 }, what: "the first loss scale is 1024"),
        KeyCase(key: "valid_per_epochs", value: "2", option: ["--valid_per_epochs", "2"], effect: { w, wo in
            w.history.count == 2 && (w.history[1]["valid"] as? [String: Any]) == nil && wo.history.count == 2 && (wo.history[1]["valid"] as? [String: Any]) != nil
        }, what: "epoch 2 not validated"),
        KeyCase(key: "report_per_steps", value: "2", option: ["--report_per_steps", "2"], effect: { w, wo in
            func lines(_ r: Run) -> Int { r.stdout.split(separator: "\n").filter { $0.hasPrefix("step ") }.count }
            return lines(w) == 8 && lines(wo) != 8   // 2 epochs of 256 / 32 = 8 steps, a line every 2
        }, what: "a report line every 2 steps"),
        KeyCase(key: "best_model_selection", value: "!tuple (valid, loss, min, 1)", option: ["--best_model_selection", "valid loss min 1"],
                effect: { $0.modelFiles.contains("valid_loss_best.safetensors") && !$1.modelFiles.contains("valid_loss_best.safetensors") },
                what: "models/valid_loss_best"),
        KeyCase(key: "early_stopping_patience", value: "1", option: ["--early_stopping_patience", "1"], extra: ["--num_epochs", "4", "--lr", "0"],
                effect: { $0.summary["early_stopped"] as? Bool == true && $0.summary["epochs"] as? Int == 3 && $1.summary["epochs"] as? Int == 4 },
                what: "a flat metric stops the run after epoch 3"),
        KeyCase(key: "early_stopping_threshold", value: "0.9", option: nil,
                extra: ["--num_epochs", "4", "--early_stopping_patience", "1", "--best_model_selection", "valid loss min 1"],
                effect: { $0.summary["early_stopped"] as? Bool == true && $1.summary["early_stopped"] as? Bool == false },
                what: "no improvement is large enough: stopped early"),
        KeyCase(key: "last_model_number", value: "4", option: ["--last_model_number", "4"], extra: ["--num_epochs", "4"], effect: { w, wo in
            w.modelFiles.filter { $0.hasPrefix("epoch_") }.count == 4 && wo.modelFiles.filter { $0.hasPrefix("epoch_") }.count < 4
        }, what: "the four latest epochs kept"),
        KeyCase(key: "train_result_path", value: "", option: nil, effect: { w, wo in
            w.weights != nil && w.folder?.path.contains("/elsewhere") == true && wo.folder?.path.contains("/elsewhere") != true
        }, what: "the results are where it says (the folder 'elsewhere', filled in by the test)"),
        KeyCase(key: "resume", value: "true", option: ["--resume"], prepare: { dir in
            let r = try Executable.run(base + ["--num_epochs", "1", "--train_result_path", dir.path])
            guard r.status == 0 else { throw CocoaError(.fileWriteUnknown) }
        }, effect: { w, wo in
            w.status == 0 && w.stdout.contains("resumed from checkpoint.safetensors: 1 epochs") && wo.status != 0 && wo.stderr.contains("already holds a checkpoint")
        }, what: "continues the checkpoint (without it the folder is refused)"),
        KeyCase(key: "init_weights", value: "", option: nil, prepare: { dir in
            let from = dir.appendingPathComponent("donor")
            let r = try Executable.run(base + ["--seed", "9", "--num_epochs", "1", "--train_result_path", from.path])
            guard r.status == 0 else { throw CocoaError(.fileWriteUnknown) }
            try? FileManager.default.removeItem(at: weightsFile(dir))
            try FileManager.default.copyItem(at: from.appendingPathComponent("model.safetensors"), to: weightsFile(dir))
            try FileManager.default.removeItem(at: from)
        }, effect: { $0.firstLoss != nil && $0.firstLoss != $1.firstLoss }, what: "trained weights to start from: another first loss"),
        KeyCase(key: "check_consistency_every", value: "4", option: ["--check_consistency_every", "4"],
                extra: ["--batch_size", "8", "--fail_rank", "1", "--fail_step", "10", "--fail_mode", "perturb"], np: 2,
                effect: { $0.stderr.contains("after update 12 ") && $1.stderr.contains("after update 32 ") },
                what: "a nudged rank caught at update 12, not only at the end (32)"),
        KeyCase(key: "train", value: "false", option: ["--train", "false"],
                effect: { $0.status != 0 && $0.stderr.contains("train and test are both false") && $1.status == 0 }, what: "nothing left to run: refused"),
        KeyCase(key: "test", value: "true", option: ["--test", "true"],
                effect: { $0.status != 0 && $0.stderr.contains("(test: true)") && $1.status == 0 }, what: "a test stage without a test set: refused"),
        KeyCase(key: "dry_run", value: "true", option: nil,
                effect: { $0.status != 0 && $0.stderr.contains("not built yet: dry_run: true") && $1.status == 0 }, what: "refused by name"),
        KeyCase(key: "no_optim", value: "true", option: nil,
                effect: { $0.status != 0 && $0.stderr.contains("not built yet: no_optim: true") && $1.status == 0 }, what: "refused by name"),
        KeyCase(key: "attach_config_folder_to_path", value: "false", option: nil,
                effect: { w, wo in w.folder?.lastPathComponent == "results" && wo.folder?.lastPathComponent == "experiment" },
                what: "results in train_result_path itself, not in <train_result_path>/<config name>"),
        KeyCase(key: "shared_memory_allreduce", value: "false", option: nil, extra: ["--batch_size", "8"], np: 2,
                effect: { $0.stdout.contains("gradients summed by MPI_Allreduce (shared_memory_allreduce: false)")
                          && $1.stdout.contains("gradients summed in shared memory (2 ranks on one node)") },
                what: "2 ranks on one node sum gradients by MPI_Allreduce instead of in a shared-memory window"),
        KeyCase(key: "flush_denormal", value: "false", option: ["--flush_denormal", "false"],
                effect: { $0.summary["flush_denormal"] as? Bool == false && $1.summary["flush_denormal"] as? Bool == true }, what: "denormals kept"),
    ]

    /// The test stage's keys need a speech model's test stage (the MLP has none): ASRRecipeTests shows each from a
    /// config file and from the command line (everyTestStageKeyChangesTheTestRun).
    static let shownElsewhere: [String: String] = [
        "test_model": "ASRRecipeTests.everyTestStageKeyChangesTheTestRun",
        "test_result_path": "ASRRecipeTests.everyTestStageKeyChangesTheTestRun",
        "infer_cfg": "ASRRecipeTests.everyTestStageKeyChangesTheTestRun",
        "attach_model_folder_when_test": "ASRRecipeTests.everyTestStageKeyChangesTheTestRun",
        "bad_cases_selection": "ASRRecipeTests.everyTestStageKeyChangesTheTestRun",
        // a stalled rank would hold the run without the key for its default 600 s
        "collective_timeout": "WatchdogTests (command line)",
    ]

    @Test func everyExperimentKeyIsInTheTable() {
        let covered = Set(Self.cases.map(\.key)).union(Self.shownElsewhere.keys)
        #expect(Set(Experiment.experimentKeys).subtracting(covered).sorted() == [])
        #expect(covered.subtracting(Experiment.experimentKeys).sorted() == [])
    }

    /// The default experiment's YAML without the key's line, with `key: value` appended.
    static func config(with key: String?, value: String, in dir: URL) throws -> URL {
        var lines = Experiment.defaultYAML.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let key {
            lines.removeAll { $0.hasPrefix("\(key):") }
            lines.append("\(key): \(value)")
        }
        // in exp_cfg/, as SpeeChain's recipes: without train_result_path the results go to ../exp/experiment
        let folder = dir.appendingPathComponent("exp_cfg")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let url = folder.appendingPathComponent("experiment.yaml")
        try lines.joined(separator: "\n").appending("\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func launch(_ c: KeyCase, _ args: [String]) throws -> Executable.Result {
        guard let np = c.np else { return try Executable.run(args) }
        return try Executable.run(["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + args,
                                  environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                  executable: MPIRun.mpirun)
    }

    static func summaryFolder(under dir: URL) -> URL? {
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)
        while let url = e?.nextObject() as? URL {
            if url.lastPathComponent == "summary.json" { return url.deletingLastPathComponent() }
        }
        return nil
    }

    /// Runs the case with and without its key; `fromConfig` puts the key in a config file, else on the command line.
    static func runBoth(_ c: KeyCase, fromConfig: Bool) throws -> (with: Run, without: Run) {
        func one(keyed: Bool) throws -> Run {
            let dir = try TestResources.scratchDirectory("key-\(c.key)")
            let results = dir.appendingPathComponent("results")
            // a config file's results go to <train_result_path>/<config name> (attach_config_folder_to_path)
            try c.prepare?(fromConfig ? results.appendingPathComponent("experiment") : results)
            var value = c.value
            if c.key == "train_result_path" { value = dir.appendingPathComponent("elsewhere").path }
            if c.key == "init_weights" { value = weightsFile(fromConfig ? results.appendingPathComponent("experiment") : results).path }
            // the case's key is never also among the shared arguments (the command line would win over the file)
            var args = base + c.extra
            if let i = args.firstIndex(of: "--\(c.key)") { args.removeSubrange(i...(i + 1)) }
            if c.key != "train_result_path" { args += ["--train_result_path", results.path] }
            if fromConfig || c.key == "attach_config_folder_to_path" {
                args += ["--config", try config(with: keyed && fromConfig ? c.key : nil, value: value, in: dir).path]
            }
            if keyed && !fromConfig {
                args += c.option ?? ["--set", "\(c.key)=\(value)"]
            }
            let r = try launch(c, args)
            return Run(status: r.status, stdout: r.stdout, stderr: r.stderr, root: dir, folder: summaryFolder(under: dir))
        }
        return (try one(keyed: true), try one(keyed: false))
    }

    @Test(arguments: cases)
    func aKeyInAConfigFileChangesTheRun(_ c: KeyCase) throws {
        let (with, without) = try Self.runBoth(c, fromConfig: true)
        defer { for r in [with, without] { if let d = r.root { try? FileManager.default.removeItem(at: d) } } }
        #expect(c.effect(with, without), "\(c.key) from a config file: \(c.what) — not shown\nwith: \(with.status) \(with.stderr)\nwithout: \(without.status) \(without.stderr)")
    }

    @Test(arguments: cases)
    func aKeyOnTheCommandLineChangesTheRun(_ c: KeyCase) throws {
        let (with, without) = try Self.runBoth(c, fromConfig: false)
        defer { for r in [with, without] { if let d = r.root { try? FileManager.default.removeItem(at: d) } } }
        #expect(c.effect(with, without), "\(c.key) on the command line: \(c.what) — not shown\nwith: \(with.status) \(with.stderr)\nwithout: \(without.status) \(without.stderr)")
    }

    /// model_conf.criterion_conf.label_smoothing (SpeeChain's place for a loss argument) reaches the model: the first step's loss with ε = 0.3 is the smoothed loss of the
    /// same logits, which differs from the plain one (same seed, same first batch).
    @Test(arguments: [false, true])
    func labelSmoothingReachesTheModel(fromConfig: Bool) throws {
        let dir = try TestResources.scratchDirectory("smoothing")
        defer { try? FileManager.default.removeItem(at: dir) }
        func run(_ smoothing: Bool) throws -> Run {
            let results = dir.appendingPathComponent(smoothing ? "smooth" : "plain")
            var args = Self.base + ["--num_epochs", "1", "--train_result_path", results.path]
            if smoothing {
                if fromConfig {
                    let yaml = Experiment.defaultYAML.replacingOccurrences(of: "decoder: {dims: [64, 4]}", with: "decoder: {dims: [64, 4]}\n      criterion_conf: {label_smoothing: 0.3}")
                    #expect(yaml != Experiment.defaultYAML)
                    let url = dir.appendingPathComponent("smooth.yaml")
                    try yaml.write(to: url, atomically: true, encoding: .utf8)
                    args += ["--config", url.path, "--set", "attach_config_folder_to_path=false"]
                } else {
                    args += ["--set", "train_cfg.model.model_conf.criterion_conf.label_smoothing=0.3"]
                }
            }
            let r = try Executable.run(args)
            #expect(r.status == 0, "\(r.stderr)")
            return Run(status: r.status, stdout: r.stdout, stderr: r.stderr, folder: Self.summaryFolder(under: results))
        }
        let smooth = try run(true), plain = try run(false)
        let a = try #require(smooth.firstLoss), b = try #require(plain.firstLoss)
        // ε = 0.3 over 4 classes at a near-uniform start: the smoothed loss stays near ln 4 as the plain one, but
        // the two differ, and the accuracy (argmax) does not depend on ε
        #expect(abs(a - b) > 1e-4, "label_smoothing 0.3: first loss \(a), without \(b)")
        #expect(smooth.steps.first?.values["accuracy"] == plain.steps.first?.values["accuracy"])
    }
}
