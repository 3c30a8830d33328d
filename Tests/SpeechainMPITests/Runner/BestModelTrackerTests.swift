import Testing
@testable import SpeechainMPI

/// best-N selection and early stopping on metric sequences known in advance.
@Suite struct BestModelTrackerTests {
    @Test func keepsTheNBestEpochsOfAMaximisedMetric() {
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 3))
        let seq = [0.50, 0.70, 0.65, 0.80, 0.70, 0.60]
        var improved: [Bool] = []
        for (i, v) in seq.enumerated() { improved.append(t.record(epoch: i + 1, value: v)) }
        // best three: 0.80 (e4), then the two 0.70 (e2, e5); 0.65 (e3) is fourth
        #expect(t.bestEpochs == [2, 4, 5])
        #expect(improved == [true, true, false, true, false, false])
        #expect(t.best?.epoch == 4)
        #expect(t.sinceImprovement == 2)
    }

    @Test func minimisedMetricAndNaNRankLast() {
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "loss", mode: .min, number: 2))
        for (i, v) in [1.0, .nan, 0.5, 0.7, 0.5].enumerated() { t.record(epoch: i + 1, value: v) }
        #expect(t.bestEpochs == [3, 5])
        #expect(t.best?.epoch == 3)
        #expect(t.sinceImprovement == 2)   // 0.7 and the tie 0.5 are not improvements
    }
}
