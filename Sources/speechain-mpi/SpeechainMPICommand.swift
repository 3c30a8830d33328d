import ArgumentParser
import Foundation
import SpeechainMPI

/// The command line: argument parsing and nothing else; the work is in SpeechainMPI's Trainer.
@main
struct SpeechainMPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speechain-mpi",
        abstract: "SpeeChain's OptimScheduler training core for CPU clusters.",
        discussion: """
            Without options, trains the built-in default experiment: learnable synthetic 4-class data (1024 training \
            and 256 validation rows of 16 features), MLP 16→64→64→4 with ReLU, Adam (lr 0.005) under Noam \
            (warmup_steps 20), 3 epochs of batch 32, printing every step's loss and lr and each epoch's validation.
            """)

    @Option(name: .customLong("num_epochs"), help: "Number of epochs (SpeeChain's num_epochs).")
    var numEpochs: Int?
    @Option(name: .customLong("batch_size"), help: "Rows per batch on each rank.")
    var batchSize: Int?
    @Option(help: "Seed of weight initialisation, data order and dropout.")
    var seed: UInt64?
    @Option(name: .customLong("accum_grad"), help: "Micro-steps whose gradients are accumulated before an update.")
    var accumGrad: Int?
    @Option(name: .customLong("ft_factor"), help: "Fine-tuning factor multiplying every scheduled lr.")
    var ftFactor: Double?
    @Option(name: .customLong("grad_clip"), help: "Max global gradient norm (<= 0: measure only, no clipping).")
    var gradClip: Double?
    @Option(name: .customLong("grad_norm_type"), help: "Norm type of the clipping: 1, 2, inf or any p > 0.")
    var gradNormType: String?
    @Option(name: .customLong("use_amp"), help: "Dynamic loss scaling with a GradScaler (true/false).")
    var useAMP: Bool?
    @Option(name: .customLong("report_per_steps"), help: "Print a step line every N steps.")
    var reportPerSteps: Int?
    @Option(help: "Shuffle the training rows every epoch (true/false).")
    var shuffle: Bool?
    @Option(name: .customLong("optim_type"), help: "Optimizer of the default OptimScheduler: SGD, Adam, AdamW, Adagrad, RMSprop.")
    var optimType: String?
    @Option(help: "lr in the default OptimScheduler's optim_conf.")
    var lr: Double?
    @Option(name: .customLong("warmup_steps"), help: "warmup_steps of the default Noam schedule.")
    var warmupSteps: Int?
    @Option(name: .customLong("train_feat"), help: "Training features, .npy float32 [N, D] (with --train_label).")
    var trainFeat: String?
    @Option(name: .customLong("train_label"), help: "Training labels, .npy int64 [N].")
    var trainLabel: String?
    @Option(name: .customLong("valid_feat"), help: "Validation features, .npy float32 [N, D] (with --valid_label).")
    var validFeat: String?
    @Option(name: .customLong("valid_label"), help: "Validation labels, .npy int64 [N].")
    var validLabel: String?
    @Option(name: .customLong("init_weights"), help: "Start from these safetensors weights (PyTorch state_dict names).")
    var initWeights: String?
    @Option(name: .customLong("train_result_path"), help: "Folder for rank 0's train.log, summary.json and final model.safetensors.")
    var trainResultPath: String?

    @Option(name: .customLong("check_consistency_every"), help: "Verify every N updates that all ranks hold bit-identical parameters (0: only at the end).")
    var checkConsistencyEvery: Int?
    @Option(name: .customLong("fail_rank"), help: ArgumentHelp("Test hook: the rank that fails (with --fail_step).", visibility: .hidden))
    var failRank: Int?
    @Option(name: .customLong("fail_step"), help: ArgumentHelp("Test hook: the step at which --fail_rank fails.", visibility: .hidden))
    var failStep: Int?
    @Option(name: .customLong("fail_mode"), help: ArgumentHelp("Test hook: throw (an error) or kill (SIGKILL itself).", visibility: .hidden))
    var failMode: String = "throw"

    func makeExperiment() throws -> Experiment {
        var e = Experiment.default
        if let v = numEpochs { e.numEpochs = v }
        if let v = batchSize { e.batchSize = v }
        if let v = seed { e.seed = v }
        if let v = accumGrad { e.training.accumGrad = v }
        if let v = ftFactor { e.training.ftFactor = v }
        if let v = gradClip { e.training.gradClip = v }
        if let v = gradNormType {
            guard let p = Double(v) else { throw ValidationError("--grad_norm_type must be a number or inf, found '\(v)'") }
            e.training.gradNormType = p
        }
        if let v = useAMP { e.training.useAMP = v }
        if let v = reportPerSteps { e.reportPerSteps = v }
        if let v = shuffle { e.shuffle = v }
        if optimType != nil || lr != nil || warmupSteps != nil,
           case .map(var top) = e.optimSches, case .map(var conf)? = top["conf"] {
            if let v = optimType { conf["optim_type"] = .string(v) }
            if let v = lr {
                var oc: [String: ConfigValue] = [:]
                if case .map(let m)? = conf["optim_conf"] { oc = m }
                oc["lr"] = .double(v)
                conf["optim_conf"] = .map(oc)
            }
            if let v = warmupSteps { conf["warmup_steps"] = .int(v) }
            top["conf"] = .map(conf)
            e.optimSches = .map(top)
        }
        switch (trainFeat, trainLabel) {
        case (let f?, let l?): e.train = .npy(features: f, labels: l)
        case (nil, nil): break
        default: throw ValidationError("--train_feat and --train_label go together")
        }
        switch (validFeat, validLabel) {
        case (let f?, let l?): e.valid = .npy(features: f, labels: l)
        case (nil, nil): break
        default: throw ValidationError("--valid_feat and --valid_label go together")
        }
        e.initWeights = initWeights
        e.trainResultPath = trainResultPath
        if let v = checkConsistencyEvery { e.checkConsistencyEvery = v }
        switch (failRank, failStep) {
        case (let r?, let s?):
            guard let mode = Experiment.InjectedFailure.Mode(rawValue: failMode) else {
                throw ValidationError("--fail_mode must be throw or kill, found '\(failMode)'")
            }
            e.failure = .init(rank: r, step: s, mode: mode)
        case (nil, nil): break
        default: throw ValidationError("--fail_rank and --fail_step go together")
        }
        return e
    }

    func run() throws {
        let experiment = try makeExperiment()
        // Under mpirun/srun every process is one rank of MPI_COMM_WORLD; started alone it is a world of one
        // that never initialises MPI, so nothing is communicated.
        var communicator: Communicator = LocalCommunicator()
        do {
            if MPICommunicator.launchedByMPI { communicator = try MPICommunicator() }
        } catch {
            fail(error, communicator)
        }
        if communicator.size > 1 && ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
            BLAS.setThreadCount(1)   // ranks fill the cores
        }
        // Set-up is local (config, data, weights); the ranks then agree whether all succeeded, so that bad input
        // ends every rank cleanly with its own message instead of leaving some waiting in a collective.
        var trainer: Trainer?
        var setupError: Error?
        do { trainer = try Trainer(experiment: experiment, communicator: communicator) } catch { setupError = error }
        let allReady: Bool
        do { allReady = try communicator.allreduceMin(setupError == nil ? 1 : 0) == 1 } catch { fail(error, communicator) }
        guard allReady, let trainer else {
            if let setupError { report(setupError, communicator) }
            (communicator as? MPICommunicator)?.finalize()
            throw ExitCode(1)
        }
        do {
            try trainer.run()
        } catch {
            fail(error, communicator)
        }
        (communicator as? MPICommunicator)?.finalize()
    }

    private func report(_ error: Error, _ communicator: Communicator) {
        let who = communicator.size > 1 ? "rank \(communicator.rank): " : ""
        FileHandle.standardError.write(Data("speechain-mpi: error: \(who)\(error)\n".utf8))
    }

    /// A failure during training ends the whole job at once (MPI_Abort): no rank is left waiting in a collective.
    private func fail(_ error: Error, _ communicator: Communicator) -> Never {
        report(error, communicator)
        if communicator.size > 1 { communicator.abort(code: 1) }
        Foundation.exit(1)
    }
}
