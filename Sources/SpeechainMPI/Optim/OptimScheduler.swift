import Logging

/// Experiment-level settings every OptimScheduler of a run shares (SpeeChain passes them from the runner).
public struct TrainingOptions: Sendable, Equatable {
    public var accumGrad = 1
    public var ftFactor = 1.0
    public var gradClip = 1.0
    public var gradNormType = 2.0
    public var useAMP = false
    /// What use_amp computes in (SpeeChain's `amp_dtype`): float16 (torch.cuda.amp's default) or bfloat16.
    /// Master weights, optimizer state and accumulated gradients stay float32 either way.
    public var ampDType: ReducedPrecision = .float16
    /// The loss scaler under use_amp; `scaler.enabled = false` trains without loss scaling (torch's
    /// `GradScaler(enabled=False)`, the usual choice with bfloat16, whose range is float32's).
    public var scaler = GradScaler()
    public init(accumGrad: Int = 1, ftFactor: Double = 1, gradClip: Double = 1, gradNormType: Double = 2, useAMP: Bool = false,
                ampDType: ReducedPrecision = .float16) {
        self.accumGrad = accumGrad; self.ftFactor = ftFactor; self.gradClip = gradClip
        self.gradNormType = gradNormType; self.useAMP = useAMP; self.ampDType = ampDType
    }

    /// The precision forwards run in (the runner's `ForwardContext.amp`): ampDType under use_amp, nil (float32) otherwise.
    public var autocast: ReducedPrecision? { useAMP ? ampDType : nil }
}

/// What one `step` did, for the monitor and the tests.
public struct StepReport: Sendable, Equatable {
    public var realStep = 0
    /// The loss was back-propagated (real_step % step_per_update == 0).
    public var didBackward = false
    /// This was an update step (step_num % accum_grad == 0) of a backward step.
    public var isUpdateStep = false
    /// The update was skipped because the gradients were not finite.
    public var skipped = false
    public var gradNorm: Float?
    /// How many of the gradient values in gradNorm had their squares summed in the backward (GradientNormTally)
    /// instead of in the norm's pass.
    public var gradNormRecordedValues = 0
    public var lr: Double?
    /// The loss scale used for this step's backward (AMP only).
    public var lossScale: Float?
}

/// The state of one OptimScheduler a checkpoint keeps (SpeeChain's `state_dict`: optimizer and scaler).
public struct OptimSchedulerState: Codable, Equatable, Sendable {
    public var optimizer: OptimizerState
    public var scaler: GradScaler?
}

/// SpeeChain's OptimScheduler: one optimizer, one lr schedule, gradient accumulation, clipping, the AMP scaler and
/// the choice of which loss (`optim_loss`) updates which first-level modules (`updated_modules`) how often
/// (`step_per_update`). On step_num: real_step = (step_num − 1)/accum_grad + 1; when real_step % step_per_update == 0
/// the loss/accum_grad (×scale) is back-propagated and lr = ft_factor·update_lr(real_step, epoch) is set; when also
/// step_num % accum_grad == 0 the gradients are synchronised, unscaled, clipped, checked, applied and zeroed.
public final class OptimScheduler: CustomStringConvertible {
    public let name: String
    public let optimType: String
    public let optimizer: any Optimizer
    public let schedule: any LRSchedule
    public let model: any Model
    public let optimLoss: String
    /// First-level modules this scheduler updates; nil = the whole model.
    public let updatedModules: [String]?
    public let stepPerUpdate: Int
    public let options: TrainingOptions
    public private(set) var scaler: GradScaler?
    public var synchronizer: GradientSynchronizer?
    /// The flat ranges of the parameters this scheduler updates (contiguous modules merged).
    public let ranges: [Range<Int>]
    private let backwardModules: [String]

    public static let ownKeys = ["optim_type", "optim_conf", "optim_loss", "updated_modules", "step_per_update"]

    /// Builds from SpeeChain's `{type, conf}`: conf holds optim_type, optim_conf, optim_loss, updated_modules,
    /// step_per_update and the schedule's own keys.
    public init(name: String = "main", type: String, conf: [String: ConfigValue], model: any Model,
                options: TrainingOptions, synchronizer: GradientSynchronizer? = nil) throws {
        let scheduleType = try LRSchedules.type(named: type)
        let context = "optim_sches '\(name)' (\(type))"
        let reader = try ConfReader(conf, context: context, allowedKeys: Self.ownKeys + scheduleType.confKeys)
        guard options.accumGrad >= 1 else {
            throw ConfigError.invalidValue(context: "experiment", key: "accum_grad", reason: "must be >= 1, found \(options.accumGrad)")
        }
        guard options.gradNormType > 0 else {
            throw ConfigError.invalidValue(context: "experiment", key: "grad_norm_type", reason: "must be > 0 (or inf), found \(options.gradNormType)")
        }
        guard options.ftFactor > 0, options.ftFactor.isFinite else {
            throw ConfigError.invalidValue(context: "experiment", key: "ft_factor", reason: "must be a positive number, found \(options.ftFactor)")
        }
        guard reader.contains("optim_type") else { throw ConfigError.missing(context: context, key: "optim_type") }
        optimType = try reader.string("optim_type", default: "")
        var optimConf: [String: ConfigValue] = [:]
        switch conf["optim_conf"] {
        case nil, .null?: break
        case .map(let m)?: optimConf = m
        case let other?: throw ConfigError.wrongType(context: context, key: "optim_conf", expected: "a mapping", found: other)
        }
        optimLoss = try reader.string("optim_loss", default: "loss")
        guard model.lossNames.contains(optimLoss) else {
            throw ConfigError.invalidValue(context: context, key: "optim_loss",
                reason: "names no loss of the model ('\(optimLoss)'); the model computes: \(model.lossNames.joined(separator: ", "))")
        }
        updatedModules = try reader.optionalStringList("updated_modules")
        if let mods = updatedModules {
            guard !mods.isEmpty else { throw ConfigError.invalidValue(context: context, key: "updated_modules", reason: "is empty") }
            for m in mods where !model.moduleNames.contains(m) {
                throw ConfigError.invalidValue(context: context, key: "updated_modules",
                    reason: "names no module of the model ('\(m)'); the model has: \(model.moduleNames.joined(separator: ", "))")
            }
            guard Set(mods).count == mods.count else {
                throw ConfigError.invalidValue(context: context, key: "updated_modules", reason: "lists a module twice: \(mods)")
            }
        }
        stepPerUpdate = try reader.int("step_per_update", default: 1)
        guard stepPerUpdate >= 1 else {
            throw ConfigError.invalidValue(context: context, key: "step_per_update", reason: "must be >= 1, found \(stepPerUpdate)")
        }
        self.name = name
        self.model = model
        self.options = options
        self.synchronizer = synchronizer
        backwardModules = updatedModules ?? model.moduleNames
        ranges = model.parameters.ranges(ofModules: updatedModules)
        let count = ranges.reduce(0) { $0 + $1.count }
        optimizer = try Optimizers.make(type: optimType, conf: optimConf, parameterCount: count, owner: name)
        let scheduleConf = conf.filter { !Self.ownKeys.contains($0.key) }
        schedule = try scheduleType.init(
            conf: try ConfReader(scheduleConf, context: context, allowedKeys: scheduleType.confKeys),
            baseLR: optimizer.lr)
        scaler = options.useAMP ? options.scaler : nil
    }

    /// SpeeChain's `update_lr`: the schedule's lr for this real step and epoch (before ft_factor).
    public func updateLR(realStep: Int, epochNum: Int) -> Double { schedule.lr(realStep: realStep, epoch: epochNum) }

    /// SpeeChain's `get_lr`: the lr the optimizer holds now.
    public var lr: Double { optimizer.lr }

    /// SpeeChain's `step`: see the type's documentation for the order of events. With several OptimSchedulers use
    /// `OptimSchedulers.step`, which back-propagates every loss before any scheduler changes a parameter.
    @discardableResult
    public func step(losses: NamedValues, timer: StepTimer? = nil, optimName: String? = nil,
                     stepNum: Int, epochNum: Int, logger: Logger? = nil) throws -> StepReport {
        var report = try backward(losses: losses, timer: timer, optimName: optimName, stepNum: stepNum)
        try update(&report, timer: timer, optimName: optimName, stepNum: stepNum, epochNum: epochNum, logger: logger)
        return report
    }

    /// The first half of `step`: when real_step % step_per_update == 0, back-propagates optim_loss / accum_grad
    /// (× the loss scale) into the gradients of the updated modules, at the parameters the forward used.
    public func backward(losses: NamedValues, timer: StepTimer? = nil, optimName: String? = nil, stepNum: Int) throws -> StepReport {
        precondition(stepNum >= 1)
        let label = optimName ?? name
        var report = StepReport()
        report.realStep = (stepNum - 1) / options.accumGrad + 1
        guard report.realStep % stepPerUpdate == 0 else { return report }
        report.didBackward = true
        let lossScale = scaler?.lossScale ?? 1
        if scaler != nil { report.lossScale = lossScale }
        // Before an update whose norm is of the gradients as this backward leaves them, the layers that can record
        // their gradients' Σ g² as they write them do (GradientNormTally).
        let tally = model.parameters.normTally
        if stepNum % options.accumGrad == 0, normFromTally {
            tally.forget(ranges)
            tally.recording = true
        }
        defer { tally.recording = false }
        try measure(timer, "loss_backward_time", label) {
            try model.backward(loss: optimLoss, seed: lossScale / Float(options.accumGrad), modules: backwardModules)
        }
        return report
    }

    /// The second half of `step`: sets lr = ft_factor·update_lr(real_step, epoch) and, when step_num % accum_grad
    /// == 0, synchronises, unscales, clips, checks, applies and zeroes the gradients of the updated modules.
    public func update(_ report: inout StepReport, timer: StepTimer? = nil, optimName: String? = nil,
                       stepNum: Int, epochNum: Int, logger: Logger? = nil) throws {
        precondition(stepNum >= 1 && epochNum >= 1)
        guard report.didBackward else { return }
        let label = optimName ?? name
        let accum = options.accumGrad
        let params = model.parameters
        let realStep = report.realStep
        try measure(timer, "optim_time", label) {
            let lr = options.ftFactor * updateLR(realStep: realStep, epochNum: epochNum)
            optimizer.lr = lr
            report.lr = lr
            guard stepNum % accum == 0 else { return }
            report.isUpdateStep = true
            let grads = params.gradients.pointer
            // The allreduce leaves a sum; its 1/world size rides along in the next pass over the gradients.
            var pending: Float = 1
            if let synchronizer {
                try measure(timer, "communication_time", label) { try synchronizer.synchronize(grads, ranges: ranges) }
                pending = synchronizer.averagingFactor
            }
            var foundInf = false
            if let scaler, scaler.enabled {
                foundInf = scaler.unscale(grads, ranges: ranges, factor: pending)
                pending = 1
            }
            // The clipping coefficient rides along too: the optimizer's pass sees g·(coef·pending), as a clipping
            // pass would have left it, and zeroes each gradient as it reads it.
            // The norm's Σ g² of what the backward recorded, and a pass over the rest (all of it without records).
            let tally = params.normTally
            let recorded = normFromTally ? tally.take(ranges) : (sumOfSquares: 0, values: 0, rest: ranges)
            if !normFromTally { tally.forget(ranges) }
            report.gradNormRecordedValues = recorded.values
            var (norm, clipScale): (Float, Float?) = (0, nil)
            measure(timer, "grad_norm_time", label) {
                (norm, clipScale) = GradientClipping.measure(grads, ranges: recorded.rest, maxNorm: options.gradClip,
                                                             normType: options.gradNormType, factor: pending,
                                                             recordedSumOfSquares: recorded.sumOfSquares)
            }
            if let clipScale { pending = clipScale }
            report.gradNorm = norm
            if foundInf || !norm.isFinite {
                report.skipped = true
                logger?.info("The grad_norm in the no.\(realStep) real step is infinite! So, the parameters are not updated in this step.")
                params.zeroGradients(ranges)
            } else {
                optimizer.step(parameters: params.values.pointer, gradients: grads, ranges: ranges, gradientScale: pending,
                               zeroingGradients: true)
            }
            scaler?.update(foundInf: report.skipped)
        }
    }

    /// Whether the update's norm may use Σ g² recorded in the backward (GradientNormTally): the 2-norm of gradients
    /// that nothing changes between the backward and the norm — no allreduce, no GradScaler unscaling.
    private var normFromTally: Bool {
        options.gradNormType == 2 && synchronizer == nil && !(scaler?.enabled ?? false)
    }

    @inline(__always)
    private func measure(_ timer: StepTimer?, _ category: String, _ label: String, _ body: () throws -> Void) rethrows {
        if let timer { try timer.measure(category, label, body) } else { try body() }
    }

    /// Replaces the GradScaler settings and state (use_amp only).
    public func loadScaler(_ newScaler: GradScaler) {
        if scaler != nil { scaler = newScaler }
    }

    public func stateDict() -> OptimSchedulerState {
        OptimSchedulerState(optimizer: optimizer.stateDict(), scaler: scaler)
    }

    /// Checks that a state fits this scheduler (optimizer type and sizes, scaler presence) without loading it.
    public func validateState(_ state: OptimSchedulerState) throws {
        try optimizer.validateStateDict(state.optimizer)
        switch (scaler, state.scaler) {
        case (nil, .some): throw OptimError.badState("'\(name)': the checkpoint has a GradScaler but use_amp is off")
        case (.some, nil): throw OptimError.badState("'\(name)': use_amp is on but the checkpoint has no GradScaler")
        default: break
        }
    }

    public func loadStateDict(_ state: OptimSchedulerState) throws {
        try validateState(state)
        try optimizer.loadStateDict(state.optimizer)
        if let s = state.scaler { scaler = s }
    }

    public var description: String {
        let mods = updatedModules.map { "[" + $0.map { "'\($0)'" }.joined(separator: ", ") + "]" } ?? "None"
        return "\(type(of: schedule).className)(optimizer=\(optimType), optim_loss=\(optimLoss), updated_modules=\(mods), \(schedule.reprFields))"
    }
}

/// Builds the OptimSchedulers of `optim_sches` in SpeeChain's two shapes — one `{type, conf}` (named `main`) or
/// several named ones, in `order` (the config file's; names it does not list follow in sorted order) — and
/// rejects overlapping updated_modules.
public enum OptimSchedulers {
    public static func make(_ value: ConfigValue, model: any Model, options: TrainingOptions, order: [String] = [],
                            synchronizer: GradientSynchronizer? = nil) throws -> [OptimScheduler] {
        guard case .map(let top) = value else {
            throw ConfigError.wrongType(context: "train_cfg", key: "optim_sches", expected: "a mapping", found: value)
        }
        var entries: [(String, [String: ConfigValue])] = []
        if top["type"] != nil {
            entries = [("main", top)]
        } else {
            let listed = order.filter { top[$0] != nil }
            for name in listed + top.keys.sorted().filter({ !listed.contains($0) }) {
                guard case .map(let m)? = top[name] else {
                    throw ConfigError.wrongType(context: "optim_sches", key: name, expected: "a mapping with type and conf", found: top[name]!)
                }
                entries.append((name, m))
            }
        }
        guard !entries.isEmpty else { throw ConfigError.invalidValue(context: "train_cfg", key: "optim_sches", reason: "is empty") }
        var result: [OptimScheduler] = []
        for (name, entry) in entries {
            let ctx = name == "main" && top["type"] != nil ? "optim_sches" : "optim_sches.\(name)"
            for key in entry.keys.sorted() where key != "type" && key != "conf" {
                throw ConfigError.unknownKey(context: ctx, key: key, valid: ["type", "conf"])
            }
            guard case .string(let type)? = entry["type"] else { throw ConfigError.missing(context: ctx, key: "type") }
            var conf: [String: ConfigValue] = [:]
            switch entry["conf"] {
            case nil, .null?: break
            case .map(let m)?: conf = m
            case let other?: throw ConfigError.wrongType(context: ctx, key: "conf", expected: "a mapping", found: other)
            }
            result.append(try OptimScheduler(name: name, type: type, conf: conf, model: model, options: options, synchronizer: synchronizer))
        }
        try checkDisjoint(result)
        return result
    }

    /// One training step of several OptimSchedulers, in their order: every scheduler back-propagates first, then
    /// each updates. So every gradient of the step is taken at the parameters the forward used (as PyTorch's
    /// autograd does), whatever the schedulers' names or order; their updated_modules are disjoint.
    /// `reports` is reused (one per scheduler), so that a warm step allocates nothing.
    public static func step(_ schedulers: [OptimScheduler], losses: NamedValues, into reports: inout [StepReport],
                            timer: StepTimer? = nil, stepNum: Int, epochNum: Int, logger: Logger? = nil) throws {
        if reports.count != schedulers.count { reports = [StepReport](repeating: StepReport(), count: schedulers.count) }
        for (i, s) in schedulers.enumerated() { reports[i] = try s.backward(losses: losses, timer: timer, stepNum: stepNum) }
        for (i, s) in schedulers.enumerated() {
            try s.update(&reports[i], timer: timer, stepNum: stepNum, epochNum: epochNum, logger: logger)
        }
    }

    /// `step(_:losses:into:…)` with a new array of reports.
    public static func step(_ schedulers: [OptimScheduler], losses: NamedValues, timer: StepTimer? = nil,
                            stepNum: Int, epochNum: Int, logger: Logger? = nil) throws -> [StepReport] {
        var reports: [StepReport] = []
        try step(schedulers, losses: losses, into: &reports, timer: timer, stepNum: stepNum, epochNum: epochNum, logger: logger)
        return reports
    }

    /// Two schedulers may not update the same module; `updated_modules: None` means every module.
    public static func checkDisjoint(_ schedulers: [OptimScheduler]) throws {
        for i in schedulers.indices {
            for j in schedulers.indices where j > i {
                let a = schedulers[i], b = schedulers[j]
                let shared = Set(a.updatedModules ?? a.model.moduleNames).intersection(b.updatedModules ?? b.model.moduleNames)
                if !shared.isEmpty {
                    throw ConfigError.conflict("optim_sches '\(a.name)' and '\(b.name)' both update \(shared.sorted().joined(separator: ", "))"
                        + (a.updatedModules == nil || b.updatedModules == nil ? " (updated_modules unset means the whole model)" : "")
                        + "; each module may be updated by one OptimScheduler only")
                }
            }
        }
    }
}
