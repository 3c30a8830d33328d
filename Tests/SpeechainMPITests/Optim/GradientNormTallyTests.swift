import Foundation
import Testing
@testable import SpeechainMPI

/// The clipping norm from Σ g² recorded in the backward (GradientNormTally): the same norm as a pass over the
/// gradients the update sees (computed here in Double from the buffer), taken only where nothing changes the
/// gradients between the backward and the norm, and never from a stale record.
@Suite struct GradientNormTallyTests {
    /// An MLP whose Linear layers all run our own kernels (rows 16…256), so that every tensor can be recorded.
    static func model(seed: UInt64 = 3) throws -> MLPClassifier {
        let model = try MLPClassifier(encoder: .init(dims: [20, 33, 17], activation: "GELU"),
                                      decoder: .init(dims: [17, 5], activation: "GELU"), seed: seed)
        for layer in model.encoder.layers + model.decoder.layers { (layer as? Linear)?.float32Kernels = .own }
        return model
    }

    static func batch(_ index: Int, rows: Int = 24, nanAt: Int? = nil) -> Batch {
        var rng = Xoshiro256(seed: 100 + UInt64(index))
        var features: [Float] = (0..<(rows * 20)).map { _ in rng.normal() }
        if let nanAt { features[nanAt] = .nan }
        return Batch(features: features, labels: (0..<rows).map { _ in Int32(truncatingIfNeeded: rng.next() % 5) }, cols: 20)
    }

    /// sqrt(Σ g²) over `ranges`, in Double, from the buffer as it is now.
    static func norm(_ store: ParameterStore, _ ranges: [Range<Int>]) -> Double {
        ranges.reduce(0.0) { s, r in store.gradients.toArray(r).reduce(s) { $0 + Double($1) * Double($1) } }.squareRoot()
    }

    /// Over accum_grad 1 and 3, with and without clipping: only the backward before an update records (every tensor
    /// of the updated modules), the update takes the records, and the reported norm equals the Double norm of the
    /// gradients it used; with clipping the parameters move as a clip by that norm says.
    @Test(arguments: [(1, 0.0), (3, 0.0), (1, 0.05), (3, 0.05)] as [(Int, Double)])
    func theNormFromRecordsIsTheNormOfTheGradients(accum: Int, gradClip: Double) throws {
        guard Float32Kernels.isSupported else { return }
        let model = try Self.model()
        let s = try OptimScheduler(type: ConstantLr.typeName,
                                   conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.5]), "updated_modules": .list(["encoder"])],
                                   model: model, options: TrainingOptions(accumGrad: accum, gradClip: gradClip))
        let enc = try #require(model.parameters.range(ofModule: "encoder"))
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var clipped = false
        for stepNum in 1...(2 * accum) {
            try model.forward(Self.batch(stepNum), context: ForwardContext(training: true), losses: &losses, metrics: &metrics)
            var report = try s.backward(losses: losses, stepNum: stepNum)
            let update = stepNum % accum == 0
            // the encoder's two Linear layers (weight and bias each); the decoder is not back-propagated
            #expect(model.parameters.normTally.recordedTensors == (update ? 4 : 0), "step \(stepNum)")
            let expected = Self.norm(model.parameters, [enc])
            let before = model.parameters.values.toArray(enc), g = model.parameters.gradients.toArray(enc)
            try s.update(&report, stepNum: stepNum, epochNum: 1)
            guard update else { continue }
            #expect(report.gradNormRecordedValues == enc.count)
            let got = Double(try #require(report.gradNorm))
            #expect(abs(got - expected) <= 2e-6 * expected, "step \(stepNum): \(got) against \(expected)")
            #expect(model.parameters.normTally.recordedTensors == 0, "the update took its records")
            // SGD: θ ← θ − lr·coef·g with coef = min(1, max_norm/(norm + 1e-6)) from the Double norm
            let coef = gradClip > 0 ? min(1, gradClip / (expected + 1e-6)) : 1
            clipped = clipped || coef < 1
            let after = model.parameters.values.toArray(enc)
            for i in 0..<enc.count {
                let want = Double(before[i]) - 0.5 * coef * Double(g[i])
                #expect(abs(Double(after[i]) - want) <= 1e-6 * max(1, abs(want)))
            }
        }
        #expect(gradClip == 0 || clipped, "the case must clip")
    }

    /// Where the gradients change after the backward (an allreduce's synchronizer, a GradScaler unscaling) or the norm
    /// is not the 2-norm, nothing is recorded and the norm is the pass's.
    @Test func noRecordsWhereTheGradientsChangeAfterTheBackward() throws {
        guard Float32Kernels.isSupported else { return }
        for variant in ["synchronizer", "scaler", "p=3"] {
            let model = try Self.model()
            var options = TrainingOptions(gradClip: 1, gradNormType: variant == "p=3" ? 3 : 2)
            if variant == "scaler" { options.useAMP = true; options.ampDType = .bfloat16 }
            let s = try OptimScheduler(type: ConstantLr.typeName, conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1])],
                                       model: model, options: options)
            if variant == "synchronizer" { s.synchronizer = GradientAllreduce(communicator: LocalCommunicator()) }
            var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
            try model.forward(Self.batch(1), context: ForwardContext(training: true, amp: options.autocast),
                              losses: &losses, metrics: &metrics)
            var report = try s.backward(losses: losses, stepNum: 1)
            #expect(model.parameters.normTally.recordedTensors == 0, "\(variant)")
            try s.update(&report, stepNum: 1, epochNum: 1)
            #expect(report.isUpdateStep && report.gradNormRecordedValues == 0, "\(variant)")
        }
    }

    /// A NaN in the batch makes the recorded sums NaN: not recorded, the pass finds the non-finite norm and the update
    /// is skipped, as without records.
    @Test func aNonFiniteGradientStillSkipsTheUpdate() throws {
        guard Float32Kernels.isSupported else { return }
        let model = try Self.model()
        let s = try OptimScheduler(type: ConstantLr.typeName, conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1])],
                                   model: model, options: TrainingOptions(gradClip: 1))
        let batch = Self.batch(1, nanAt: 7)
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(batch, context: ForwardContext(training: true), losses: &losses, metrics: &metrics)
        let before = model.parameters.values.toArray()
        let report = try s.step(losses: losses, stepNum: 1, epochNum: 1)
        #expect(report.skipped && !(report.gradNorm ?? 0).isFinite)
        #expect(model.parameters.values.toArray() == before)
    }

    /// take(): records inside the ranges are summed and removed, the uncovered parts come back in order, a record that
    /// straddles a range's border is not used but forgotten, records outside stay.
    @Test func takeSplitsTheRangesIntoRecordedAndRest() {
        let tally = GradientNormTally()
        tally.record(offset: 10, count: 5, sumOfSquares: 1)      // inside 0..<30
        tally.record(offset: 20, count: 10, sumOfSquares: 2)     // inside, ends at its end
        tally.record(offset: 38, count: 4, sumOfSquares: 4)      // straddles 40..<60's start
        tally.record(offset: 45, count: 5, sumOfSquares: 8)      // inside 40..<60
        tally.record(offset: 70, count: 3, sumOfSquares: 16)     // outside
        tally.record(offset: 80, count: 3, sumOfSquares: .infinity)   // not recorded
        #expect(tally.recordedTensors == 5)
        let taken = tally.take([0..<30, 40..<60])
        #expect(taken.sumOfSquares == 11 && taken.values == 20)
        #expect(taken.rest == [0..<10, 15..<20, 40..<45, 50..<60])
        #expect(tally.recordedTensors == 1, "only the record outside the ranges stays")
        let outside = tally.take([70..<73])
        #expect(outside.sumOfSquares == 16 && outside.rest.isEmpty)
    }
}
