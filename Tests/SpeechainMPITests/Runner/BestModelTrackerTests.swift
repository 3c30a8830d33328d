import Testing
@testable import SpeechainMPI

/// best-N selection and early stopping on metric sequences known in advance.
@Suite struct BestModelTrackerTests {
    @Test func keepsTheNBestEpochsOfAMaximisedMetric() {
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 3))
        let seq = [0.50, 0.70, 0.65, 0.80, 0.70, 0.60]
        let changes = seq.enumerated().map { t.record(epoch: $0 + 1, value: $1) }
        // best three: 0.80 (e4), then the two 0.70 (e2, e5); 0.65 (e3) is fourth
        #expect(t.bestEpochs == [2, 4, 5])
        // e4 pushes out e1 (.5), e5 (.7 beats .65) pushes out e3, e6 (.6) beats nobody
        #expect(changes.map(\.joined) == [true, true, true, true, true, false])
        #expect(changes.map(\.dropped) == [nil, nil, nil, 1, 3, nil])
        #expect(t.best?.epoch == 4)
    }

    @Test func minimisedMetricAndNaNRankLast() {
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "loss", mode: .min, number: 2))
        for (i, v) in [1.0, .nan, 0.5, 0.7, 0.5].enumerated() { t.record(epoch: i + 1, value: v) }
        // NaN joins while there is room and ranks last, so it is the first to leave (at e3); e4 .7 pushes out
        // e1 (1.0); e5 .5 beats .7 and, tied with e3, ranks after it
        #expect(t.bestEpochs == [3, 5])
        #expect(t.best?.epoch == 3)
        #expect(t.ranked.map(\.epoch) == [3, 5])
    }
}
