import Foundation
import Testing
@testable import SpeechainMPI

/// SpeeChain's OptimScheduler semantics: when it back-propagates, when it updates, which lr it sets,
/// what it skips, and that its state resumes a run bit for bit.
@Suite struct OptimSchedulerTests {
    let data: ReferenceData

    init() throws { data = try ReferenceData(directory: "torch_refs/adam_noam_accum4") }

    static func noam(lr: Double, warmup: Double, step: Int) -> Double {
        let s = Double(step)
        return lr * warmup.squareRoot() * min(1 / s.squareRoot(), s * pow(warmup, -1.5))
    }

    func adamNoam(_ model: MLPClassifier, accum: Int = 1, stepPerUpdate: Int = 1, ft: Double = 1, amp: Bool = false,
                  extra: [String: ConfigValue] = [:]) throws -> OptimScheduler {
        var conf: [String: ConfigValue] = ["optim_type": "Adam", "optim_conf": .map(["lr": 0.01, "amsgrad": true]),
                                           "warmup_steps": 3, "step_per_update": .int(stepPerUpdate)]
        for (k, v) in extra { conf[k] = v }
        return try OptimScheduler(type: "noam.NoamLr", conf: conf, model: model,
                                  options: TrainingOptions(accumGrad: accum, ftFactor: ft, gradClip: 1, useAMP: amp))
    }

    @Test func accumGrad4StepPerUpdate2UpdatesExactlyWhenSpeeChainWould() throws {
        let model = try ReferenceModel.make()
        let scheduler = try adamNoam(model, accum: 4, stepPerUpdate: 2, ft: 0.5)
        var before = model.parameters.values.toArray()
        var updates = 0
        try ReferenceModel.train(model, schedulers: [scheduler], data: data, steps: 32) { stepNum, _, reports in
            let r = reports[0]
            let realStep = (stepNum - 1) / 4 + 1
            let backward = realStep % 2 == 0
            let update = backward && stepNum % 4 == 0
            #expect(r.realStep == realStep)
            #expect(r.didBackward == backward, "step \(stepNum)")
            #expect(r.isUpdateStep == update, "step \(stepNum)")
            if backward {
                // ft_factor × Noam(real_step) with init_lr = 0.01·√3, set on every backward step
                #expect(abs((r.lr ?? .nan) - 0.5 * Self.noam(lr: 0.01, warmup: 3, step: realStep)) <= 1e-15)
            } else {
                #expect(r.lr == nil)
            }
            let after = model.parameters.values.toArray()
            if update { updates += 1; #expect(after != before, "step \(stepNum) should update") }
            else { #expect(after == before, "step \(stepNum) must not touch the parameters") }
            before = after
        }
        // updates at step_num 8, 16, 24, 32
        #expect(updates == 4)
        #expect(scheduler.optimizer.stepCount == 4)
    }

    /// accum_grad 2 over two batches of 8 is one update with the mean gradient of the 16 rows.
    @Test func accumulationEqualsOneLargeBatch() throws {
        let sgd: [String: ConfigValue] = ["optim_type": "SGD", "optim_conf": .map(["lr": 0.5])]
        let a = try ReferenceModel.make()
        let sa = try OptimScheduler(type: ConstantLr.typeName, conf: sgd, model: a, options: TrainingOptions(accumGrad: 2, gradClip: 0))
        try ReferenceModel.train(a, schedulers: [sa], data: data, steps: 2)

        let b = try ReferenceModel.make()
        let sb = try OptimScheduler(type: ConstantLr.typeName, conf: sgd, model: b, options: TrainingOptions(gradClip: 0))
        var losses = NamedValues(names: b.lossNames), metrics = NamedValues(names: b.metricNames)
        let b0 = data.batch(0), b1 = data.batch(1)
        let big = Batch(features: b0.features + b1.features, labels: b0.labels + b1.labels, cols: b0.cols)
        try b.forward(big, context: ForwardContext(), losses: &losses, metrics: &metrics)
        try sb.step(losses: losses, stepNum: 1, epochNum: 1)

        let pa = a.parameters.values.toArray(), pb = b.parameters.values.toArray()
        let worst = zip(pa, pb).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-6, "max |Δ| = \(worst)")
        #expect(pa != (try ReferenceModelSnapshot.initial()))
    }

    @Test(arguments: [false, true])
    func nonFiniteGradientSkipsTheUpdateAndBacksOff(useAMP: Bool) throws {
        let model = try ReferenceModel.make()
        let scheduler = try adamNoam(model, accum: 2, amp: useAMP)
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let ctx = ForwardContext()
        let initial = model.parameters.values.toArray()
        try model.forward(data.batch(0), context: ctx, losses: &losses, metrics: &metrics)
        try scheduler.step(losses: losses, stepNum: 1, epochNum: 1)
        model.parameters.gradients[100] = useAMP ? .nan : .infinity
        try model.forward(data.batch(1), context: ctx, losses: &losses, metrics: &metrics)
        let report = try scheduler.step(losses: losses, stepNum: 2, epochNum: 1)
        #expect(report.isUpdateStep && report.skipped)
        #expect(!(report.gradNorm ?? 0).isFinite)
        #expect(model.parameters.values.toArray() == initial)
        #expect(model.parameters.values.toArray().allSatisfy { $0.isFinite })
        #expect(model.parameters.gradients.toArray().allSatisfy { $0 == 0 }, "gradients are zeroed after a skipped update")
        #expect(scheduler.optimizer.stepCount == 0)
        if useAMP {
            #expect(report.lossScale == 65536)
            #expect(scheduler.scaler?.scale == 32768)
            #expect(scheduler.scaler?.growthTracker == 0)
        }
        // the next accumulation trains normally
        for step in 3...4 {
            try model.forward(data.batch(step - 1), context: ctx, losses: &losses, metrics: &metrics)
            let r = try scheduler.step(losses: losses, stepNum: step, epochNum: 1)
            if step == 4 { #expect(r.isUpdateStep && !r.skipped) }
        }
        #expect(model.parameters.values.toArray() != initial)
        #expect(scheduler.optimizer.stepCount == 1)
    }

    /// With use_amp the loss is scaled before backward and unscaled before clipping: the trajectory is the same as
    /// without (65536 is a power of two, so scaling is exact) and the scale grows after growth_interval clean steps.
    @Test func scaledAndUnscaledRunsAgreeAndTheScaleGrows() throws {
        let plain = try ReferenceModel.make(), scaled = try ReferenceModel.make()
        let sp = try adamNoam(plain), ss = try adamNoam(scaled, amp: true)
        ss.loadScaler(GradScaler(growthInterval: 3))
        try ReferenceModel.train(plain, schedulers: [sp], data: data, steps: 7)
        try ReferenceModel.train(scaled, schedulers: [ss], data: data, steps: 7)
        #expect(plain.parameters.values.toArray() == scaled.parameters.values.toArray())
        #expect(ss.scaler?.scale == Float(65536 * 4))   // grew after updates 3 and 6
        #expect(ss.scaler?.growthTracker == 1)
    }

    @Test func stateDictRoundTripContinuesBitIdentically() throws {
        let steps = 24, cut = 13
        let reference = try ReferenceModel.make()
        let rs = try adamNoam(reference, accum: 2, amp: true)
        try ReferenceModel.train(reference, schedulers: [rs], data: data, steps: steps)

        let first = try ReferenceModel.make()
        let fs = try adamNoam(first, accum: 2, amp: true)
        try ReferenceModel.train(first, schedulers: [fs], data: data, steps: cut - 1)
        // what a checkpoint keeps: weights and the scheduler state, through a real serialisation
        let weights = first.parameters.namedTensors()
        let encoded = try JSONEncoder().encode(fs.stateDict())

        let second = try ReferenceModel.make()
        let ss = try adamNoam(second, accum: 2, amp: true)
        try second.parameters.load(weights, source: "checkpoint")
        try ss.loadStateDict(JSONDecoder().decode(OptimSchedulerState.self, from: encoded))
        try ReferenceModel.train(second, schedulers: [ss], data: data, steps: steps - cut + 1, startStep: cut)
        #expect(second.parameters.values.toArray() == reference.parameters.values.toArray())
        #expect(ss.stateDict() == rs.stateDict())
    }

    @Test func loadingAnotherOptimizersStateIsAnError() throws {
        let model = try ReferenceModel.make()
        let adam = try adamNoam(model)
        let sgd = try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1])],
                                     model: model, options: TrainingOptions())
        #expect(throws: OptimError.self) { try sgd.loadStateDict(adam.stateDict()) }
        var truncated = adam.stateDict()
        truncated.optimizer.tensors["exp_avg"]?.removeLast()
        #expect(throws: OptimError.self) { try adam.loadStateDict(truncated) }
    }

    /// Two schedulers over disjoint modules: each back-propagates its own loss into its own parameters only, at its
    /// own rate; the decoder's SGD update at step 2 equals −lr·∂loss/∂decoder of that step's forward.
    @Test func severalSchedulersUpdateTheirOwnModulesAtTheirOwnRate() throws {
        let model = try ReferenceModel.make()
        let schedulers = try OptimSchedulers.make(.map([
            "enc": .map(["type": "noam.NoamLr", "conf": .map(["optim_type": "Adam", "optim_conf": .map(["lr": 0.01]),
                                                              "updated_modules": .list(["encoder"]), "warmup_steps": 2])]),
            "dec": .map(["type": "const.ConstantLr", "conf": .map(["optim_type": "SGD", "optim_conf": .map(["lr": 0.3]),
                                                                  "updated_modules": "decoder", "step_per_update": 2])]),
        ]), model: model, options: TrainingOptions(gradClip: 0))
        #expect(schedulers.map(\.name) == ["dec", "enc"])
        let enc = model.parameters.range(ofModule: "encoder")!, dec = model.parameters.range(ofModule: "decoder")!
        var prev = model.parameters.values.toArray()
        var expectedDecoderAfterStep2: [Float] = []
        try ReferenceModel.train(model, schedulers: schedulers.reversed(), data: data, steps: 4) { step, _, _ in
            let now = model.parameters.values.toArray()
            #expect(Array(now[enc]) != Array(prev[enc]), "encoder updates every step")
            #expect((Array(now[dec]) != Array(prev[dec])) == (step % 2 == 0), "decoder updates every 2nd step (step \(step))")
            if step == 1 {
                // the gradient the decoder scheduler will see at step 2: a fresh model in the state before step 2
                let probe = try! ReferenceModel.make()
                probe.parameters.values.copy(from: now)
                var l = NamedValues(names: probe.lossNames), m = NamedValues(names: probe.metricNames)
                try! probe.forward(data.batch(1), context: ForwardContext(), losses: &l, metrics: &m)
                try! probe.backward(loss: "loss", seed: 1, modules: ["decoder"])
                let g = probe.parameters.gradients.toArray(dec)
                expectedDecoderAfterStep2 = zip(Array(now[dec]), g).map { $0 - 0.3 * $1 }
            }
            if step == 2 {
                let worst = zip(Array(now[dec]), expectedDecoderAfterStep2).map { abs($0 - $1) }.max() ?? 1
                #expect(worst <= 1e-6)
            }
            prev = now
        }
    }

    @Test(arguments: [
        (["a": ["updated_modules": ConfigValue.list(["encoder"])], "b": ["updated_modules": ConfigValue.list(["encoder", "decoder"])]], "both update encoder"),
        (["a": [:], "b": [:]], "both update decoder, encoder"),
        (["a": [:], "b": ["updated_modules": ConfigValue.list(["decoder"])]], "both update decoder"),
    ])
    func overlappingUpdatedModulesAreRejected(sches: [String: [String: ConfigValue]], message: String) throws {
        let model = try ReferenceModel.make()
        var top: [String: ConfigValue] = [:]
        for (name, extra) in sches {
            var conf: [String: ConfigValue] = ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1])]
            for (k, v) in extra { conf[k] = v }
            top[name] = .map(["type": "const.ConstantLr", "conf": .map(conf)])
        }
        let error = #expect(throws: ConfigError.self) {
            try OptimSchedulers.make(.map(top), model: model, options: TrainingOptions())
        }
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
    }

    @Test(arguments: [
        (TrainingOptions(accumGrad: 0), [String: ConfigValue](), "'accum_grad' must be >= 1"),
        (TrainingOptions(), ["step_per_update": 0], "'step_per_update' must be >= 1"),
        (TrainingOptions(), ["optim_loss": "ctc"], "names no loss of the model ('ctc')"),
        (TrainingOptions(), ["updated_modules": .list(["frontend"])], "names no module of the model ('frontend')"),
        (TrainingOptions(), ["warmup": 10], "unknown key 'warmup'"),
        (TrainingOptions(gradNormType: 0), [String: ConfigValue](), "'grad_norm_type' must be > 0"),
    ])
    func badSettingsAreOneLineErrors(options: TrainingOptions, extra: [String: ConfigValue], message: String) throws {
        let model = try ReferenceModel.make()
        var conf: [String: ConfigValue] = ["optim_type": "Adam"]
        for (k, v) in extra { conf[k] = v }
        let error = #expect(throws: ConfigError.self) {
            try OptimScheduler(type: "noam.NoamLr", conf: conf, model: model, options: options)
        }
        let text = error?.description ?? ""
        #expect(text.contains(message), "\(text)")
        #expect(!text.contains("\n"))
    }

    @Test func descriptionHasSpeeChainsShape() throws {
        let model = try ReferenceModel.make()
        let all = try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "Adam"], model: model, options: TrainingOptions())
        #expect(all.description == "NoamLr(optimizer=Adam, optim_loss=loss, updated_modules=None, d_model=None, warmup_steps=4000)")
        let enc = try OptimScheduler(type: "exp.ExponentDecayLr", conf: ["optim_type": "SGD", "updated_modules": .list(["encoder"])],
                                     model: model, options: TrainingOptions())
        #expect(enc.description == "ExponentDecayLr(optimizer=SGD, optim_loss=loss, updated_modules=['encoder'], decay_factor=0.999)")
        #expect(all.lr == 1e-3)   // get_lr before any step: optim_conf's lr (torch's Adam default)
    }

    /// Clipping inside the scheduler: the reported norm is the L2 norm of the accumulated gradient, and SGD applies
    /// g·min(1, max_norm/(norm + 1e-6)).
    @Test func clippingScalesTheAppliedGradient() throws {
        let model = try ReferenceModel.make()
        let s = try OptimScheduler(type: ConstantLr.typeName, conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 1.0])],
                                   model: model, options: TrainingOptions(gradClip: 0.05))
        let probe = try ReferenceModel.make()
        var l = NamedValues(names: probe.lossNames), m = NamedValues(names: probe.metricNames)
        try probe.forward(data.batch(0), context: ForwardContext(), losses: &l, metrics: &m)
        try probe.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let g = probe.parameters.gradients.toArray()
        let norm = g.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
        let coef = min(1, 0.05 / (norm + 1e-6))
        #expect(coef < 1)
        var reported: Float = 0
        try ReferenceModel.train(model, schedulers: [s], data: data, steps: 1) { _, _, r in reported = r[0].gradNorm ?? .nan }
        #expect(abs(Double(reported) - norm) <= 1e-6 * norm)
        let expected = zip(try ReferenceModelSnapshot.initial(), g).map { Double($0) - coef * Double($1) }
        let worst = zip(model.parameters.values.toArray(), expected).map { abs(Double($0) - $1) }.max() ?? 1
        #expect(worst <= 1e-6)
    }

    /// The update folds the clipping coefficient into the optimizer's gradient scale and zeroes the gradients in
    /// the optimizer's pass: the parameters must be bit for bit those of torch's order (a clipping pass over the
    /// gradients, then Adam, then a zeroing pass), the scheduler's gradients 0 afterwards and another module's
    /// gradients untouched.
    @Test(arguments: [0.05, 0.0])
    func fusedClippingAndZeroingMatchSeparatePasses(gradClip: Double) throws {
        let adam: [String: ConfigValue] = ["optim_type": "Adam", "optim_conf": .map(["lr": 0.01, "weight_decay": 0.01]),
                                           "updated_modules": .list(["encoder"])]
        let model = try ReferenceModel.make()
        let s = try OptimScheduler(type: ConstantLr.typeName, conf: adam, model: model, options: TrainingOptions(gradClip: gradClip))
        let enc = model.parameters.range(ofModule: "encoder")!, dec = model.parameters.range(ofModule: "decoder")!
        // the same gradients by hand, for both modules
        let probe = try ReferenceModel.make()
        var l = NamedValues(names: probe.lossNames), m = NamedValues(names: probe.metricNames)
        try probe.forward(data.batch(0), context: ForwardContext(training: true), losses: &l, metrics: &m)
        try probe.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let decoderGradients = probe.parameters.gradients.toArray(dec)
        #expect(decoderGradients.contains { $0 != 0 })
        let g = probe.parameters.gradients.pointer
        let norm = GradientClipping.clip(g, ranges: [enc], maxNorm: gradClip, normType: 2)
        #expect(gradClip == 0 || norm > Float(gradClip), "the case must clip")
        let separate = try Optimizers.make(type: "Adam", conf: ["lr": 0.01, "weight_decay": 0.01], parameterCount: enc.count, owner: "test")
        separate.step(parameters: probe.parameters.values.pointer, gradients: g, ranges: [enc], gradientScale: 1)
        // the scheduler: one backward of the encoder and the decoder's gradients written beside it
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(data.batch(0), context: ForwardContext(training: true), losses: &losses, metrics: &metrics)
        var report = try s.backward(losses: losses, stepNum: 1)
        #expect(model.parameters.gradients.toArray(enc).contains { $0 != 0 })
        model.parameters.gradients.pointer.advanced(by: dec.lowerBound).update(from: decoderGradients, count: dec.count)
        try s.update(&report, stepNum: 1, epochNum: 1)
        #expect(report.isUpdateStep && !report.skipped)
        let fused = model.parameters.values.toArray(enc), reference = probe.parameters.values.toArray(enc)
        let differ = zip(fused, reference).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differ == 0, "grad_clip \(gradClip): \(differ) of \(enc.count) parameters differ from clip pass + Adam")
        #expect(model.parameters.gradients.toArray(enc).allSatisfy { $0.bitPattern == 0 }, "the updated module's gradients are zeroed")
        #expect(model.parameters.gradients.toArray(dec) == decoderGradients, "another module's gradients are left as they were")
    }
}

enum ReferenceModelSnapshot {
    /// The reference model's initial parameters (an error, not an empty array, if it cannot be built).
    static func initial() throws -> [Float] {
        let values = try ReferenceModel.make().parameters.values.toArray()
        #expect(!values.isEmpty)
        return values
    }
}
