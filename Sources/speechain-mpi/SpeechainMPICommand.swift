import ArgumentParser
import Foundation
import SpeechainMPI

/// The command line: argument parsing and nothing else. Every experiment-level key of a SpeeChain config is an
/// option of the same name; any other key is reachable with `--set dotted.path=value`; the command line wins.
@main
struct SpeechainMPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speechain-mpi",
        abstract: "SpeeChain's OptimScheduler training core for CPU clusters.",
        discussion: """
            Without --config, trains the built-in default experiment (print it with --print_default_config): \
            learnable synthetic 4-class data (1024 training and 256 validation rows of 16 features), MLP 16→64→64→4 \
            with ReLU, Adam (lr 0.005) under Noam (warmup_steps 20), 3 epochs of batch 32. Run under mpirun or \
            srun it trains data-parallel, one rank per process.
            """,
        subcommands: [DataCommand.self, BenchCommand.self, BenchAMPCommand.self, BenchASRCommand.self, BenchFrontendCommand.self,
                      SharedSumCheckCommand.self])

    @Option(help: "SpeeChain-style experiment YAML (experiment keys, data_cfg, train_cfg; !ref and !tuple understood).")
    var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override any config key: --set train_cfg.optim_sches.conf.optim_conf.lr=0.01 (repeatable).", valueName: "key=value"))
    var assignments: [String] = []
    @Flag(name: .customLong("print_default_config"), help: "Print the default experiment's YAML and exit.")
    var printDefaultConfig = false

    @Option(help: "Seed of weight initialisation, data order and dropout.") var seed: Int?
    @Option(name: .customLong("num_epochs"), help: "Number of epochs.") var numEpochs: Int?
    @Option(name: .customLong("accum_grad"), help: "Micro-steps whose gradients are accumulated before an update.") var accumGrad: Int?
    @Option(name: .customLong("ft_factor"), help: "Fine-tuning factor multiplying every scheduled lr.") var ftFactor: Double?
    @Option(name: .customLong("grad_clip"), help: "Max global gradient norm (<= 0: measure only, no clipping).") var gradClip: Double?
    @Option(name: .customLong("grad_norm_type"), help: "Norm type of the clipping: 1, 2, inf or any p > 0.") var gradNormType: String?
    @Option(name: .customLong("use_amp"), help: "Mixed precision with a GradScaler (true/false).") var useAMP: Bool?
    @Option(name: .customLong("amp_dtype"), help: "What use_amp emulates: float16 (default) or bfloat16.") var ampDType: String?
    @Option(name: .customLong("valid_per_epochs"), help: "Validate every N epochs.") var validPerEpochs: Int?
    @Option(name: .customLong("report_per_steps"), help: "Print a report line every N steps.") var reportPerSteps: Int?
    @Option(name: .customLong("best_model_selection"), help: "Keep the N best epochs by a metric, e.g. 'valid accuracy max 3'.") var bestModelSelection: String?
    @Option(name: .customLong("early_stopping_patience"), help: "Stop after N validations without improvement of the first selection metric.") var earlyStoppingPatience: Int?
    @Option(name: .customLong("last_model_number"), help: "Keep the weights of the N latest epochs.") var lastModelNumber: Int?
    @Option(name: .customLong("train_result_path"), help: "Folder for rank 0's log, records, curves, checkpoint and models.") var trainResultPath: String?
    @Flag(help: "Continue from the checkpoint in train_result_path (training) and from the test stage's checkpoints.") var resume = false
    @Option(help: "Run the training branch (true/false). Given neither --train nor --test (nor the keys), training runs, then the test stage if data_cfg has a test set.") var train: Bool?
    @Option(help: "Run the test stage (true/false): decode data_cfg.test with each test_model and infer_cfg run, and score it.") var test: Bool?
    @Option(name: .customLong("test_model"), help: "The model(s) of models/ to test, e.g. 10_valid_accuracy_average or latest (comma-separated for several).") var testModel: String?
    @Option(name: .customLong("test_result_path"), help: "Folder for the test results (default: the training result folder).") var testResultPath: String?
    @Option(name: .customLong("init_weights"), help: "Start from these safetensors weights (PyTorch state_dict names).") var initWeights: String?
    @Option(name: .customLong("flush_denormal"), help: "Flush denormal floats to zero on the computing threads (true/false; default true), as torch.set_flush_denormal.") var flushDenormal: Bool?
    @Option(name: .customLong("check_consistency_every"), help: "Verify every N updates that all ranks hold bit-identical parameters (0: only at the end).") var checkConsistencyEvery: Int?
    @Option(name: .customLong("collective_timeout"), help: "Seconds a rank waits in one collective for the others before it ends the job, naming the missing ranks (default 600).") var collectiveTimeout: Double?
    @Option(name: .customLong("batch_size"), help: "data_cfg.batch_size: rows per batch on each rank.") var batchSize: Int?
    @Option(help: "data_cfg.shuffle: shuffle the training rows every epoch (true/false).") var shuffle: Bool?
    @Option(name: .customLong("train_feat"), help: "Training features, .npy float32 [N, D] (with --train_label).") var trainFeat: String?
    @Option(name: .customLong("train_label"), help: "Training labels, .npy int64 [N].") var trainLabel: String?
    @Option(name: .customLong("valid_feat"), help: "Validation features, .npy float32 [N, D] (with --valid_label).") var validFeat: String?
    @Option(name: .customLong("valid_label"), help: "Validation labels, .npy int64 [N].") var validLabel: String?
    @Option(name: .customLong("optim_type"), help: "optim_type of a single {type, conf} optim_sches.") var optimType: String?
    @Option(help: "optim_conf.lr of a single {type, conf} optim_sches.") var lr: Double?
    @Option(name: .customLong("warmup_steps"), help: "warmup_steps of a single {type, conf} optim_sches.") var warmupSteps: Int?

    @Option(name: .customLong("fail_rank"), help: .hidden) var failRank: Int?
    @Option(name: .customLong("fail_step"), help: .hidden) var failStep: Int?
    @Option(name: .customLong("fail_mode"), help: .hidden) var failMode: String = "throw"
    @Option(name: .customLong("kill_during_checkpoint"), help: .hidden) var killDuringCheckpoint: Int?
    @Option(name: .customLong("kill_after_test_round"), help: .hidden) var killAfterTestRound: Int?

    /// The options given, as (dotted config path, value) overrides.
    func overrides() throws -> [(path: String, value: ConfigValue)] {
        var o: [(String, ConfigValue)] = []
        func add(_ path: String, _ v: ConfigValue?) { if let v { o.append((path, v)) } }
        add("seed", seed.map { .int($0) })
        add("num_epochs", numEpochs.map { .int($0) })
        add("accum_grad", accumGrad.map { .int($0) })
        add("ft_factor", ftFactor.map { .double($0) })
        add("grad_clip", gradClip.map { .double($0) })
        add("grad_norm_type", gradNormType.map { .string($0) })
        add("use_amp", useAMP.map { .bool($0) })
        add("amp_dtype", ampDType.map { .string($0) })
        add("valid_per_epochs", validPerEpochs.map { .int($0) })
        add("report_per_steps", reportPerSteps.map { .int($0) })
        add("best_model_selection", bestModelSelection.map { .string($0) })
        add("early_stopping_patience", earlyStoppingPatience.map { .int($0) })
        add("last_model_number", lastModelNumber.map { .int($0) })
        add("train_result_path", trainResultPath.map { .string($0) })
        add("resume", resume ? .bool(true) : nil)
        add("train", train.map { .bool($0) })
        add("test", test.map { .bool($0) })
        add("test_model", testModel.map { m in .list(m.split(separator: ",").map { .string(String($0)) }) })
        add("test_result_path", testResultPath.map { .string($0) })
        add("init_weights", initWeights.map { .string($0) })
        add("check_consistency_every", checkConsistencyEvery.map { .int($0) })
        add("collective_timeout", collectiveTimeout.map { .double($0) })
        add("flush_denormal", flushDenormal.map { .bool($0) })
        add("data_cfg.batch_size", batchSize.map { .int($0) })
        add("data_cfg.shuffle", shuffle.map { .bool($0) })
        add("train_cfg.optim_sches.conf.optim_type", optimType.map { .string($0) })
        add("train_cfg.optim_sches.conf.optim_conf.lr", lr.map { .double($0) })
        add("train_cfg.optim_sches.conf.warmup_steps", warmupSteps.map { .int($0) })
        for (set, feat, label) in [("train", trainFeat, trainLabel), ("valid", validFeat, validLabel)] {
            switch (feat, label) {
            case (let f?, let l?): add("data_cfg.\(set)", .map(["type": .string("npy"), "conf": .map(["feat": .string(f), "label": .string(l)])]))
            case (nil, nil): break
            default: throw ValidationError("--\(set)_feat and --\(set)_label go together")
            }
        }
        // Your training set without a validation set: no validation on the built-in synthetic set (best models and
        // early stopping would follow data that is not yours); the epochs are judged by their training loss unless
        // you name a selection.
        if config == nil, trainFeat != nil, validFeat == nil, !assignments.contains(where: { $0.hasPrefix("data_cfg.valid") }) {
            add("data_cfg.valid", .null)
            if bestModelSelection == nil, !assignments.contains(where: { $0.hasPrefix("best_model_selection=") }) {
                add("best_model_selection", .string("train loss min 2"))
            }
        }
        for a in assignments {
            guard let eq = a.firstIndex(of: "="), eq != a.startIndex else { throw ValidationError("--set expects key=value, found '\(a)'") }
            let key = String(a[..<eq])
            o.append((key, try ConfigFile.value(String(a[a.index(after: eq)...]), key: key)))
        }
        return o
    }

    func run() throws {
        if printDefaultConfig { print(Experiment.defaultYAML, terminator: ""); return }
        let testKill = killAfterTestRound.map { (rank: failRank ?? 0, round: $0) }
        let status = Launcher.train(killAfterTestRound: testKill) {
            var experiment = try Experiment.load(configPath: config, overrides: overrides())
            switch (killAfterTestRound == nil ? failRank : nil, failStep) {
            case (let r?, let s?):
                guard let mode = Experiment.InjectedFailure.Mode(rawValue: failMode) else {
                    throw ValidationError("--fail_mode must be throw, kill or perturb, found '\(failMode)'")
                }
                experiment.failure = .init(rank: r, step: s, mode: mode)
            case (nil, nil): break
            default: throw ValidationError("--fail_rank and --fail_step go together")
            }
            experiment.killDuringCheckpointOfEpoch = killDuringCheckpoint
            return experiment
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// Command-line mistakes are one line too (argument-parser would add the usage).
    static func main() {
        // before anything loads MPI or reads the config: OpenBLAS must not run fallback kernels
        BLASKernels.ensureNativeKernels()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as ExitCode {
            Foundation.exit(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }   // --help, --version
            FileHandle.standardError.write(Data("speechain-mpi: error: \(Launcher.escapingControlCharacters(message(for: error)))\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }
}
