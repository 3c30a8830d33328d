import Foundation

/// Where a data set comes from: .npy files or the built-in synthetic generator.
public enum DataSource: Sendable, Equatable {
    case npy(features: String, labels: String)
    case synthetic(count: Int, width: Int, classes: Int, seed: UInt64)

    public func load() throws -> Dataset {
        switch self {
        case .npy(let f, let l):
            return try Dataset.load(features: URL(fileURLWithPath: f), labels: URL(fileURLWithPath: l))
        case .synthetic(let n, let d, let k, let seed):
            return try Dataset.synthetic(count: n, width: d, classes: k, seed: seed)
        }
    }
}

/// One experiment in SpeeChain's terms: experiment-level keys, data, the model and its optim_sches.
public struct Experiment: Sendable {
    public var seed: UInt64 = 0
    public var numEpochs = 3
    public var batchSize = 32
    public var shuffle = true
    public var reportPerSteps = 1
    public var training = TrainingOptions()
    public var train: DataSource
    public var valid: DataSource?
    public var modelType = MLPClassifier.typeName
    public var modelConf: [String: ConfigValue]
    public var optimSches: ConfigValue
    /// Safetensors weights to start from (PyTorch names).
    public var initWeights: String?
    /// Folder for rank 0's log, run summary and final weights; nothing is written when nil.
    public var trainResultPath: String?
    /// Verify every N updates that all ranks hold bit-identical parameters (0: only at the end).
    public var checkConsistencyEvery = 0
    /// Test hook: make rank `failRank` fail at step `failStep`, by throwing or by SIGKILL.
    public var failure: InjectedFailure?

    public struct InjectedFailure: Sendable, Equatable {
        public enum Mode: String, Sendable { case `throw`, kill }
        public var rank: Int, step: Int, mode: Mode
        public init(rank: Int, step: Int, mode: Mode) { self.rank = rank; self.step = step; self.mode = mode }
    }

    /// The built-in default: learnable synthetic 4-class data in 16 dims, MLP 16→64→64→4 (ReLU), Adam + Noam.
    public static var `default`: Experiment {
        Experiment(
            train: .synthetic(count: 1024, width: 16, classes: 4, seed: 1),
            valid: .synthetic(count: 256, width: 16, classes: 4, seed: 2),
            modelConf: [
                "encoder": .map(["dims": .list([.int(16), .int(64), .int(64)]), "activation": .string("ReLU")]),
                "decoder": .map(["dims": .list([.int(64), .int(4)])]),
            ],
            optimSches: .map([
                "type": .string(NoamLr.typeName),
                "conf": .map([
                    "optim_type": .string("Adam"),
                    "optim_conf": .map(["lr": .double(0.005)]),
                    "warmup_steps": .int(20),
                ]),
            ]))
    }

    public func validate() throws {
        guard numEpochs >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "num_epochs", reason: "must be >= 1, found \(numEpochs)") }
        guard batchSize >= 1 else { throw ConfigError.invalidValue(context: "data_cfg", key: "batch_size", reason: "must be >= 1, found \(batchSize)") }
        guard reportPerSteps >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "report_per_steps", reason: "must be >= 1, found \(reportPerSteps)") }
        guard checkConsistencyEvery >= 0 else { throw ConfigError.invalidValue(context: "experiment", key: "check_consistency_every", reason: "must be >= 0, found \(checkConsistencyEvery)") }
        guard training.accumGrad >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "accum_grad", reason: "must be >= 1, found \(training.accumGrad)") }
    }
}
