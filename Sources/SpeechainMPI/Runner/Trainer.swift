import Foundation
import Logging

/// What a finished run reports; rank 0 writes it as `summary.json` under train_result_path.
public struct TrainingSummary: Codable, Sendable {
    public struct SchedulerCounts: Codable, Sendable, Equatable {
        public var updates = 0
        public var skipped = 0
        public var allreduceCalls = 0
        public var allreduceBytes = 0
    }
    public var worldSize = 1
    /// Whether this process initialised MPI (false for a world of one started without mpirun).
    public var mpiInitialized = false
    public var steps = 0
    public var stepsPerEpoch = 0
    public var epochs = 0
    public var earlyStopped = false
    public var schedulers: [String: SchedulerCounts] = [:]
    public var validLoss: Float?
    public var validAccuracy: Float?
    /// Every loss and metric of the last validation.
    public var valid: [String: Double]?
    public var history: [EpochRecord] = []
    /// Per best_model_selection (e.g. `valid accuracy max 3`), the epochs whose weights were kept.
    public var bestEpochs: [String: [Int]] = [:]
    /// FNV-1a of every rank's final parameter bytes, in rank order.
    public var parameterChecksums: [String] = []
    public var seconds = 0.0
    /// The BLAS library, version and kernels (BLASKernels) and whether denormals were flushed.
    public var blas = ""
    public var flushDenormal = false
    /// The kernels of the float32 Linear forward and weight gradient (16–256 rows) and Conv2d forward, weight and input gradient (`Float32Kernels`).
    public var float32Kernels = ""
}

/// SpeeChain's runner: epochs of steps (step_num counts across epochs), each OptimScheduler stepped in order with
/// the step's losses, validation every valid_per_epochs epochs without gradient work, best-N and latest models,
/// early stopping, and a resumable checkpoint every epoch. Data-parallel over a Communicator: every rank starts
/// from rank 0's parameters, takes its own shard of each global batch, and its schedulers average gradients only
/// on update steps; rank 0 alone prints, logs and writes files, reporting values averaged over all ranks.
/// `init` does only local work (so that bad input can be agreed on before any collective); `run` starts with the
/// collectives that make every rank start alike.
public final class Trainer {
    public let experiment: Experiment
    public let model: any Model
    public let schedulers: [OptimScheduler]
    public let communicator: Communicator
    public let timer = StepTimer()
    private var synchronizers: [GradientAllreduce?]
    private let trainSet: any BatchSource
    private let validSet: (any BatchSource)?
    /// The batches the loading thread fills, kept across epochs (their buffers sized for the largest batch).
    private let slots = BatchSlots(count: 2)
    private let monitor: Monitor
    private let logger: Logger
    private let resultDir: URL?
    private let localStepsPerEpoch: Int
    /// The state carried across epochs (and checkpoints).
    private var state = CheckpointState()
    private let resumed: Bool
    /// Steps per epoch, agreed by all ranks (the minimum) when the run starts.
    public private(set) var stepsPerEpoch = 0

    public init(experiment: Experiment, communicator: Communicator = LocalCommunicator(),
                output: @escaping (String) -> Void = { print($0) }) throws {
        try experiment.validate()
        Denormals.setFlushed(experiment.flushDenormal)
        self.experiment = experiment
        self.communicator = communicator
        resultDir = experiment.trainResultPath.map { URL(fileURLWithPath: $0, isDirectory: true) }
        let monitor = Monitor(active: communicator.isRoot, directory: resultDir, output: output)
        self.monitor = monitor
        logger = Logger(label: "speechain-mpi") { _ in MonitorLogHandler(monitor: monitor) }
        let world = communicator.size
        trainSet = try experiment.train.makeBatches(batchSize: experiment.batchSize, shuffle: experiment.shuffle, seed: experiment.seed, world: world)
        validSet = try experiment.valid?.makeBatches(batchSize: experiment.batchSize, shuffle: false, seed: experiment.seed, world: world)
        model = try Models.make(type: experiment.modelType, conf: experiment.modelConf, moduleConf: experiment.moduleConf,
                                criterionConf: experiment.criterionConf, seed: experiment.seed)
        if let path = experiment.initWeights {
            let file = try Safetensors.read(contentsOf: URL(fileURLWithPath: path))
            try model.loadStateDict(file.tensors, source: path)
        }
        // checked here, at set-up (where all ranks agree), not when a batch first meets them
        try trainSet.check(for: model, set: "train")
        try validSet?.check(for: model, set: "valid")
        for s in experiment.bestModelSelection where !(model.lossNames + model.metricNames).contains(s.metric) {
            throw ConfigError.invalidValue(context: "experiment", key: "best_model_selection",
                reason: "names no loss or metric of the model ('\(s.metric)'); it has: \((model.lossNames + model.metricNames).joined(separator: ", "))")
        }
        let built = try OptimSchedulers.make(experiment.optimSches, model: model, options: experiment.training,
                                             order: experiment.optimSchesOrder)
        if communicator.size > 1 {
            synchronizers = built.map { _ in GradientAllreduce(communicator: communicator) }
            for (s, sync) in zip(built, synchronizers) { s.synchronizer = sync }
        } else {
            synchronizers = built.map { _ in nil }
        }
        schedulers = built
        let local = trainSet.trainingSteps(epoch: 1, rank: communicator.rank, world: world).count
        guard local > 0 else {
            throw DataError.mismatch("the training set has \(trainSet.itemCount) rows, fewer than one batch of \(experiment.batchSize) per rank × \(communicator.size) ranks")
        }
        localStepsPerEpoch = local
        state.seed = experiment.seed
        state.modelType = experiment.modelType
        state.worldSize = communicator.size
        state.trackers = experiment.bestModelSelection.map(BestModelTracker.init)
        state.earlyStopping = EarlyStopping(patience: experiment.earlyStoppingPatience, threshold: experiment.earlyStoppingThreshold,
                                            maximize: experiment.bestModelSelection[0].mode == .max)
        resumed = experiment.resume
        if let dir = resultDir {
            // what this run's checkpoints record, and what a resume must match
            ResumeCheck.describe(experiment, trainSet: trainSet, validSet: validSet, stepsPerEpoch: local, into: &state)
            let checkpoint = dir.appendingPathComponent(Checkpoint.fileName)
            let exists = FileManager.default.fileExists(atPath: checkpoint.path)
            if experiment.resume {
                guard exists else { throw CheckpointError.missing(path: checkpoint.path) }
                // verified, checked against this experiment and only then loaded; no file is touched before `run`
                state = try ResumeCheck.resume(from: checkpoint, run: state, model: model, schedulers: schedulers, rank: communicator.rank)
            } else if exists {
                // A new run never overwrites a good checkpoint.
                throw CheckpointError.wouldOverwrite(path: dir.path)
            }
        }
        if let path = experiment.trainResultPath {
            // after the checkpoint is verified (a resume touches nothing before that): the checkpoint (parameters, gradients, up to three optimizer slots) and two model files
            try ResultFolder.prepare(path, create: communicator.isRoot, neededBytes: model.parameters.count * 4 * 7)
        }
    }

    /// The collective start of a run: all ranks agree on the steps per epoch and take rank 0's parameters.
    private func synchronizeStart() throws {
        stepsPerEpoch = try communicator.allreduceMin(localStepsPerEpoch)
        reportInterval = Self.reportInterval(experiment.reportPerSteps, stepsPerEpoch: stepsPerEpoch)
        try communicator.broadcast(model.parameters.values.pointer, count: model.parameters.count, root: 0)
        try chooseGradientSum()
    }

    /// How the ranks sum gradients, for the start line ("" in a world of one).
    public private(set) var gradientSum = ""

    /// Collective (here, after set-up agreed, not in it): the gradients move into a shared-memory window per node
    /// and are summed there, and between nodes by MPI (SharedGradientWindow); with `shared_memory_allreduce: false`,
    /// nodes of different rank counts or no room in /dev/shm, by MPI_Allreduce alone.
    private func chooseGradientSum() throws {
        guard communicator.size > 1 else { return }
        guard let mpi = communicator as? MPICommunicator else { gradientSum = "allreduce"; return }
        switch try SharedGradientWindow.make(for: model.parameters, communicator: mpi, enabled: experiment.sharedMemoryAllreduce) {
        case .success(let window):
            synchronizers = schedulers.map { _ in GradientAllreduce(communicator: communicator, window: window) }
            for (s, sync) in zip(schedulers, synchronizers) { s.synchronizer = sync }
            gradientSum = window.description
        case .failure(let why):
            gradientSum = "summed by MPI_Allreduce (\(why == .disabled ? "shared_memory_allreduce: false" : why.description))"
        }
    }

    /// Steps between report lines (SpeeChain's runner): report_per_steps N > 0 is N; 0 is a tenth of the epoch;
    /// −N an N-th. Never below one step (SpeeChain divides by zero when an epoch has fewer steps than reports)
    /// nor above an epoch (SpeeChain refuses a larger N; here an epoch's end is the one report).
    public static func reportInterval(_ reportPerSteps: Int, stepsPerEpoch: Int) -> Int {
        let interval = reportPerSteps > 0 ? reportPerSteps : stepsPerEpoch / (reportPerSteps == 0 ? 10 : -reportPerSteps)
        return min(max(interval, 1), max(stepsPerEpoch, 1))
    }

    /// Steps between report lines, fixed once the steps per epoch are agreed.
    public private(set) var reportInterval = 1

    /// SpeeChain validates at epochs 1, 1 + v, 1 + 2v, …
    public static func validates(epoch: Int, every v: Int) -> Bool { (epoch - 1) % v == 0 }

    private var valueNames: [String] { model.lossNames + model.metricNames }

    @discardableResult
    public func run() throws -> TrainingSummary {
        let started = DispatchTime.now().uptimeNanoseconds
        try synchronizeStart()
        try monitor.open(resumedAtStep: resumed ? state.stepNum : nil)
        defer { monitor.close() }
        if communicator.isRoot, let dir = resultDir { removeStaleTemporaryFiles(in: dir) }
        let exp = experiment
        if resumed {
            monitor.line("resumed from \(Checkpoint.fileName): \(state.epoch) epochs and \(state.stepNum) steps done"
                         + (communicator.size > 1 ? "; gradients \(gradientSum)" : ""))
        } else {
            for note in exp.notes { monitor.line(note) }
            monitor.line("BLAS: \(BLASKernels.current()) | \(BLAS.threadCount) thread(s); denormals "
                         + (exp.flushDenormal ? "flushed to zero" : "kept (flush_denormal: false)")
                         + "; \(Float32Kernels.selectedLine)")
            if communicator.isRoot, let dir = resultDir { try writeConfigs(to: dir) }
            monitor.line(model.description)
            for s in schedulers { monitor.line("\(s.name): \(s.description)") }
            if communicator.size > 1 {
                monitor.line((exp.train.isSpeech
                    ? "data parallel over \(communicator.size) ranks, each global batch of \(trainSet) split by stride"
                    : "data parallel over \(communicator.size) ranks, batch \(exp.batchSize) per rank") + "; gradients \(gradientSum)")
            }
        }
        var epoch = state.epoch
        while epoch < exp.numEpochs && !state.stopped {
            epoch += 1
            try trainEpoch(epoch)
        }
        return try finish(started: started)
    }

    // MARK: - One epoch

    private func trainEpoch(_ epoch: Int) throws {
        let exp = experiment
        let epochStart = DispatchTime.now().uptimeNanoseconds
        let context = ForwardContext(training: true, rng: Xoshiro256(seed: exp.seed, stream: UInt64(epoch) << 20 | UInt64(communicator.rank)),
                                     amp: exp.training.autocast, epoch: epoch)
        if communicator.size > 1 {
            let comm = communicator
            context.reduce = { try comm.allreduceSum($0, count: $1) }
        }
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var reports: [StepReport] = []
        let rank = communicator.rank, world = communicator.size
        // batches loaded ahead on the loading thread; its random draws (speed perturbation) from (seed, epoch, rank)
        let loader = BatchLoader(source: trainSet, steps: Array(trainSet.trainingSteps(epoch: epoch, rank: rank, world: world).prefix(stepsPerEpoch)),
                                 slots: slots, random: BatchLoader.random(seed: exp.seed, epoch: epoch, rank: rank))
        defer { loader.finish() }
        let n = valueNames.count
        // per-step values of the current report window, rank-local until averaged at the report
        let interval = reportInterval
        var window = [Double](repeating: 0, count: interval * n)
        var pending: [StepRecord] = []
        pending.reserveCapacity(interval)
        var epochSums = [Double](repeating: 0, count: n)
        // each scheduler's lr summed over the steps of the report window and of the epoch (SpeeChain reports means)
        var lrWindow = [Double](repeating: 0, count: schedulers.count), lrEpoch = lrWindow
        var skippedInEpoch: [String: Int] = [:]
        var skippedInWindow = 0
        let timesAtEpochStart = timer.seconds
        var timesAtReport = timer.seconds
        var firstInWindow = state.stepNum + 1

        for i in 0..<stepsPerEpoch {
            state.stepNum += 1
            let stepNum = state.stepNum
            communicator.context = "step \(stepNum)"   // a small string: no allocation per step
            if let f = exp.failure, f.rank == rank, f.step == stepNum {
                switch f.mode {
                case .kill: kill(getpid(), SIGKILL)
                case .throw: throw DistributedError.injected(rank: rank, step: stepNum)
                case .perturb:   // this rank's first parameter nudged by 1e-3: a silent divergence for the consistency check
                    model.parameters.values.pointer[0] += 1e-3
                }
            }
            // the time this step waited for its batch (the loading itself runs alongside the previous step)
            guard let batch = try timer.measure("data_time", "loader", { try loader.next() }) else { break }
            try timer.measure("forward_time", "model") {
                try model.forward(batch.pointee, context: context, losses: &losses, metrics: &metrics)
            }
            var record = StepRecord(step: stepNum, epoch: epoch, values: [:])
            var updated = false
            try OptimSchedulers.step(schedulers, losses: losses, into: &reports, timer: timer, stepNum: stepNum, epochNum: epoch, logger: logger)
            for (k, (s, report)) in zip(schedulers, reports).enumerated() {
                lrWindow[k] += s.lr
                if report.isUpdateStep { updated = true; state.counts[s.name, default: .init()].updates += 1 }
                if report.skipped {
                    state.counts[s.name, default: .init()].skipped += 1
                    skippedInEpoch[s.name, default: 0] += 1
                    skippedInWindow += 1
                }
                if monitor.active {
                    if let lr = report.lr { record.lr[s.name] = lr }
                    if let g = report.gradNorm { record.gradNorm[s.name] = Double(g) }
                    if let sc = report.lossScale { record.lossScale[s.name] = Double(sc) }
                    if report.isUpdateStep { record.skipped[s.name] = report.skipped }
                }
            }
            if updated {
                state.updates += 1
                if exp.checkConsistencyEvery > 0 && state.updates % exp.checkConsistencyEvery == 0 {
                    try checkConsistency(update: state.updates)
                }
            }
            let slot = (stepNum - firstInWindow) * n
            for j in 0..<losses.values.count { window[slot + j] = Double(losses.values[j]) }
            for j in 0..<metrics.values.count { window[slot + losses.values.count + j] = Double(metrics.values[j]) }
            if monitor.active { pending.append(record) }
            monitor.progress(step: i + 1, of: stepsPerEpoch, epoch: epoch)

            let windowFull = stepNum - firstInWindow + 1 == interval
            if windowFull || i == stepsPerEpoch - 1 {
                let count = stepNum - firstInWindow + 1
                // one small allreduce per report: every step's values averaged over the ranks
                try window.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: count * n) }
                let scale = 1 / Double(world)
                for k in 0..<(count * n) { window[k] *= scale; epochSums[k % n] += window[k] }
                if monitor.active {
                    for (r, idx) in zip(pending.indices, 0..<count) {
                        for (j, name) in valueNames.enumerated() { pending[r].values[name] = window[idx * n + j] }
                    }
                    try monitor.write(pending)
                    if windowFull {
                        monitor.writeTimes(timeSplit(since: timesAtReport, steps: count), step: stepNum)
                        var line = reportLine(from: firstInWindow, to: stepNum, epoch: epoch, window: window, count: count,
                                              lrSums: lrWindow, since: timesAtReport)
                        if skippedInWindow > 0 { line += " | skipped updates \(skippedInWindow)" }
                        monitor.line(line)
                    }
                }
                skippedInWindow = 0
                for k in lrWindow.indices { lrEpoch[k] += lrWindow[k]; lrWindow[k] = 0 }
                pending.removeAll(keepingCapacity: true)
                timesAtReport = timer.seconds
                firstInWindow = stepNum + 1
            }
        }

        communicator.context = "end of epoch \(epoch)"   // validation and the early-stopping vote
        var record = EpochRecord(epoch: epoch)
        for (j, name) in valueNames.enumerated() { record.train[name] = epochSums[j] / Double(stepsPerEpoch) }
        for (k, s) in schedulers.enumerated() { record.lr[s.name] = lrEpoch[k] / Double(stepsPerEpoch) }
        record.skipped = skippedInEpoch
        if let validSet, Self.validates(epoch: epoch, every: exp.validPerEpochs) {
            record.valid = try evaluate(validSet)
        }
        record.seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) * 1e-9
        state.history.append(record)
        state.epoch = epoch
        var changes = [BestModelTracker.Change](repeating: .init(), count: state.trackers.count)
        for (k, sel) in exp.bestModelSelection.enumerated() {
            if let v = record.value(set: sel.set, metric: sel.metric) { changes[k] = state.trackers[k].record(epoch: epoch, value: v) }
        }
        // Early stopping is rank 0's decision, broadcast so that every rank stops at the same epoch.
        let stop = state.earlyStopping.update(epoch: epoch, tracker: state.trackers[0])
        if exp.earlyStoppingPatience != nil {
            var flag: Float = communicator.isRoot && stop ? 1 : 0
            try communicator.broadcast(&flag, count: 1, root: 0)
            state.stopped = flag == 1
        }
        monitor.line(epochLine(record, since: timesAtEpochStart))
        try monitor.writeEpoch(record)
        if state.stopped {
            let sel = exp.bestModelSelection[0], es = state.earlyStopping
            monitor.line("early stopping: \(sel.set) \(sel.metric) has not improved by more than the threshold \(ConfigValue.format(es.threshold)) "
                         + "for \(es.epochsWithoutImprovement) epochs, more than the patience \(es.patience ?? 0) (best at epoch \(state.trackers[0].best?.epoch ?? 0))")
        }
        let otherRanksGradients = try gatherPendingGradients()
        if communicator.isRoot { try saveEpoch(epoch, changes: changes, otherRanksGradients: otherRanksGradients) }
        try monitor.writeCurves(state.history, names: valueNames, schedulers: schedulers.map(\.name))
        // No rank starts the next epoch before rank 0's checkpoint is complete.
        try communicator.barrier()
    }

    private func reportLine(from first: Int, to last: Int, epoch: Int, window: [Double], count: Int, lrSums: [Double],
                            since: [StepTimer.Key: Double]) -> String {
        let n = valueNames.count
        var line = first == last ? "step \(last) (epoch \(epoch)): " : "step \(last) (epoch \(epoch), steps \(first)-\(last)): "
        line += valueNames.enumerated().map { j, name in
            let mean = (0..<count).map { window[$0 * n + j] }.reduce(0, +) / Double(count)
            return "\(name)=\(String(format: "%.4f", mean))"
        }.joined(separator: ", ")
        line += " | " + zip(schedulers, lrSums).map { "lr[\($0.name)]=\(String(format: "%.6g", $1 / Double(count)))" }.joined(separator: " ")
        return line + " | " + timeText(since: since, steps: count)
    }

    /// Mean milliseconds per step of each phase since `since` (optim excludes its communication).
    private func timeSplit(since: [StepTimer.Key: Double], steps: Int) -> [(phase: String, ms: Double)] {
        func delta(_ category: String) -> Double {
            timer.seconds.filter { $0.key.category == category }.map { $0.value - (since[$0.key] ?? 0) }.reduce(0, +)
        }
        let comm = delta("communication_time")
        let parts = [("data", delta("data_time")), ("forward", delta("forward_time")), ("backward", delta("loss_backward_time")),
                     ("optim", delta("optim_time") - comm), ("comm", comm)]
        return parts.map { ($0.0, $0.1 * 1000 / Double(max(steps, 1))) }
    }

    private func timeText(since: [StepTimer.Key: Double], steps: Int) -> String {
        "ms/step " + timeSplit(since: since, steps: steps).map { "\($0.phase) \(String(format: "%.3f", $0.ms))" }.joined(separator: " ")
    }

    private func epochLine(_ r: EpochRecord, since: [StepTimer.Key: Double]) -> String {
        var line = "epoch \(r.epoch): train " + valueNames.map { "\($0)=\(String(format: "%.4f", r.train[$0] ?? .nan))" }.joined(separator: " ")
        if let v = r.valid { line += " | valid " + valueNames.map { "\($0)=\(String(format: "%.4f", v[$0] ?? .nan))" }.joined(separator: " ") }
        line += " | " + schedulers.map { "lr[\($0.name)]=\(String(format: "%.6g", r.lr[$0.name] ?? .nan))" }.joined(separator: " ")
        let skipped = r.skipped.values.reduce(0, +)
        if skipped > 0 { line += " | skipped updates \(skipped)" }
        return line + " | " + timeText(since: since, steps: stepsPerEpoch) + String(format: " | %.3f s", r.seconds)
    }

    /// Gradients are accumulated on each rank and summed only on update steps, so an epoch that ends inside an
    /// accumulation window leaves a different partial sum on every rank. When any rank holds one (a non-zero
    /// gradient), rank 0 gathers them all for the checkpoint (ranks 1…W−1, in order; rank 0's is the model's own);
    /// otherwise nothing is sent. Collective: every rank calls it at the end of every epoch.
    private func gatherPendingGradients() throws -> [[Float]] {
        let world = communicator.size
        guard world > 1, resultDir != nil else { return [] }
        let grads = model.parameters.gradients, count = model.parameters.count
        let pending = Int64((0..<count).contains { grads.pointer[$0] != 0 } ? 1 : 0)
        guard try communicator.allgather(pending).contains(1) else { return [] }
        var all = communicator.isRoot ? [Float](repeating: 0, count: world * count) : []
        try all.withUnsafeMutableBufferPointer { receive in
            try communicator.gather(grads.pointer, count: count, into: receive.baseAddress, root: 0)
        }
        guard communicator.isRoot else { return [] }
        return (1..<world).map { Array(all[$0 * count..<($0 + 1) * count]) }
    }

    // MARK: - Files (rank 0)

    private var modelsDir: URL? { resultDir?.appendingPathComponent("models", isDirectory: true) }

    private func epochFile(_ epoch: Int) -> URL? { modelsDir?.appendingPathComponent("epoch_\(epoch).safetensors") }

    /// The models/ folder after an epoch (`ModelsFolderPlan`): `epoch_N`, the pointers, the averages, the
    /// checkpoint, and last the removal of epochs the plan does not keep. Files are written atomically and pointers
    /// replaced by rename, so every name resolves to a complete file at every instant.
    private func saveEpoch(_ epoch: Int, changes: [BestModelTracker.Change], otherRanksGradients: [[Float]]) throws {
        guard let dir = resultDir, let models = modelsDir, let file = epochFile(epoch) else { return }
        var state = self.state
        state.counts = countsSoFar()
        try ResultFolder.makeDirectory(models)
        try Safetensors.write(model.stateDict, metadata: ["format": "pt", "epoch": "\(epoch)"], to: file)
        let plan = ModelsFolderPlan.after(epoch: epoch, selections: experiment.bestModelSelection, trackers: state.trackers,
                                          changes: changes, lastModelNumber: experiment.lastModelNumber)
        for (name, e) in plan.pointers.sorted(by: { $0.key < $1.key }) { try ModelPointer.point(name, to: e, in: models) }
        for (name, epochs) in plan.averages.sorted(by: { $0.key < $1.key }) { try writeAverage(of: epochs, named: name, in: models) }
        let hook: (() -> Void)? = experiment.killDuringCheckpointOfEpoch == epoch ? { kill(getpid(), SIGKILL) } : nil
        try Checkpoint.write(state, model: model, schedulers: schedulers, otherRanksGradients: otherRanksGradients,
                             to: dir.appendingPathComponent(Checkpoint.fileName), midWrite: hook)
        removeEpochFiles(except: plan.keep, in: models)
    }

    private func writeAverage(of epochs: [Int], named name: String, in models: URL) throws {
        let average = try averageWeights(epochs.compactMap(epochFile))
        try Safetensors.write(average, metadata: ["format": "pt", "epochs": epochs.map(String.init).joined(separator: ",")],
                              to: models.appendingPathComponent("\(name).safetensors"))
    }

    /// Writes the resolved configs into the result folder as SpeeChain does: `exp_cfg.yaml` (every experiment
    /// key with its value in effect), `train_cfg.yaml` and `train_data_cfg.yaml`.
    private func writeConfigs(to dir: URL) throws {
        try ResultFolder.makeDirectory(dir)
        let files: [(String, [String: ConfigValue])] = [
            ("exp_cfg.yaml", experiment.effectiveKeys), ("train_cfg.yaml", experiment.trainConfig), ("train_data_cfg.yaml", experiment.dataConfig),
        ]
        for (name, tree) in files {
            try InteropFile.writeAtomically(Data(ConfigValue.map(tree).yaml.utf8), to: dir.appendingPathComponent(name))
        }
    }

    private func removeEpochFiles(except keep: Set<Int>, in models: URL) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: models.path)) ?? [] {
            guard name.hasPrefix("epoch_"), name.hasSuffix(".safetensors"),
                  let e = Int(name.dropFirst("epoch_".count).dropLast(".safetensors".count)), !keep.contains(e) else { continue }
            try? FileManager.default.removeItem(at: models.appendingPathComponent(name))
        }
    }

    /// Element-wise mean of weight files (accumulated in Double, in the order given, then rounded to Float).
    /// Counters (a BatchNorm's `num_batches_tracked`, a normalisation's `global_batch`) are not averaged: the
    /// average keeps the last file's count. (SpeeChain, after ESPnet, skips the division for integer tensors and
    /// so stores the sum of the counts.)
    func averageWeights(_ files: [URL]) throws -> [NamedTensor] {
        var sums: [String: [Double]] = [:]
        var first: [NamedTensor] = [], last: [String: [Float]] = [:]
        for url in files {
            let tensors = try Safetensors.read(contentsOf: url).tensors
            if first.isEmpty { first = tensors }
            for t in tensors {
                var acc = sums[t.name] ?? [Double](repeating: 0, count: t.values.count)
                for i in t.values.indices { acc[i] += Double(t.values[i]) }
                sums[t.name] = acc
                last[t.name] = t.values
            }
        }
        let k = Double(files.count)
        return first.map { t in
            if Self.isCounter(t.name) { return NamedTensor(name: t.name, shape: t.shape, values: last[t.name] ?? t.values) }
            return NamedTensor(name: t.name, shape: t.shape, values: (sums[t.name] ?? []).map { Float($0 / k) })
        }
    }

    static func isCounter(_ name: String) -> Bool { name.hasSuffix("num_batches_tracked") || name.hasSuffix("global_batch") }

    /// Temporary files of atomic writes interrupted by a kill.
    private func removeStaleTemporaryFiles(in dir: URL) {
        for folder in [dir, dir.appendingPathComponent("models"), dir.appendingPathComponent("figures")] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
        }
    }

    /// Update and skip counts with the allreduces of this process added to those of the runs before a resume.
    private func countsSoFar() -> [String: TrainingSummary.SchedulerCounts] {
        var counts = state.counts
        for (s, sync) in zip(schedulers, synchronizers) {
            counts[s.name, default: .init()].allreduceCalls += sync?.calls ?? 0
            counts[s.name, default: .init()].allreduceBytes += sync?.bytes ?? 0
        }
        return counts
    }

    // MARK: - End

    private func finish(started: UInt64) throws -> TrainingSummary {
        var summary = TrainingSummary()
        summary.worldSize = communicator.size
        summary.mpiInitialized = MPICommunicator.isInitialized
        summary.stepsPerEpoch = stepsPerEpoch
        summary.steps = state.stepNum
        summary.epochs = state.epoch
        summary.earlyStopped = state.stopped
        summary.history = state.history
        summary.blas = BLASKernels.current().description
        summary.float32Kernels = Float32Kernels.selectedName
        summary.flushDenormal = Denormals.flushed
        summary.schedulers = countsSoFar()
        if let last = state.history.last(where: { $0.valid != nil })?.valid {
            summary.valid = last
            summary.validLoss = last["loss"].map { Float($0) }
            summary.validAccuracy = last["accuracy"].map { Float($0) }
        }
        for (k, sel) in experiment.bestModelSelection.enumerated() { summary.bestEpochs[sel.description] = state.trackers[k].bestEpochs }
        let checksums = try communicator.allgather(Int64(bitPattern: parameterChecksum()))
        summary.parameterChecksums = checksums.map { String(UInt64(bitPattern: $0), radix: 16) }
        // the last consistency check (check_consistency_every 0 checks only here): diverged replicas are no result
        guard Set(checksums).count == 1 else { throw DistributedError.diverged(update: state.updates, checksums: checksums) }
        summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9
        if communicator.isRoot, let dir = resultDir {
            let weights = dir.appendingPathComponent("model.safetensors")
            try Safetensors.write(model.stateDict, metadata: ["format": "pt"], to: weights)
            monitor.line("final weights: \(weights.path)")
            try InteropFile.writeAtomically(JSONCoding.encoder(snakeCase: true, pretty: true).encode(summary),
                                            to: dir.appendingPathComponent("summary.json"))
        }
        return summary
    }

    /// FNV-1a over the parameter bytes: equal on two ranks iff their parameters are bit-identical (up to hash collisions).
    public func parameterChecksum() -> UInt64 {
        FNV1a.hash(UnsafeRawBufferPointer(start: model.parameters.values.pointer, count: model.parameters.count * 4))
    }

    private func checkConsistency(update: Int) throws {
        let all = try communicator.allgather(Int64(bitPattern: parameterChecksum()))
        guard Set(all).count == 1 else { throw DistributedError.diverged(update: update, checksums: all) }
    }

    /// Every loss and metric of the model averaged over a data set (weighted by items: rows or utterances),
    /// forward only and in float32 even under use_amp: each rank takes its share of the batches, the sums are
    /// allreduced.
    /// Rank 0's buffers (BatchNorm running statistics) copied to every rank, as DDP's `broadcast_buffers` keeps
    /// them: evaluation then sees the model rank 0 saves, whichever rank evaluates a batch.
    func shareRootBuffers() throws {
        let buffers = model.bufferTensors
        guard communicator.size > 1, !buffers.isEmpty else { return }
        var flat = buffers.flatMap(\.values)
        try flat.withUnsafeMutableBufferPointer { try communicator.broadcast($0.baseAddress!, count: $0.count, root: 0) }
        var offset = 0
        let shared = buffers.map { t in
            defer { offset += t.values.count }
            return NamedTensor(name: t.name, shape: t.shape, values: Array(flat[offset..<offset + t.values.count]))
        }
        try model.loadBuffers(shared, source: "rank 0's buffers")
    }

    public func evaluate(_ set: any BatchSource) throws -> [String: Double] {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        // float32 like SpeeChain, which validates outside autocast "for accurate validation"
        let context = ForwardContext(training: false, amp: nil)
        try shareRootBuffers()
        let n = valueNames.count
        var sums = [Double](repeating: 0, count: n + 1)   // value·items per name, then items
        let steps = set.evaluationSteps(rank: communicator.rank, world: communicator.size)
        let loader = BatchLoader(source: set, steps: steps, slots: slots, random: Xoshiro256(seed: experiment.seed, stream: 0xE7A1))
        defer { loader.finish() }
        var k = 0
        while let batch = try loader.next() {
            try model.forward(batch.pointee, context: context, losses: &losses, metrics: &metrics)
            let items = Double(steps[k].count)
            k += 1
            for (j, v) in (losses.values + metrics.values).enumerated() { sums[j] += Double(v) * items }
            sums[n] += items
        }
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: n + 1) }
        return Dictionary(uniqueKeysWithValues: valueNames.enumerated().map { ($1, sums[$0] / sums[n]) })
    }
}
