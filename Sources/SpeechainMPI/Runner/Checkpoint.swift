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
    /// 3: CRC-32C digests of every tensor and of this record; steps per epoch, what shapes the trajectory and
    /// best_model_selection recorded, so that a resume can be checked (`ResumeCheck`).
    public static let formatName = "speechain-mpi checkpoint 3"
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
    /// rows / (batch_size × ranks): at every checkpoint step_num = epoch × stepsPerEpoch.
    public var stepsPerEpoch = 0
    /// What shapes the trajectory, one canonical text per key (`seed`, `batch_size`, `accum_grad`,
    /// `model_conf.module_conf.encoder.dims`, `optim_sches.conf.optim_conf.lr`, `data_cfg.train`, …): what a
    /// resume must match (`ResumeCheck.trajectory`).
    public var trajectory: [String: String] = [:]
    /// best_model_selection as written (`valid accuracy max 2`), one per tracker.
    public var selections: [String] = []

    public struct SchedulerMeta: Codable, Sendable {
        public var optimizer: String
        public var step: Int
        public var lr: Double
        public var scaler: GradScaler?
        public var tensors: [String]
    }
}

/// The resumable checkpoint: one safetensors file (so one atomic rename makes it current) holding the model
/// (`model.<name>`), the gradient accumulation buffer (`gradients`; when an epoch ends inside an accumulation
/// window under MPI, also every other rank's partial sum as `gradients.rank<r>`), every optimizer state tensor
/// (`optim.<scheduler>.<tensor>`) and, as JSON in the metadata, the rest of the state (the state record).
///
/// The metadata also holds the CRC-32C (Castagnoli, RFC 3720) of every tensor's little-endian F32 bytes and of the
/// state record's UTF-8 text, as eight hex digits under `speechain_checkpoint_crc32c`; `open` checks them all
/// before it decodes anything. A CRC-32C catches every burst of up to 32 flipped bits and any other damage but
/// for one chance in 2³²: it guards against disks, copies and truncation, not against someone forging a file.
public enum Checkpoint {
    public static let fileName = "checkpoint.safetensors"
    static let metadataKey = "speechain_checkpoint"
    static let digestsKey = "speechain_checkpoint_crc32c"
    /// The name of the state record in the digests and in messages.
    static let stateRecord = "state record"

    public static func write(_ state: CheckpointState, model: any Model, schedulers: [OptimScheduler],
                             otherRanksGradients: [[Float]] = [], to url: URL, midWrite: (() -> Void)? = nil) throws {
        var state = state
        var tensors = model.parameters.entries.map {
            NamedTensor(name: "model." + $0.name, shape: $0.shape, values: model.parameters.values.toArray($0.range))
        }
        tensors.append(contentsOf: model.bufferTensors.map { NamedTensor(name: "buffer." + $0.name, shape: $0.shape, values: $0.values) })
        tensors.append(NamedTensor(name: "gradients", shape: [model.parameters.count], values: model.parameters.gradients.toArray()))
        for (k, g) in otherRanksGradients.enumerated() {
            precondition(g.count == model.parameters.count, "a rank's gradient buffer has the model's size")
            tensors.append(NamedTensor(name: "gradients.rank\(k + 1)", shape: [g.count], values: g))
        }
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
        var digests = [stateRecord: hex(digest(of: json))]
        for t in tensors { digests[t.name] = hex(digest(of: t.values)) }
        let digestText = String(decoding: try JSONCoding.encoder(snakeCase: false).encode(digests), as: UTF8.self)
        try Safetensors.write(tensors, metadata: [metadataKey: json, digestsKey: digestText, "format": "pt"], to: url, midWrite: midWrite)
    }

    /// A checkpoint file whose digests all match and whose state record is decoded; nothing is loaded yet.
    public struct Verified: Sendable {
        public let path: String
        public let state: CheckpointState
        let tensors: [String: NamedTensor]

        /// The model's tensors under the model's own names.
        public var weights: [NamedTensor] { stripped("model.") }

        /// The model's buffers (BatchNorm running statistics, …) under the model's own names.
        public var buffers: [NamedTensor] { stripped("buffer.") }

        private func stripped(_ prefix: String) -> [NamedTensor] {
            tensors.values.filter { $0.name.hasPrefix(prefix) }.sorted { $0.name < $1.name }.map {
                NamedTensor(name: String($0.name.dropFirst(prefix.count)), shape: $0.shape, values: $0.values)
            }
        }
    }

    /// Reads a checkpoint and checks it before anything is decoded: a readable header, a digest for every tensor
    /// and for the state record and no other, each matching, then the format. Any failure is one error naming
    /// the file and the part (tensor or state record).
    public static func open(_ url: URL) throws -> Verified {
        let path = url.path
        let file = try Safetensors.read(contentsOf: url)
        guard let json = file.metadata[metadataKey] else {
            throw CheckpointError.invalid(path: path, reason: "not a speechain-mpi checkpoint (no '\(metadataKey)' metadata)")
        }
        guard let digestText = file.metadata[digestsKey] else {
            throw CheckpointError.invalid(path: path, reason: "it holds no CRC-32C digests (a checkpoint of an earlier format, not '\(CheckpointState.formatName)'), so it cannot be checked")
        }
        guard let digests = try? JSONCoding.decoder(snakeCase: false).decode([String: String].self, from: Data(digestText.utf8)) else {
            throw CheckpointError.invalid(path: path, reason: "its table of CRC-32C digests cannot be read")
        }
        try verify(stateRecord, digest(of: json), against: digests, path: path)
        var byName: [String: NamedTensor] = [:]
        for t in file.tensors {
            try verify("tensor '\(t.name)'", digest(of: t.values), stored: digests[t.name], path: path)
            byName[t.name] = t
        }
        if let extra = digests.keys.sorted().first(where: { $0 != stateRecord && byName[$0] == nil }) {
            throw CheckpointError.damaged(path: path, part: "tensor '\(extra)'", reason: "is listed in the digests but missing from the file")
        }
        let decoder = JSONCoding.decoder(snakeCase: false)
        struct Format: Decodable { var format: String }
        guard let format = try? decoder.decode(Format.self, from: Data(json.utf8)).format else {
            throw CheckpointError.invalid(path: path, reason: "its \(stateRecord) has no format")
        }
        guard format == CheckpointState.formatName else {
            throw CheckpointError.invalid(path: path, reason: "format '\(format)' is not '\(CheckpointState.formatName)'")
        }
        let state: CheckpointState
        do { state = try decoder.decode(CheckpointState.self, from: Data(json.utf8)) } catch {
            throw CheckpointError.invalid(path: path, reason: "its \(stateRecord) cannot be read (\(error))")
        }
        return Verified(path: path, state: state, tensors: byName)
    }

    /// A verified checkpoint whose tensors are known to fit a model and its schedulers; `load` applies them.
    public struct Fitted {
        let model: any Model
        let weights: [NamedTensor]
        let buffers: [NamedTensor]
        let gradients: [Float]
        let optimizerStates: [(OptimScheduler, OptimSchedulerState)]
        let path: String

        /// Loads the tensors into the model and the schedulers.
        public func load() throws {
            try model.loadBuffers(buffers, source: path)
            try model.parameters.load(weights, source: path)
            model.parameters.gradients.copy(from: gradients)
            for (s, st) in optimizerStates { try s.loadStateDict(st) }
        }
    }

    /// Checks, changing nothing, that a verified checkpoint's tensors fit `model` and `schedulers`: anything that
    /// does not — another model, other schedulers or optimizers — is an error naming the file.
    ///
    /// `rank` of `world` picks the gradient accumulation buffer: at the checkpoint's own world size each rank its
    /// own partial sum (bit-identical continuation); at another world size (same global batch) rank 0 takes the
    /// sum over the old ranks scaled by new/old world size — what the next update's average then needs — and the
    /// other ranks start from zero.
    public static func fit(_ checkpoint: Verified, model: any Model, schedulers: [OptimScheduler],
                           rank: Int = 0, world: Int = 1) throws -> Fitted {
        let path = checkpoint.path, state = checkpoint.state, byName = checkpoint.tensors
        let weights = checkpoint.weights
        try model.parameters.validate(weights, source: path)
        let buffers = checkpoint.buffers
        if let missing = model.bufferTensors.first(where: { t in !buffers.contains { $0.name == t.name } }) {
            throw CheckpointError.invalid(path: path, reason: "it lacks the model's buffer '\(missing.name)'")
        }
        guard let grads = byName["gradients"], grads.values.count == model.parameters.count else {
            throw CheckpointError.invalid(path: path, reason: "its gradient buffer does not fit the model")
        }
        let savedWorld = state.worldSize
        let rankNames = byName.keys.filter { $0.hasPrefix("gradients.rank") }
        let others: [[Float]]
        if rankNames.isEmpty {
            others = []
        } else {
            others = try (1..<savedWorld).map { r in
                guard let t = byName["gradients.rank\(r)"], t.values.count == model.parameters.count else {
                    throw CheckpointError.invalid(path: path, reason: "rank \(r)'s gradient buffer is missing or does not fit the model")
                }
                return t.values
            }
            guard rankNames.count == savedWorld - 1 else {
                throw CheckpointError.invalid(path: path, reason: "it holds \(rankNames.count + 1) ranks' gradient buffers for a world of \(savedWorld)")
            }
        }
        var gradients: [Float]
        if world == savedWorld {
            gradients = rank == 0 ? grads.values : (others.isEmpty ? [Float](repeating: 0, count: grads.values.count) : others[rank - 1])
        } else if rank == 0 {
            let factor = Double(world) / Double(savedWorld)
            gradients = grads.values.indices.map { i in
                Float((Double(grads.values[i]) + others.reduce(0) { $0 + Double($1[i]) }) * factor)
            }
        } else {
            gradients = [Float](repeating: 0, count: grads.values.count)
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
        return Fitted(model: model, weights: weights, buffers: buffers, gradients: gradients, optimizerStates: optimizerStates, path: path)
    }

    /// Reads, verifies and loads a checkpoint, returning its state record (no check against an experiment: that is
    /// `ResumeCheck.resume`).
    public static func read(from url: URL, model: any Model, schedulers: [OptimScheduler]) throws -> CheckpointState {
        let checkpoint = try open(url)
        try fit(checkpoint, model: model, schedulers: schedulers).load()
        return checkpoint.state
    }

    // MARK: - Digests

    /// CRC-32C of the values' little-endian F32 bytes (the bytes the file holds; every supported host is little-endian).
    static func digest(of values: [Float]) -> UInt32 {
        values.withUnsafeBytes { CRC32C.checksum($0) }
    }

    static func digest(of text: String) -> UInt32 { CRC32C.checksum(Array(text.utf8)) }

    static func hex(_ crc: UInt32) -> String {
        let digits = String(crc, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    private static func verify(_ part: String, _ computed: UInt32, against digests: [String: String], path: String) throws {
        try verify(part, computed, stored: digests[part], path: path)
    }

    private static func verify(_ part: String, _ computed: UInt32, stored: String?, path: String) throws {
        guard let stored else { throw CheckpointError.damaged(path: path, part: part, reason: "has no digest") }
        guard stored == hex(computed) else {
            throw CheckpointError.damaged(path: path, part: part, reason: "does not match its CRC-32C (stored \(stored), computed \(hex(computed)))")
        }
    }
}

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case invalid(path: String, reason: String)
    case missing(path: String)
    case wouldOverwrite(path: String)
    /// A tensor or the state record does not match its digest: the file was damaged after it was written.
    case damaged(path: String, part: String, reason: String)
    /// What shapes the trajectory differs between the checkpoint's run and this one: `key old → new` each.
    case changed(path: String, changes: [String])

    public var description: String {
        switch self {
        case .invalid(let path, let reason): return "\(path): \(reason)"
        case .damaged(let path, let part, let reason):
            return "\(path): \(part) \(reason): the checkpoint is damaged and was not loaded"
        case .changed(let path, let changes):
            return "\(path): cannot resume, the experiment changed what shapes the training: \(changes.joined(separator: "; "))"
                + " (resume only with the checkpoint's values, or start a new train_result_path)"
        case .missing(let path): return "\(path): no checkpoint to resume from"
        case .wouldOverwrite(let path):
            return "\(path) already holds a checkpoint: resume it (--resume) or choose another train_result_path"
        }
    }
}
