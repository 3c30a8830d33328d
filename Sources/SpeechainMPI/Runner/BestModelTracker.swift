/// SpeeChain's comparison (monitor.py `is_better`): `query` beats `target` in `mode`, the target first moved by the
/// threshold — a positive threshold is relative (target·(1 ± t)), a negative one absolute (target ± |t|).
/// NaN never beats anything.
public func speechainIsBetter(_ query: Double, than target: Double, maximize: Bool, threshold: Double = 0) -> Bool {
    var t = target
    if threshold > 0 { t *= maximize ? 1 + threshold : 1 - threshold }
    else if threshold < 0 { t += maximize ? -threshold : threshold }
    return maximize ? query > t : query < t
}

/// One best_model_selection metric as SpeeChain's ValidMonitor keeps it (`model_insert` then
/// `update_best_and_pop_worst`): the best-N list holds at most N epochs; an epoch joins while the list has room,
/// or when it beats at least one member, and then the worst member leaves. Members rank best first; ties keep the
/// order they joined in (Python's stable sort), so the later of two equal epochs is the worst. NaN ranks last.
public struct BestModelTracker: Codable, Sendable, Equatable {
    public let maximize: Bool
    public let number: Int
    /// The list, in the order the epochs joined it (SpeeChain's best_model_performance dict).
    public private(set) var members: [Measurement] = []

    public struct Measurement: Codable, Sendable, Equatable { public let epoch: Int; public let value: Double }

    /// What one `record` did to the list.
    public struct Change: Sendable, Equatable {
        public var joined = false
        /// The epoch that left the list (SpeeChain's metric_pop_flag).
        public var dropped: Int?
    }

    public init(_ selection: ModelSelection) {
        maximize = selection.mode == .max
        number = selection.number
    }

    /// The members, best first.
    public var ranked: [Measurement] {
        members.enumerated().sorted { a, b in
            let x = a.element.value, y = b.element.value
            if x.isNaN != y.isNaN { return !x.isNaN }
            if x != y && !x.isNaN { return maximize ? x > y : x < y }
            return a.offset < b.offset
        }.map(\.element)
    }

    public var best: Measurement? { ranked.first }
    public var isFull: Bool { members.count == number }

    /// The epochs of the list in increasing order (the weights to keep and to average).
    public var bestEpochs: [Int] { members.map(\.epoch).sorted() }

    /// Offers an epoch's value to the list.
    @discardableResult
    public mutating func record(epoch: Int, value: Double) -> Change {
        var change = Change()
        let joins = members.count < number || members.contains { speechainIsBetter(value, than: $0.value, maximize: maximize) }
        guard joins else { return change }
        members.removeAll { $0.epoch == epoch }   // a re-recorded epoch (SpeeChain overwrites its record)
        members.append(Measurement(epoch: epoch, value: value))
        change.joined = true
        if members.count > number, let worst = ranked.last {
            members.removeAll { $0.epoch == worst.epoch }
            change.dropped = worst.epoch
        }
        return change
    }
}

/// SpeeChain's early stopping (monitor.py): after every epoch, validated or not, the counter restarts when the
/// epoch is the best of the first best_model_selection metric *and* beats the last value that restarted it by more
/// than `early_stopping_threshold`; otherwise it grows by one (once the metric has a best at all). Training stops
/// when the counter exceeds the patience.
///
/// Differs from SpeeChain in one point: SpeeChain starts the last best at 0.0 for a maximised metric (∞ for a
/// minimised one), so a maximised metric that is never positive never restarts the counter; here the first best
/// always does.
public struct EarlyStopping: Codable, Sendable, Equatable {
    public let patience: Int?
    public let threshold: Double
    public let maximize: Bool
    public private(set) var epochsWithoutImprovement = 0
    public private(set) var lastBest: Double?

    public init(patience: Int?, threshold: Double, maximize: Bool) {
        self.patience = patience; self.threshold = threshold; self.maximize = maximize
    }

    /// These settings with the count and last best of `run` (a resumed run's).
    public init(patience: Int?, threshold: Double, maximize: Bool, continuing run: EarlyStopping) {
        self.init(patience: patience, threshold: threshold, maximize: maximize)
        epochsWithoutImprovement = run.epochsWithoutImprovement
        lastBest = run.lastBest
    }

    /// Updates the counter after `epoch` from the tracker of the first selection; true when training should stop.
    public mutating func update(epoch: Int, tracker: BestModelTracker) -> Bool {
        if let best = tracker.best {
            if best.epoch == epoch,
               lastBest.map({ speechainIsBetter(best.value, than: $0, maximize: maximize, threshold: threshold) }) ?? true {
                epochsWithoutImprovement = 0
                lastBest = best.value
            } else {
                epochsWithoutImprovement += 1
            }
        }
        return patience.map { epochsWithoutImprovement > $0 } ?? false
    }
}
