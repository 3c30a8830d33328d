import Foundation

/// A resume continues the run its checkpoint came from, or refuses with one line and touches nothing.
/// `Trainer.init` records in its state what shapes the trajectory (`describe`); `resume` then, before any
/// tensor is loaded and before `run` opens a file:
/// 1. verifies the file (`Checkpoint.open`: the CRC-32C of every tensor and of the state record),
/// 2. checks that the state record agrees with itself (`checkConsistency`) and the weights fit the model,
/// 3. compares what shapes the trajectory with this run (`changes`: every differing key, old → new),
/// 4. checks that the optimizer states fit (`Checkpoint.fit`) and the update counts follow from the schedulers
///    (`checkCounts`), and loads.
///
/// What may change, as in SpeeChain: num_epochs, early_stopping_patience/threshold, report_per_steps,
/// valid_per_epochs, last_model_number, check_consistency_every, init_weights (unused on resume), the data files'
/// paths (the data is compared by content) and the world size when batch_size × ranks stays the same (the same
/// global batches, though not bit for bit: dropout draws per rank and the sums change order).
public enum ResumeCheck {
    /// Records in `state` what a checkpoint of this run must hold for a later resume to be checked.
    public static func describe(_ experiment: Experiment, trainSet: any BatchSource, validSet: (any BatchSource)?, stepsPerEpoch: Int,
                                into state: inout CheckpointState) {
        state.stepsPerEpoch = stepsPerEpoch
        state.trajectory = trajectory(of: experiment, trainSet: trainSet, validSet: validSet)
        state.selections = experiment.bestModelSelection.map(\.description)
    }

    /// Verifies and checks the checkpoint at `url` against this run's `current` state (from `describe`), then
    /// loads it into `model` and `schedulers` and returns the state to continue from. Every refusal is one
    /// `CheckpointError` naming the file and the problem, thrown before anything is loaded.
    public static func resume(from url: URL, run current: CheckpointState, model: any Model,
                              schedulers: [OptimScheduler], rank: Int = 0) throws -> CheckpointState {
        let checkpoint = try Checkpoint.open(url)
        let saved = checkpoint.state, path = checkpoint.path
        try checkConsistency(saved, path: path)
        // another model fails on the first tensor that does not fit; then every other change is named at once
        try model.parameters.validate(checkpoint.weights, source: path)
        let changed = changes(from: saved, to: current)
        guard changed.isEmpty else { throw CheckpointError.changed(path: path, changes: changed) }
        let fitted = try Checkpoint.fit(checkpoint, model: model, schedulers: schedulers, rank: rank, world: current.worldSize)
        guard saved.stepsPerEpoch == current.stepsPerEpoch else {
            throw inconsistent(path, "it has \(saved.stepsPerEpoch) steps per epoch, the same data and global batch give \(current.stepsPerEpoch)")
        }
        try checkCounts(saved, schedulers: schedulers, path: path)
        try fitted.load()
        var state = saved
        // patience and threshold are the experiment's; the count and last best are the run's
        let stopping = current.earlyStopping
        state.earlyStopping = EarlyStopping(patience: stopping.patience, threshold: stopping.threshold, maximize: stopping.maximize,
                                            continuing: saved.earlyStopping)
        state.worldSize = current.worldSize
        state.trajectory = current.trajectory
        state.selections = current.selections
        return state
    }

    // MARK: - What shapes the trajectory

    /// One canonical text per key that changes the weights a run reaches: the seed, the data (by content), the
    /// per-rank batch and the shuffle, the model and optim_sches configs leaf by leaf, accumulation, clipping,
    /// ft_factor, mixed precision and flush_denormal. The world size is the state's own `worldSize`.
    public static func trajectory(of e: Experiment, trainSet: any BatchSource, validSet: (any BatchSource)?) -> [String: String] {
        let o = e.training
        var t: [String: String] = [
            "seed": String(e.seed), "batch_size": String(e.batchSize), "shuffle": String(e.shuffle),
            "accum_grad": String(o.accumGrad), "ft_factor": number(o.ftFactor), "grad_clip": number(o.gradClip),
            "grad_norm_type": number(o.gradNormType), "use_amp": String(o.useAMP), "flush_denormal": String(e.flushDenormal),
            "model_type": e.modelType, "data_cfg.train": trainSet.fingerprint,
        ]
        if o.useAMP {
            let s = o.scaler
            t["amp_dtype"] = o.ampDType.rawValue
            t["grad_scaler"] = "{backoff_factor: \(number(Double(s.backoffFactor))), enabled: \(s.enabled), "
                + "growth_factor: \(number(Double(s.growthFactor))), growth_interval: \(s.growthInterval), init_scale: \(number(Double(s.scale)))}"
        }
        if let validSet { t["data_cfg.valid"] = validSet.fingerprint }
        flatten(.map(e.modelConf), prefix: "model_conf", into: &t)
        flatten(.map(e.moduleConf), prefix: "module_conf", into: &t)
        flatten(.map(e.criterionConf), prefix: "criterion_conf", into: &t)
        flatten(e.optimSches, prefix: "optim_sches", into: &t)
        return t
    }

    /// Every leaf of a config tree under its dotted path (lists are leaves), so that a change names its key.
    static func flatten(_ value: ConfigValue, prefix: String, into out: inout [String: String]) {
        guard case .map(let m) = value, !m.isEmpty else { out[prefix] = text(value); return }
        for (k, v) in m { flatten(v, prefix: prefix + "." + k, into: &out) }
    }

    /// A config value as text, numbers by value (`lr: 1` and `lr: 1.0` are one).
    static func text(_ value: ConfigValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return number(d)
        case .string(let s): return s
        case .list(let l): return "[" + l.map(text).joined(separator: ", ") + "]"
        case .map(let m): return "{" + m.keys.sorted().map { "\($0): \(text(m[$0]!))" }.joined(separator: ", ") + "}"
        }
    }

    static func number(_ d: Double) -> String {
        if d.isFinite && d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    /// Every difference between the checkpoint's run and this one that a resume cannot take, as `key old → new`.
    /// The global batch (batch_size × ranks) must stay; the world size may change with it unchanged.
    public static func changes(from saved: CheckpointState, to current: CheckpointState) -> [String] {
        var out: [String] = []
        let old = saved.trajectory, new = current.trajectory
        if let ob = old["batch_size"].flatMap(Int.init), let nb = new["batch_size"].flatMap(Int.init) {
            let ow = saved.worldSize, nw = current.worldSize
            if ob * ow != nb * nw {
                if ow == nw { out.append("batch_size \(ob) → \(nb)") }
                else if ob == nb { out.append("world size \(ow) → \(nw) (global batch \(ob * ow) → \(nb * nw))") }
                else { out.append("batch_size × world size \(ob) × \(ow) → \(nb) × \(nw)") }
            }
        } else if old["batch_size"] != new["batch_size"] {
            out.append("batch_size \(old["batch_size"] ?? "(none)") → \(new["batch_size"] ?? "(none)")")
        }
        for key in Set(old.keys).union(new.keys).sorted() where key != "batch_size" && old[key] != new[key] {
            out.append("\(key) \(old[key] ?? "(none)") → \(new[key] ?? "(none)")")
        }
        if saved.selections != current.selections {
            out.append("best_model_selection \(saved.selections.joined(separator: ", ")) → \(current.selections.joined(separator: ", "))")
        }
        let shown = 8
        if out.count > shown { out = Array(out.prefix(shown)) + ["and \(out.count - shown) more"] }
        return out
    }

    // MARK: - The state record on its own

    static func inconsistent(_ path: String, _ reason: String) -> CheckpointError {
        .invalid(path: path, reason: "its \(Checkpoint.stateRecord) is inconsistent: \(reason)")
    }

    /// What a state record written by `Trainer` always satisfies: counts not negative, epochs = history entries
    /// numbered 1…epoch, step_num = epoch × steps per epoch, finite non-negative lrs and times, a valid GradScaler,
    /// trackers that replaying the history through best_model_selection reproduces, an early-stopping count within
    /// the epochs. Epoch means of losses and metrics may be NaN or infinite: a diverged epoch is a fact of the run.
    public static func checkConsistency(_ s: CheckpointState, path: String) throws {
        func fail(_ reason: String) -> CheckpointError { inconsistent(path, reason) }
        for (name, n) in [("epoch", s.epoch), ("step count", s.stepNum), ("update count", s.updates)] where n < 0 {
            throw fail("\(name) \(n) is negative")
        }
        guard s.worldSize >= 1 else { throw fail("world size \(s.worldSize)") }
        guard s.stepsPerEpoch >= 1 else { throw fail("\(s.stepsPerEpoch) steps per epoch") }
        guard s.history.count == s.epoch else { throw fail("it records \(s.epoch) epochs but its history has \(s.history.count)") }
        if let bad = s.history.enumerated().first(where: { $0.element.epoch != $0.offset + 1 }) {
            throw fail("history entry \(bad.offset + 1) is of epoch \(bad.element.epoch)")
        }
        let (steps, overflow) = s.epoch.multipliedReportingOverflow(by: s.stepsPerEpoch)
        guard !overflow, steps == s.stepNum else {
            throw fail("\(s.stepNum) steps is not \(s.epoch) epochs × \(s.stepsPerEpoch) steps per epoch")
        }
        guard s.updates <= s.stepNum else { throw fail("\(s.updates) updates in \(s.stepNum) steps") }
        for (name, c) in s.counts.sorted(by: { $0.key < $1.key }) {
            guard c.updates >= 0, c.skipped >= 0, c.allreduceCalls >= 0, c.allreduceBytes >= 0 else { throw fail("negative counts of '\(name)'") }
            guard c.skipped <= c.updates, c.updates <= s.stepNum else {
                throw fail("'\(name)' has \(c.updates) updates (\(c.skipped) skipped) in \(s.stepNum) steps")
            }
        }
        for (name, m) in s.schedulers.sorted(by: { $0.key < $1.key }) {
            guard m.step >= 0, m.step <= s.stepNum else { throw fail("optimizer step \(m.step) of '\(name)' in \(s.stepNum) steps") }
            guard m.lr.isFinite, m.lr >= 0 else { throw fail("lr \(m.lr) of '\(name)'") }
            if let g = m.scaler {
                guard g.scale.isFinite, g.scale > 0, g.growthTracker >= 0, g.growthInterval >= 1, g.growthFactor.isFinite, g.growthFactor > 1,
                      g.backoffFactor > 0, g.backoffFactor < 1 else { throw fail("the GradScaler of '\(name)' (scale \(g.scale), growth tracker \(g.growthTracker))") }
            }
        }
        for r in s.history {
            for (name, lr) in r.lr.sorted(by: { $0.key < $1.key }) where !(lr.isFinite && lr >= 0) { throw fail("epoch \(r.epoch) has lr \(lr) for '\(name)'") }
            for (name, n) in r.skipped.sorted(by: { $0.key < $1.key }) where n < 0 { throw fail("epoch \(r.epoch) has \(n) skipped updates of '\(name)'") }
            guard r.seconds.isFinite, r.seconds >= 0 else { throw fail("epoch \(r.epoch) took \(r.seconds) s") }
        }
        // the trackers are a function of the history and best_model_selection
        guard s.selections.count == s.trackers.count, !s.trackers.isEmpty else {
            throw fail("\(s.trackers.count) best-model trackers for best_model_selection \(s.selections)")
        }
        for (text, saved) in zip(s.selections, s.trackers) {
            guard let selection = selection(text) else { throw fail("best_model_selection '\(text)' cannot be read") }
            var replayed = BestModelTracker(selection)
            for r in s.history { if let v = r.value(set: selection.set, metric: selection.metric) { replayed.record(epoch: r.epoch, value: v) } }
            let same = replayed.maximize == saved.maximize && replayed.number == saved.number && replayed.members.count == saved.members.count
                && zip(replayed.members, saved.members).allSatisfy { $0.epoch == $1.epoch && $0.value.bitPattern == $1.value.bitPattern }
            guard same else { throw fail("the best models of '\(text)' (epochs \(saved.bestEpochs)) do not follow from its history (epochs \(replayed.bestEpochs))") }
        }
        let es = s.earlyStopping
        guard es.epochsWithoutImprovement >= 0, es.epochsWithoutImprovement <= s.epoch, es.threshold.isFinite, (es.patience ?? 0) >= 0 else {
            throw fail("early stopping counts \(es.epochsWithoutImprovement) epochs without improvement in \(s.epoch)")
        }
        if s.stopped {
            guard let p = es.patience, es.epochsWithoutImprovement > p else { throw fail("it stopped early without exceeding its patience") }
        }
    }

    /// `valid accuracy max 2` back to a ModelSelection.
    static func selection(_ text: String) -> ModelSelection? {
        let p = text.split(separator: " ").map(String.init)
        guard p.count == 4, let mode = ModelSelection.Mode(rawValue: p[2]), let n = Int(p[3]), n >= 1 else { return nil }
        return ModelSelection(set: p[0], metric: p[1], mode: mode, number: n)
    }

    /// The update counts a run of these schedulers makes in step_num steps (accum_grad and optim_sches are known
    /// equal by now): scheduler s updates at every multiple of accum_grad × step_per_update(s), the run counts a
    /// step once however many schedulers updated in it, and an optimizer's step is its updates less those skipped.
    public static func checkCounts(_ s: CheckpointState, schedulers: [OptimScheduler], path: String) throws {
        guard let accum = schedulers.first?.options.accumGrad, accum >= 1 else { return }
        for sch in schedulers {
            let every = accum * sch.stepPerUpdate
            let c = s.counts[sch.name] ?? .init()
            guard c.updates == s.stepNum / every else {
                throw inconsistent(path, "'\(sch.name)' made \(c.updates) updates in \(s.stepNum) steps, not one every \(every) steps")
            }
            if let m = s.schedulers[sch.name], m.step != c.updates - c.skipped {
                throw inconsistent(path, "the optimizer of '\(sch.name)' took \(m.step) steps, not its \(c.updates) updates less \(c.skipped) skipped")
            }
        }
        let periods = schedulers.map(\.stepPerUpdate)
        var updates = 0
        for real in stride(from: 1, through: s.stepNum / accum, by: 1) where periods.contains(where: { real % $0 == 0 }) { updates += 1 }
        guard s.updates == updates else { throw inconsistent(path, "\(s.updates) update steps in \(s.stepNum) steps, not \(updates)") }
    }
}
