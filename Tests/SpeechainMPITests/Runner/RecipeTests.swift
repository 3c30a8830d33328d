import Foundation
import Testing
@testable import SpeechainMPI

/// SpeeChain recipes move over whole: their optim_sches blocks, their headers (everything above data_cfg), their
/// model config shape, their result folder.
@Suite struct RecipeTests {
    /// The distinct optim_sches blocks of SpeeChain's 25 recipes (heli-qi/SpeeChain, recipes/*/exp_cfg/*.yaml):
    /// 17 recipes share the first, 5 the third; they differ in lr only (absent, a number, or a !ref).
    static let optimSchesBlocks = [
        ("no lr (torch's default)", """
            warmup_steps: 25
            train_cfg:
              optim_sches:
                type: noam.Noamlr
                conf:
                  optim_type: Adam
                  optim_conf:
                    betas:
                      - 0.9
                      - 0.98
                    eps: 1.0e-9
                  warmup_steps: !ref <warmup_steps>
            """),
        ("lr 0.001", """
            warmup_steps: 25
            train_cfg:
              optim_sches:
                type: noam.Noamlr
                conf:
                  optim_type: Adam
                  optim_conf:
                    lr: 0.001
                    betas:
                      - 0.9
                      - 0.98
                    eps: 1.0e-9
                  warmup_steps: !ref <warmup_steps>
            """),
        ("lr 0.002", """
            warmup_steps: 25
            train_cfg:
              optim_sches:
                type: noam.Noamlr
                conf:
                  optim_type: Adam
                  optim_conf:
                    lr: 0.002
                    betas:
                      - 0.9
                      - 0.98
                    eps: 1.0e-9
                  warmup_steps: !ref <warmup_steps>
            """),
        ("lr !ref <peak_lr>", """
            warmup_steps: 25
            peak_lr: 0.0015
            train_cfg:
              optim_sches:
                type: noam.Noamlr
                conf:
                  optim_type: Adam
                  optim_conf:
                    lr: !ref <peak_lr>
                    betas:
                      - 0.9
                      - 0.98
                    eps: 1.0e-9
                  warmup_steps: !ref <warmup_steps>
            """),
        ("commented-out d_model", """
            warmup_steps: 25
            d_model: 64
            train_cfg:
              optim_sches:
                type: noam.Noamlr
                conf:
                  optim_type: Adam
                  optim_conf:
                    betas:
                      - 0.9
                      - 0.98
                    eps: 1.0e-9
            #      d_model: !ref <d_model>
                  warmup_steps: !ref <warmup_steps>
            """),
    ]

    /// The project's data and model under a recipe's `train_cfg` (its `optim_sches` block is added per test).
    static let projectData = """
        data_cfg:
          batch_size: 32
          train: {type: synthetic, conf: {count: 256, width: 16, classes: 4, seed: 1}}
          valid: {type: synthetic, conf: {count: 64, width: 16, classes: 4, seed: 2}}
        """
    static let projectModel = """
          model:
            model_type: mlp.MLPClassifier
            model_conf:
              customize_conf: {}
              module_conf:
                encoder: {dims: [16, 32], activation: ReLU}
                decoder: {dims: [32, 4]}
              criterion_conf:
                label_smoothing: 0.1
        """

    @Test(arguments: optimSchesBlocks.indices)
    func everyRecipeOptimSchesBlockTrains(_ index: Int) throws {
        let (what, block) = Self.optimSchesBlocks[index]
        let yaml = "num_epochs: 2\n" + Self.projectData + "\n" + block + "\n" + Self.projectModel
        let exp = try Experiment(config: ConfigFile.parse(yaml, source: what), source: what)
        var lines: [String] = []
        let summary = try Trainer(experiment: exp, output: { lines.append($0) }).run()
        #expect(summary.epochs == 2, "\(what)")
        #expect(lines.contains { $0.hasPrefix("main: NoamLr(optimizer=Adam") }, "\(what)")
        #expect(summary.history.last?.train["loss"].map { $0.isFinite } == true, "\(what)")
    }

    /// The header of SpeeChain's recipes/asr/librispeech/train-960/exp_cfg/960-bpe5k_conformer-large.yaml
    /// (everything above data_cfg, its values as they are), with the project's data and model.
    static let header = """
        dataset_path: datasets/
        dataset: librispeech
        train_set: train-960
        valid_set: dev
        wav_format: wav
        sample_rate: 16000
        txt_format: no-punc
        vocab_subset: train-960
        token_type: sentencepiece
        token_num: bpe5k
        batch_len: 1.8e7
        ctc_weight: 0.3
        label_smoothing: 0.2
        d_model: 512
        num_heads: 8
        fdfwd_dim: 2048
        dropout: 0.1
        warmup_steps: 24000
        seed: 0
        num_workers: 1
        pin_memory: False
        non_blocking: False
        accum_grad: 2
        ft_factor: 1.0
        grad_clip: 5.0
        ngpu: 2 # please change ngpu based on the situation of your machine
        gpus: null # null means the GPUs with the largest free memory will be used
        train: True
        best_model_selection: !tuple (valid, accuracy, max, 10)
        early_stopping_patience: 15
        num_epochs: 200
        visual_snapshot_number: 3
        visual_snapshot_interval: 5
        test: False
        test_model: 10_valid_accuracy_average
        data_root: !ref <dataset_path>/<dataset>/data
        infer_cfg:
          shared_args:
            beam_size: 16
          exclu_args:
            - ctc_weight: 0.2
            - ctc_weight: 0.3
              lm_weight: 0.6
        """

    /// A block without its `warmup_steps` variable, for use under the header (which declares its own).
    static func withoutOwnWarmup(_ block: String) -> String {
        block.split(separator: "\n").filter { !$0.hasPrefix("warmup_steps:") }.joined(separator: "\n")
    }

    @Test func aWholeRecipeHeaderTrainsWithNotesNotErrors() throws {
        let yaml = Self.header + "\n" + Self.projectData + "\n" + Self.withoutOwnWarmup(Self.optimSchesBlocks[0].1)
            + "\n" + Self.projectModel
        var tree = try ConfigFile.parse(yaml, source: "header.yaml")
        tree["num_epochs"] = .int(2)
        let exp = try Experiment(config: tree, source: "header.yaml")
        #expect(exp.training.accumGrad == 2 && exp.training.gradClip == 5 && exp.earlyStoppingPatience == 15)
        #expect(exp.bestModelSelection == [ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 10)])
        var lines: [String] = []
        let summary = try Trainer(experiment: exp, output: { lines.append($0) }).run()
        #expect(summary.epochs == 2)
        let notes = lines.filter { $0.hasPrefix("note: ") }
        #expect(notes.count == 3, "\(notes)")
        #expect(notes.contains { $0.contains("ngpu") && $0.contains("gpus") && $0.contains("num_workers") && $0.contains("pin_memory") && $0.contains("non_blocking") })
        // test_model and infer_cfg are the test stage's keys (test: False here); visual snapshots are not built
        #expect(notes.contains { $0.contains("visual_snapshot_number") && !$0.contains("infer_cfg") && !$0.contains("test_model") })
        // the variables no !ref uses once the project's data replaces the recipe's
        #expect(notes.contains { $0.contains("d_model") && $0.contains("train_set") && $0.contains("ctc_weight") && $0.contains("data_root") })
    }

    @Test func unbuiltFeaturesAndMisspeltKeysAreOneErrorEach() throws {
        var tree = try ConfigFile.parse(Self.header + "\n" + Self.projectData + "\ntrain_cfg:\n  optim_sches: {type: noam.Noamlr, conf: {optim_type: Adam}}\n" + Self.projectModel,
                                        source: "h.yaml")
        tree["test"] = .bool(true)
        tree["dry_run"] = .bool(true)
        #expect { try Experiment(config: tree, source: "h.yaml") } throws: { error in
            "\(error)" == "h.yaml: not built yet: dry_run: true"
        }
        tree["test"] = .bool(false)
        tree["dry_run"] = nil
        tree["num_epoch"] = .int(3)
        tree["acum_grad"] = .int(3)
        #expect { try Experiment(config: tree, source: "h.yaml") } throws: { error in
            "\(error)" == "h.yaml: unknown keys 'acum_grad' (accum_grad?), 'num_epoch' (num_epochs?)"
        }
    }

    @Test func schedulersKeepTheOrderOfTheFile() throws {
        let yaml = Self.projectData + """

            train_cfg:
              optim_sches:
                zeta: {type: noam.Noamlr, conf: {optim_type: Adam, updated_modules: [encoder], warmup_steps: 10}}
                alpha: {type: exp.ExponentDecayLr, conf: {optim_type: SGD, optim_conf: {lr: 0.1}, updated_modules: [decoder]}}
            """ + "\n" + Self.projectModel
        let exp = try Experiment(config: ConfigFile.parse(yaml, source: "o.yaml"), source: "o.yaml")
        let trainer = try Trainer(experiment: exp, output: { _ in })
        #expect(trainer.schedulers.map(\.name) == ["zeta", "alpha"])
    }

    @Test func resultFolderAsSpeeChainPlacesIt() {
        #expect(Experiment.resultPath(for: "recipes/asr/digits/exp_cfg/tiny.yaml", given: nil, attach: true) == "recipes/asr/digits/exp/tiny")
        #expect(Experiment.resultPath(for: "/r/asr/exp_cfg/tiny.yml", given: nil, attach: true) == "/r/asr/exp/tiny")
        #expect(Experiment.resultPath(for: "tiny.yaml", given: nil, attach: true) == "exp/tiny")
        #expect(Experiment.resultPath(for: "x/exp_cfg/tiny.yaml", given: "/scratch", attach: true) == "/scratch/tiny")
        #expect(Experiment.resultPath(for: "x/exp_cfg/tiny.yaml", given: "/scratch", attach: false) == "/scratch")
    }

    @Test func theResolvedConfigsAreWrittenAndReadBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("speechain-recipe-\(UUID().uuidString)")
        let yaml = Self.header + "\n" + Self.projectData + "\n" + Self.withoutOwnWarmup(Self.optimSchesBlocks[3].1) + "\n" + Self.projectModel
        var tree = try ConfigFile.parse(yaml, source: "w.yaml")
        tree["num_epochs"] = .int(1)
        tree["train_result_path"] = .string(dir.path)
        let exp = try Experiment(config: tree, source: "w.yaml")
        _ = try Trainer(experiment: exp, output: { _ in }).run()
        func read(_ name: String) throws -> [String: ConfigValue] {
            var t = try ConfigFile.load(dir.appendingPathComponent(name).path)
            _ = ConfigFile.takeMarkers(from: &t)
            return t
        }
        #expect(try read("train_cfg.yaml") == exp.trainConfig)
        #expect(try read("train_data_cfg.yaml") == exp.dataConfig)
        let expCfg = try read("exp_cfg.yaml")
        #expect(expCfg["accum_grad"] == .int(2) && expCfg["grad_clip"] == .double(5) && expCfg["early_stopping_threshold"] == .double(0.001))
        #expect(expCfg == exp.effectiveKeys)
        // the !ref resolved: lr is the value of peak_lr
        guard case .map(let o)? = exp.trainConfig["optim_sches"], case .map(let c)? = o["conf"], case .map(let oc)? = c["optim_conf"] else {
            Issue.record("no optim_conf"); return
        }
        #expect(oc["lr"] == .double(0.0015))
    }
}
