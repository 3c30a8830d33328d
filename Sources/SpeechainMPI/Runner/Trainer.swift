import Foundation
import Logging

/// What a finished run reports; rank 0 writes it as `summary.json` under train_result_path.
public struct TrainingSummary: Codable, Sendable {
    public struct SchedulerCounts: Codable, Sendable {
        public var updates = 0
        public var skipped = 0
        public var allreduceCalls = 0
        public var allreduceBytes = 0
    }
    public var worldSize = 1
    public var steps = 0
    public var stepsPerEpoch = 0
    public var schedulers: [String: SchedulerCounts] = [:]
    public var validLoss: Float?
    public var validAccuracy: Float?
    /// FNV-1a of every rank's final parameter bytes, in rank order.
    public var parameterChecksums: [String] = []
    public var seconds = 0.0
}

/// SpeeChain's runner loop: epochs of steps (step_num counts across epochs), each OptimScheduler stepped in order
/// with the step's losses, validation per epoch without gradient work. Data-parallel over a Communicator: every rank
/// starts from rank 0's parameters, takes its own shard of each global batch, and its schedulers average gradients
/// only on update steps; rank 0 alone prints, logs and writes files, reporting losses averaged over all ranks.
/// `init` does only local work (so that bad input can be agreed on before any collective); `run` starts with the
/// collectives that make every rank start alike.
public final class Trainer {
    public let experiment: Experiment
    public let model: any Model
    public let schedulers: [OptimScheduler]
    public let communicator: Communicator
    public let timer = StepTimer()
    private let synchronizers: [GradientAllreduce?]
    private let trainSet: Dataset
    private let validSet: Dataset?
    private let output: (String) -> Void
    private let logger: Logger
    private var logFile: FileHandle?

    public init(experiment: Experiment, communicator: Communicator = LocalCommunicator(),
                output: @escaping (String) -> Void = { print($0) }) throws {
        try experiment.validate()
        self.experiment = experiment
        self.communicator = communicator
        self.output = output
        var log = Logger(label: "speechain-mpi")
        log.logLevel = communicator.isRoot ? .info : .error
        logger = log
        trainSet = try experiment.train.load()
        validSet = try experiment.valid?.load()
        model = try Models.make(type: experiment.modelType, conf: experiment.modelConf, seed: experiment.seed)
        if let path = experiment.initWeights {
            let file = try Safetensors.read(contentsOf: URL(fileURLWithPath: path))
            try model.parameters.load(file.tensors, source: path)
        }
        for set in [trainSet] + (validSet.map { [$0] } ?? []) where set.width != model.inputWidth {
            throw DataError.mismatch("the data has \(set.width) features per row but the model's input is \(model.inputWidth) wide")
        }
        let syncs: [GradientAllreduce?]
        var built = try OptimSchedulers.make(experiment.optimSches, model: model, options: experiment.training)
        if communicator.size > 1 {
            syncs = built.map { _ in GradientAllreduce(communicator: communicator) }
            for (s, sync) in zip(built, syncs) { s.synchronizer = sync }
        } else {
            syncs = built.map { _ in nil }
        }
        schedulers = built
        built = []
        synchronizers = syncs
        let local = trainSet.count / (experiment.batchSize * communicator.size)
        guard local > 0 else {
            throw DataError.mismatch("the training set has \(trainSet.count) rows, fewer than one batch of \(experiment.batchSize) per rank × \(communicator.size) ranks")
        }
        localStepsPerEpoch = local
    }

    private let localStepsPerEpoch: Int
    /// Steps per epoch, agreed by all ranks (the minimum) when the run starts.
    public private(set) var stepsPerEpoch = 0

    /// The collective start of a run: all ranks agree on the steps per epoch and take rank 0's parameters.
    private func synchronizeStart() throws {
        // Every rank trains on its own batch of batch_size rows from each global batch; all agree on the count.
        stepsPerEpoch = try communicator.allreduceMin(localStepsPerEpoch)
        // Same start everywhere: rank 0's parameters (initialised or loaded) go to every rank.
        try communicator.broadcast(model.parameters.values.pointer, count: model.parameters.count, root: 0)
    }

    private func emit(_ line: String) {
        guard communicator.isRoot else { return }
        output(line)
        logFile?.write(Data((line + "\n").utf8))
    }

    @discardableResult
    public func run() throws -> TrainingSummary {
        let started = DispatchTime.now().uptimeNanoseconds
        try synchronizeStart()
        var summary = TrainingSummary()
        summary.worldSize = communicator.size
        summary.stepsPerEpoch = stepsPerEpoch
        let exp = experiment
        var resultDir: URL?
        if let path = exp.trainResultPath, communicator.isRoot {
            let dir = URL(fileURLWithPath: path, isDirectory: true)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let log = dir.appendingPathComponent("train.log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            logFile = try FileHandle(forWritingTo: log)
            resultDir = dir
        }
        defer { try? logFile?.close(); logFile = nil }
        emit(model.description)
        for s in schedulers { emit("\(s.name): \(s.description)") }
        if communicator.size > 1 { emit("data parallel over \(communicator.size) ranks, batch \(exp.batchSize) per rank") }

        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var batch = Batch(features: [], labels: [], cols: trainSet.width)
        let context = ForwardContext(training: true)
        let b = exp.batchSize, rank = communicator.rank, world = communicator.size
        let valueCount = losses.values.count + metrics.values.count
        // running sums since the last report, and over the epoch: each value, then the number of steps
        var window = [Double](repeating: 0, count: valueCount + 1)
        var epochSums = window
        var stepNum = 0
        var updates = 0
        for epoch in 1...exp.numEpochs {
            let epochStart = DispatchTime.now().uptimeNanoseconds
            context.rng = Xoshiro256(seed: exp.seed, stream: UInt64(epoch) << 20 | UInt64(rank))
            let order = trainSet.order(epoch: epoch, seed: exp.seed, shuffle: exp.shuffle)
            for i in 0..<epochSums.count { epochSums[i] = 0 }
            for i in 0..<stepsPerEpoch {
                stepNum += 1
                if let f = exp.failure, f.rank == rank, f.step == stepNum {
                    if f.mode == .kill { kill(getpid(), SIGKILL) }
                    throw DistributedError.injected(rank: rank, step: stepNum)
                }
                let first = (i * world + rank) * b
                trainSet.fill(&batch, rows: order[first..<(first + b)])
                try timer.measure("forward_time", "model") {
                    try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
                }
                var notes = ""
                var updated = false
                for s in schedulers {
                    let report = try s.step(losses: losses, timer: timer, stepNum: stepNum, epochNum: epoch, logger: logger)
                    if report.isUpdateStep {
                        updated = true
                        summary.schedulers[s.name, default: .init()].updates += 1
                    }
                    if report.skipped {
                        summary.schedulers[s.name, default: .init()].skipped += 1
                        notes += " (\(s.name): update skipped, non-finite gradients)"
                    }
                }
                if updated {
                    updates += 1
                    if exp.checkConsistencyEvery > 0 && updates % exp.checkConsistencyEvery == 0 {
                        try checkConsistency(update: updates)
                    }
                }
                for (j, v) in (losses.values + metrics.values).enumerated() { window[j] += Double(v); epochSums[j] += Double(v) }
                window[valueCount] += 1; epochSums[valueCount] += 1
                if stepNum % exp.reportPerSteps == 0 {
                    let mean = try globalMeans(&window)
                    var line = "step \(stepNum) (epoch \(epoch)): "
                    line += zip(losses.names + metrics.names, mean).map { "\($0)=\(String(format: "%.4f", $1))" }.joined(separator: ", ")
                    for s in schedulers { line += ", lr[\(s.name)]=\(String(format: "%.6g", s.lr))" }
                    emit(line + notes)
                    for j in 0..<window.count { window[j] = 0 }
                }
            }
            summary.steps = stepNum
            let mean = try globalMeans(&epochSums)
            var line = "epoch \(epoch): train " + zip(losses.names + metrics.names, mean).map { "\($0)=\(String(format: "%.4f", $1))" }.joined(separator: " ")
            if let validSet {
                let (vl, va) = try evaluate(validSet)
                summary.validLoss = vl; summary.validAccuracy = va
                line += String(format: " | valid loss=%.4f accuracy=%.4f", vl, va)
            }
            line += String(format: " | %.3f s", Double(DispatchTime.now().uptimeNanoseconds - epochStart) * 1e-9)
            emit(line)
        }
        for (s, sync) in zip(schedulers, synchronizers) {
            summary.schedulers[s.name, default: .init()].allreduceCalls = sync?.calls ?? 0
            summary.schedulers[s.name, default: .init()].allreduceBytes = sync?.bytes ?? 0
        }
        let checksums = try communicator.allgather(Int64(bitPattern: parameterChecksum()))
        summary.parameterChecksums = checksums.map { String(UInt64(bitPattern: $0), radix: 16) }
        summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9
        if let dir = resultDir {
            let weights = dir.appendingPathComponent("model.safetensors")
            try Safetensors.write(model.parameters.namedTensors(), metadata: ["format": "pt"], to: weights)
            emit("final weights: \(weights.path)")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            let json = try encoder.encode(summary)
            try InteropFile.writeAtomically(to: dir.appendingPathComponent("summary.json")) { file in
                try json.withUnsafeBytes { try file.write($0) }
            }
        }
        return summary
    }

    /// Sums `sums` (values…, count) over ranks and returns the means; one small allreduce.
    private func globalMeans(_ sums: inout [Double]) throws -> [Double] {
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: $0.count) }
        let n = max(sums.last ?? 1, 1)
        return sums.dropLast().map { $0 / n }
    }

    /// FNV-1a over the parameter bytes: equal on two ranks iff their parameters are bit-identical (up to hash collisions).
    public func parameterChecksum() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let raw = UnsafeRawBufferPointer(start: model.parameters.values.pointer, count: model.parameters.count * 4)
        for byte in raw { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }

    private func checkConsistency(update: Int) throws {
        let all = try communicator.allgather(Int64(bitPattern: parameterChecksum()))
        guard Set(all).count == 1 else { throw DistributedError.diverged(update: update, checksums: all) }
    }

    /// Mean loss and accuracy over a data set, forward only: each rank takes every size-th batch, sums are allreduced.
    public func evaluate(_ set: Dataset) throws -> (loss: Float, accuracy: Float) {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var batch = Batch(features: [], labels: [], cols: set.width)
        let context = ForwardContext(training: false)
        let order = Array(0..<set.count)
        var sums = [0.0, 0.0, 0.0]   // loss·rows, accuracy·rows, rows
        var start = communicator.rank * experiment.batchSize
        while start < set.count {
            let end = min(start + experiment.batchSize, set.count)
            set.fill(&batch, rows: order[start..<end])
            try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
            let rows = Double(end - start)
            sums[0] += Double(losses.values[0]) * rows
            sums[1] += Double(metrics.values[0]) * rows
            sums[2] += rows
            start += experiment.batchSize * communicator.size
        }
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: 3) }
        return (Float(sums[0] / sums[2]), Float(sums[1] / sums[2]))
    }
}
