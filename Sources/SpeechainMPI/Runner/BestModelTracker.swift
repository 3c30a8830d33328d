/// Follows one best_model_selection metric over the epochs it was measured in: the N best epochs (ties go to the
/// earlier epoch) and how many measurements have passed since the best improved (for early stopping).
public struct BestModelTracker: Codable, Sendable, Equatable {
    public let maximize: Bool
    public let number: Int
    /// (epoch, value) of every measurement, in order.
    public private(set) var measurements: [Measurement] = []
    public private(set) var sinceImprovement = 0

    public struct Measurement: Codable, Sendable, Equatable { public let epoch: Int; public let value: Double }

    public init(_ selection: ModelSelection) {
        maximize = selection.mode == .max
        number = selection.number
    }

    public var best: Measurement? { ranked.first }

    /// All measurements, best first; NaN ranks last, ties keep the earlier epoch first.
    public var ranked: [Measurement] {
        measurements.enumerated().sorted { a, b in
            let x = a.element.value, y = b.element.value
            if x.isNaN != y.isNaN { return !x.isNaN }
            if x != y && !x.isNaN { return maximize ? x > y : x < y }
            return a.offset < b.offset
        }.map(\.element)
    }

    /// The epochs whose weights are kept for this selection, in increasing epoch order.
    public var bestEpochs: [Int] { ranked.prefix(number).map(\.epoch).sorted() }

    /// Records a measurement; returns true when it is a new best.
    @discardableResult
    public mutating func record(epoch: Int, value: Double) -> Bool {
        let previous = best
        measurements.append(Measurement(epoch: epoch, value: value))
        let improved = previous == nil || best?.epoch == epoch
        sinceImprovement = improved ? 0 : sinceImprovement + 1
        return improved
    }
}
