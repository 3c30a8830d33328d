import Foundation
import Testing
@testable import SpeechainMPI

/// use_amp end to end: the GradScaler really has overflow to deal with under float16 emulation, backs off, and the
/// run then trains like the float32 one; master weights and optimizer state stay float32.
@Suite struct AMPTrainingTests {
    final class Lines: @unchecked Sendable {
        var all: [String] = []
        func append(_ s: String) { all.append(s) }
    }

    static func experiment(amp: ReducedPrecision?, scaler: GradScaler = GradScaler()) throws -> Experiment {
        var e = try Experiment.makeDefault()
        e.reportPerSteps = 1
        e.training.useAMP = amp != nil
        if let amp { e.training.ampDType = amp }
        e.training.scaler = scaler
        return e
    }

    static func train(_ e: Experiment) throws -> (trainer: Trainer, summary: TrainingSummary, lines: [String]) {
        let lines = Lines()
        let trainer = try Trainer(experiment: e, output: { lines.append($0) })
        let summary = try trainer.run()
        return (trainer, summary, lines.all)
    }

    /// The step numbers whose monitor line reports a skipped update.
    static func skippedSteps(_ lines: [String]) -> [Int] {
        lines.filter { $0.hasPrefix("step ") && $0.contains("skipped updates") }.compactMap { line in
            Int(line.dropFirst(5).prefix { $0.isNumber })
        }
    }

    /// A loss scale of 2^24 makes d loss/d logits = 2^24·(p − onehot)/32 reach 65520 wherever |p − onehot| ≥ 1/8,
    /// i.e. on every batch of an untrained model: float16 overflows, the update is skipped and the scale halves, until
    /// it is small enough; float32 arithmetic (and bfloat16, with float32's range) never overflows at that scale.
    @Test func aTooHighLossScaleSkipsBacksOffThenTrains() throws {
        let initScale: Float = 0x1p24
        let (trainer, summary, lines) = try Self.train(try Self.experiment(amp: .float16, scaler: GradScaler(initScale: initScale)))
        let counts = try #require(summary.schedulers["main"])
        let skipped = counts.skipped
        #expect(counts.updates == summary.steps)
        // the monitor shows them (report_per_steps 1: one line per step) and the epoch records count them; the first
        // step overflows, the scale comes down within a few steps (a later overflow may cost one more halving, as it
        // would on a GPU), and the last epoch runs clean
        let steps = Self.skippedSteps(lines)
        #expect(steps.count == skipped)
        #expect(steps.first == 1)
        #expect(skipped <= summary.steps / 10, "\(steps)")
        #expect(summary.history.map { $0.skipped["main"] ?? 0 }.reduce(0, +) == skipped)
        #expect(summary.history.last?.skipped["main"] ?? 0 == 0, "\(steps)")
        // one backoff per skip; no growth within growth_interval (2000) clean steps
        let scale = try #require(trainer.schedulers[0].scaler?.scale)
        #expect(scale == initScale * Float(pow(0.5, Double(skipped))))
        // the scale it settled at does not overflow, the one before did: 65520·32 / 2^k brackets max |p − onehot| ≤ 1
        #expect(scale <= 65520 * 32)
        #expect(trainer.model.parameters.values.toArray().allSatisfy { $0.isFinite })

        // and it trained: the loss fell, and validation is about where float32 gets (the skipped updates were made
        // at warm-up's smallest learning rates)
        let reference = try Self.train(try Self.experiment(amp: nil)).summary
        #expect(reference.schedulers["main"]?.skipped == 0)
        let first = try #require(summary.history.first?.train["loss"]), last = try #require(summary.history.last?.train["loss"])
        #expect(last < 0.6 * first)
        let accuracy = try #require(summary.validAccuracy), float32Accuracy = try #require(reference.validAccuracy)
        #expect(abs(accuracy - float32Accuracy) <= 0.02, "float16 after \(skipped) skips: \(accuracy), float32: \(float32Accuracy)")
        #expect(lines.contains { $0.hasPrefix("epoch 1:") && $0.contains("skipped updates \(summary.history[0].skipped["main"] ?? 0)") })

        // the same scale under bfloat16 or plain float32 arithmetic never overflows
        for amp in [ReducedPrecision.bfloat16] {
            let other = try Self.train(try Self.experiment(amp: amp, scaler: GradScaler(initScale: initScale))).summary
            #expect(other.schedulers["main"]?.skipped == 0, "\(amp)")
        }
    }

    /// The default experiment under float16 and bfloat16 (with and without its GradScaler) ends within 1 point of
    /// the float32 run's validation accuracy. In bfloat16, which has float32's range, scaling by a power of two
    /// commutes with every rounding, so the scaled and unscaled runs end bit for bit alike.
    @Test func reducedPrecisionRunsReachTheFloat32Accuracy() throws {
        let (float32Trainer, float32Summary, _) = try Self.train(try Self.experiment(amp: nil))
        let float32 = try #require(float32Summary.validAccuracy)
        var unscaled = GradScaler()
        unscaled.enabled = false
        var checksums: [String: UInt64] = [:]
        for (amp, scaler) in [(ReducedPrecision.float16, GradScaler()), (.bfloat16, GradScaler()), (.bfloat16, unscaled)] {
            let (trainer, summary, _) = try Self.train(try Self.experiment(amp: amp, scaler: scaler))
            let accuracy = try #require(summary.validAccuracy)
            #expect(abs(accuracy - float32) <= 0.01, "\(amp) scaler \(scaler.enabled): \(accuracy) vs float32 \(float32)")
            #expect(trainer.schedulers[0].scaler?.lossScale == (scaler.enabled ? 65536 : 1))
            #expect(trainer.parameterChecksum() != float32Trainer.parameterChecksum(), "\(amp) computes differently")
            checksums["\(amp) \(scaler.enabled)"] = trainer.parameterChecksum()
        }
        #expect(checksums["bfloat16 true"] == checksums["bfloat16 false"])
    }

    /// Step by step at the OptimScheduler: every skipped update leaves the parameters bit for bit as they were, the
    /// scale halves per skip, the skips come first and stop, and no parameter ever becomes non-finite.
    @Test func skippedUpdatesNeverTouchTheParameters() throws {
        let model = try MLPClassifier(encoder: .init(dims: [16, 64, 64]), decoder: .init(dims: [64, 4]), seed: 1)
        var options = TrainingOptions(useAMP: true, ampDType: .float16)
        options.scaler = GradScaler(initScale: 0x1p24)
        let scheduler = try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "Adam", "warmup_steps": 20,
                                                                        "optim_conf": .map(["lr": 0.005])],
                                           model: model, options: options)
        let data = try Dataset.synthetic(count: 1024, width: 16, classes: 4, seed: 1)
        let context = ForwardContext(amp: .float16)
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        var batch = Batch(features: [], labels: [], cols: 16)
        var expectedScale: Float = 0x1p24
        var skips: [Int] = []
        for step in 1...32 {
            data.fill(&batch, rows: Array(((step - 1) * 32)..<(step * 32))[...])
            let before = model.parameters.values.toArray()
            try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
            let report = try scheduler.step(losses: losses, stepNum: step, epochNum: 1)
            let after = model.parameters.values.toArray()
            #expect(report.lossScale == expectedScale, "step \(step)")
            if report.skipped {
                skips.append(step)
                expectedScale /= 2
                #expect(after.map(\.bitPattern) == before.map(\.bitPattern), "step \(step) skipped: no parameter moved")
            } else {
                #expect(after != before, "step \(step) updated")
            }
            #expect(after.allSatisfy { $0.isFinite }, "step \(step)")
            #expect(model.parameters.gradients.toArray().allSatisfy { $0 == 0 }, "gradients zeroed after every update")
        }
        #expect(skips.first == 1, "the initial scale overflows: \(skips)")
        #expect(skips.allSatisfy { $0 <= 16 }, "then the scale has come down and the updates go through: \(skips)")
    }

    /// After float16 training the master weights and Adam's moments hold float32 values that float16 cannot
    /// represent (only the copies a forward computes with are rounded).
    @Test(arguments: ReducedPrecision.allCases)
    func masterWeightsAndOptimizerStateStayFloat32(amp: ReducedPrecision) throws {
        let (trainer, _, _) = try Self.train(try Self.experiment(amp: amp))
        func reduced(_ v: [Float]) -> Int { v.filter { amp.round($0) == $0 }.count }
        let weights = trainer.model.parameters.values.toArray()
        #expect(reduced(weights) < weights.count / 10, "master weights: \(reduced(weights)) of \(weights.count) representable in \(amp)")
        let state = trainer.schedulers[0].optimizer.stateDict()
        #expect(!state.tensors.isEmpty)
        for (name, tensor) in state.tensors {
            #expect(reduced(tensor) < tensor.count / 10, "\(name): \(reduced(tensor)) of \(tensor.count)")
        }
    }
}
