import Foundation

/// What the monitor keeps about one epoch: the means of every loss and metric over all ranks, each scheduler's
/// lr averaged over the epoch's steps (SpeeChain's "Average learning rate"), the skipped updates, and the time it took.
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    public var train: [String: Double] = [:]
    public var valid: [String: Double]?
    public var lr: [String: Double] = [:]
    public var skipped: [String: Int] = [:]
    public var seconds = 0.0

    public func value(set: String, metric: String) -> Double? { (set == "valid" ? valid : train)?[metric] }
}

/// Everything of a run besides tensors that a resume needs. Data order and dropout draw from generators seeded
/// by (seed, epoch, rank), so the seed in the experiment is the whole RNG state at an epoch boundary.
public struct CheckpointState: Codable, Sendable {
    public static let formatName = "speechain-mpi checkpoint 2"
    public var format = CheckpointState.formatName
    /// Epochs completed; a resume starts at epoch + 1.
    public var epoch = 0
    public var stepNum = 0
    public var updates = 0
    public var worldSize = 1
    public var seed: UInt64 = 0
    public var modelType = ""
    public var stopped = false
    public var history: [EpochRecord] = []
    public var trackers: [BestModelTracker] = []
    public var earlyStopping = EarlyStopping(patience: nil, threshold: 0, maximize: false)
    public var counts: [String: TrainingSummary.SchedulerCounts] = [:]
    public var schedulers: [String: SchedulerMeta] = [:]

    public struct SchedulerMeta: Codable, Sendable {
        public var optimizer: String
        public var step: Int
        public var lr: Double
        public var scaler: GradScaler?
        public var tensors: [String]
    }
}

/// The resumable checkpoint: one safetensors file (so one atomic rename makes it current) holding the model
/// (`model.<name>`), the gradient accumulation buffer (`gradients`), every optimizer state tensor
/// (`optim.<scheduler>.<tensor>`) and, as JSON in the metadata, the rest of the state.
public enum Checkpoint {
    public static let fileName = "checkpoint.safetensors"
    static let metadataKey = "speechain_checkpoint"

    public static func write(_ state: CheckpointState, model: any Model, schedulers: [OptimScheduler], to url: URL,
                             midWrite: (() -> Void)? = nil) throws {
        var state = state
        var tensors = model.parameters.entries.map {
            NamedTensor(name: "model." + $0.name, shape: $0.shape, values: model.parameters.values.toArray($0.range))
        }
        tensors.append(NamedTensor(name: "gradients", shape: [model.parameters.count], values: model.parameters.gradients.toArray()))
        for s in schedulers {
            let dict = s.stateDict()
            let names = dict.optimizer.tensors.keys.sorted()
            for n in names {
                let v = dict.optimizer.tensors[n]!
                tensors.append(NamedTensor(name: "optim.\(s.name).\(n)", shape: [v.count], values: v))
            }
            state.schedulers[s.name] = .init(optimizer: dict.optimizer.typeName, step: dict.optimizer.step,
                                             lr: dict.optimizer.lr, scaler: dict.scaler, tensors: names)
        }
        let json = String(decoding: try JSONCoding.encoder(snakeCase: false).encode(state), as: UTF8.self)
        try Safetensors.write(tensors, metadata: [metadataKey: json, "format": "pt"], to: url, midWrite: midWrite)
    }

    /// Reads a checkpoint into `model` and `schedulers` and returns the rest of the state. Anything that does not
    /// fit — another model, other schedulers or optimizers — is an error naming the file, and nothing is loaded.
    public static func read(from url: URL, model: any Model, schedulers: [OptimScheduler]) throws -> CheckpointState {
        let path = url.path
        let file = try Safetensors.read(contentsOf: url)
        guard let json = file.metadata[metadataKey] else {
            throw CheckpointError.invalid(path: path, reason: "not a speechain-mpi checkpoint (no '\(metadataKey)' metadata)")
        }
        let state: CheckpointState
        do { state = try JSONCoding.decoder(snakeCase: false).decode(CheckpointState.self, from: Data(json.utf8)) } catch {
            throw CheckpointError.invalid(path: path, reason: "its state record cannot be read (\(error))")
        }
        guard state.format == CheckpointState.formatName else {
            throw CheckpointError.invalid(path: path, reason: "format '\(state.format)' is not '\(CheckpointState.formatName)'")
        }
        var byName: [String: NamedTensor] = [:]
        for t in file.tensors { byName[t.name] = t }
        let weights = file.tensors.filter { $0.name.hasPrefix("model.") }.map {
            NamedTensor(name: String($0.name.dropFirst("model.".count)), shape: $0.shape, values: $0.values)
        }
        // Validate everything before changing anything.
        try model.parameters.validate(weights, source: path)
        guard let grads = byName["gradients"], grads.values.count == model.parameters.count else {
            throw CheckpointError.invalid(path: path, reason: "its gradient buffer does not fit the model")
        }
        var optimizerStates: [(OptimScheduler, OptimSchedulerState)] = []
        let saved = Set(state.schedulers.keys), current = Set(schedulers.map(\.name))
        guard saved == current else {
            throw CheckpointError.invalid(path: path, reason: "it holds optim_sches \(saved.sorted()), the experiment has \(current.sorted())")
        }
        for s in schedulers {
            let meta = state.schedulers[s.name]!
            var tensors: [String: [Float]] = [:]
            for n in meta.tensors {
                guard let t = byName["optim.\(s.name).\(n)"] else {
                    throw CheckpointError.invalid(path: path, reason: "optimizer tensor '\(n)' of '\(s.name)' is missing")
                }
                tensors[n] = t.values
            }
            let st = OptimSchedulerState(optimizer: OptimizerState(typeName: meta.optimizer, step: meta.step, lr: meta.lr, tensors: tensors),
                                         scaler: meta.scaler)
            try s.validateState(st)
            optimizerStates.append((s, st))
        }
        try model.parameters.load(weights, source: path)
        model.parameters.gradients.copy(from: grads.values)
        for (s, st) in optimizerStates { try s.loadStateDict(st) }
        return state
    }
}

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case invalid(path: String, reason: String)
    case missing(path: String)
    case wouldOverwrite(path: String)

    public var description: String {
        switch self {
        case .invalid(let path, let reason): return "\(path): \(reason)"
        case .missing(let path): return "\(path): no checkpoint to resume from"
        case .wouldOverwrite(let path):
            return "\(path) already holds a checkpoint: resume it (--resume) or choose another train_result_path"
        }
    }
}
