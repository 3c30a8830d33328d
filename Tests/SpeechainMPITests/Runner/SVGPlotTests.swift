import Testing
@testable import SpeechainMPI

/// Curve axes carry round tick values (1, 2 or 5 × 10^k) that cover the data.
@Suite struct SVGPlotTests {
    @Test func ticksAreRoundAndCoverTheData() {
        // (0.7695 − 0.5182) / 5 ≈ 0.050 → step 0.1
        #expect(SVGPlot.niceTicks(from: 0.5182, to: 0.7695, roughly: 5) == [0.5, 0.6, 0.7, 0.8])
        // epochs 1…8 with about 10 intervals, never below a step of 1
        #expect(SVGPlot.niceTicks(from: 1, to: 8, roughly: 10, minimumStep: 1) == [1, 2, 3, 4, 5, 6, 7, 8])
        // an lr curve from 0.00025 to 0.005: step 0.001
        #expect(SVGPlot.niceTicks(from: 0.00025, to: 0.005, roughly: 5) == [0, 0.001, 0.002, 0.003, 0.004, 0.005])
        // a loss from 0.3974 to 1.4086: (1.0112 / 5 ≈ 0.202) → the first of 0.1, 0.2, 0.5 at or above it is 0.5
        #expect(SVGPlot.niceTicks(from: 0.3974, to: 1.4086, roughly: 5) == [0, 0.5, 1, 1.5])
    }

    @Test func theRenderedAxisShowsTheTicks() {
        let plot = SVGPlot(title: "accuracy", xLabel: "epoch", yLabel: "accuracy",
                           series: [.init(name: "valid", points: [(1, 0.5182), (2, 0.7695), (3, 0.7)])])
        let svg = plot.render()
        for label in [">0.5<", ">0.6<", ">0.7<", ">0.8<", ">1<", ">2<", ">3<"] { #expect(svg.contains(label), "\(label)") }
        #expect(!svg.contains(">0.5182<"))
    }
}
