import Foundation
import Logging

/// What a finished run reports.
public struct TrainingSummary: Sendable {
    public var steps = 0
    public var updates = 0
    public var skippedUpdates = 0
    public var lastTrainLoss: Float = .nan
    public var validLoss: Float?
    public var validAccuracy: Float?
}

/// SpeeChain's runner loop in its first form: epochs of steps (step_num counts across epochs), each
/// OptimScheduler stepped in order with the step's losses, a validation pass per epoch without gradient work,
/// and rank 0 printing a line per report_per_steps steps and an epoch summary.
public final class Trainer {
    public let experiment: Experiment
    public let model: any Model
    public let schedulers: [OptimScheduler]
    public let communicator: Communicator
    public let timer = StepTimer()
    private let trainSet: Dataset
    private let validSet: Dataset?
    private let emit: (String) -> Void
    private let logger: Logger

    public init(experiment: Experiment, communicator: Communicator = LocalCommunicator(),
                emit: @escaping (String) -> Void = { print($0) }) throws {
        try experiment.validate()
        self.experiment = experiment
        self.communicator = communicator
        self.emit = communicator.isRoot ? emit : { _ in }
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
        schedulers = try OptimSchedulers.make(experiment.optimSches, model: model, options: experiment.training)
        guard trainSet.count >= experiment.batchSize * communicator.size else {
            throw DataError.mismatch("the training set has \(trainSet.count) rows, fewer than one batch of \(experiment.batchSize) per rank × \(communicator.size) ranks")
        }
    }

    /// Steps per epoch: every rank takes its own batch of batch_size rows from each global batch (drop-last).
    public var stepsPerEpoch: Int { trainSet.count / (experiment.batchSize * communicator.size) }

    @discardableResult
    public func run() throws -> TrainingSummary {
        var summary = TrainingSummary()
        let exp = experiment
        emit(model.description)
        for s in schedulers { emit("\(s.name): \(s.description)") }
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var batch = Batch(features: [], labels: [], cols: trainSet.width)
        let context = ForwardContext(training: true)
        let b = exp.batchSize, rank = communicator.rank, world = communicator.size
        var stepNum = 0
        for epoch in 1...exp.numEpochs {
            let start = DispatchTime.now().uptimeNanoseconds
            context.rng = Xoshiro256(seed: exp.seed, stream: UInt64(epoch) << 20 | UInt64(rank))
            let order = trainSet.order(epoch: epoch, seed: exp.seed, shuffle: exp.shuffle)
            var epochLoss = 0.0, epochAccuracy = 0.0
            for i in 0..<stepsPerEpoch {
                stepNum += 1
                let first = (i * world + rank) * b
                trainSet.fill(&batch, rows: order[first..<(first + b)])
                try timer.measure("forward_time", "model") {
                    try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
                }
                var line = "step \(stepNum) (epoch \(epoch)): \(losses), \(metrics)"
                for s in schedulers {
                    let report = try s.step(losses: losses, timer: timer, stepNum: stepNum, epochNum: epoch, logger: logger)
                    if report.isUpdateStep { summary.updates += 1 }
                    if report.skipped { summary.skippedUpdates += 1 }
                    line += ", lr[\(s.name)]=\(String(format: "%.6g", s.lr))"
                    if report.skipped { line += " (update skipped: non-finite gradients)" }
                }
                epochLoss += Double(losses.values[0]); epochAccuracy += Double(metrics.values[0])
                summary.lastTrainLoss = losses.values[0]
                if stepNum % exp.reportPerSteps == 0 { emit(line) }
            }
            summary.steps = stepNum
            let n = Double(stepsPerEpoch)
            var epochLine = String(format: "epoch %d: train loss=%.4f accuracy=%.4f", epoch, epochLoss / n, epochAccuracy / n)
            if let validSet {
                let (vl, va) = try evaluate(validSet)
                summary.validLoss = vl; summary.validAccuracy = va
                epochLine += String(format: " | valid loss=%.4f accuracy=%.4f", vl, va)
            }
            epochLine += String(format: " | %.2f s", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
            emit(epochLine)
        }
        if let path = exp.trainResultPath, communicator.isRoot {
            let dir = URL(fileURLWithPath: path, isDirectory: true)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let file = dir.appendingPathComponent("model.safetensors")
            try Safetensors.write(model.parameters.namedTensors(), metadata: ["format": "pt"], to: file)
            emit("final weights: \(file.path)")
        }
        return summary
    }

    /// Mean loss and accuracy over a data set, forward only, weighted by batch size.
    public func evaluate(_ set: Dataset) throws -> (loss: Float, accuracy: Float) {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var batch = Batch(features: [], labels: [], cols: set.width)
        let context = ForwardContext(training: false)
        let order = Array(0..<set.count)
        var totalLoss = 0.0, totalAccuracy = 0.0
        var start = 0
        while start < set.count {
            let end = min(start + experiment.batchSize, set.count)
            set.fill(&batch, rows: order[start..<end])
            try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
            totalLoss += Double(losses.values[0]) * Double(end - start)
            totalAccuracy += Double(metrics.values[0]) * Double(end - start)
            start = end
        }
        return (Float(totalLoss / Double(set.count)), Float(totalAccuracy / Double(set.count)))
    }
}
