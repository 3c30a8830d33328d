import Foundation
import Testing
@testable import SpeechainMPI

/// A schedule defined only here, to show that registering a type is all it takes for the OptimScheduler to use it:
/// lr = base · (1 + s)^−power.
private struct InversePowerTestLr: LRSchedule {
    static let typeName = "invpow.InversePowerTestLr"
    static let confKeys = ["power"]
    let baseLR: Double
    let power: Double
    init(conf: ConfReader, baseLR: Double) throws {
        self.baseLR = baseLR
        power = try conf.double("power", default: 1)
    }
    func lr(realStep: Int, epoch: Int) -> Double { baseLR * Foundation.pow(1 + Double(realStep), -power) }
    var reprFields: String { "power=\(power)" }
}

/// Every lr schedule against its formula, written out again here in Double; their configuration errors; the
/// OptimScheduler's SpeeChain-shaped repr; and the registry's open door for new schedules.
@Suite struct ScheduleTests {
    static func reader(_ values: [String: ConfigValue], _ keys: [String]) throws -> ConfReader {
        try ConfReader(values, context: "t", allowedKeys: keys)
    }

    static func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300) }

    static func model() throws -> MLPClassifier { try MLPClassifier(encoder: .init(dims: [4, 8]), decoder: .init(dims: [8, 3])) }

    /// The ConfigError a throwing body raises (nil when it does not throw or throws something else).
    static func configError(_ body: () throws -> Void) -> ConfigError? {
        do { try body(); return nil } catch let e as ConfigError { return e } catch { return nil }
    }

    // MARK: Noam

    static let steps = [1, 2, 3, 7, 10, 11, 50, 99, 100, 101, 500, 4000, 10_000]

    @Test(arguments: steps)
    func noamWithoutDModel(step: Int) throws {
        let base = 2e-3, w = 100
        let noam = try NoamLr(conf: Self.reader(["warmup_steps": .int(w)], NoamLr.confKeys), baseLR: base)
        let initLR = base * Double(w).squareRoot()
        let s = Double(step)
        let want = initLR * min(1 / s.squareRoot(), s / Foundation.pow(Double(w), 1.5))
        #expect(Self.close(noam.lr(realStep: step, epoch: 1), want), "step \(step)")
        // The epoch plays no part.
        #expect(noam.lr(realStep: step, epoch: 7) == noam.lr(realStep: step, epoch: 1))
    }

    @Test func noamPeaksAtWarmupStepsWithTheOptimizersLR() throws {
        let base = 5e-4, w = 25
        let noam = try NoamLr(conf: Self.reader(["warmup_steps": .int(w)], NoamLr.confKeys), baseLR: base)
        #expect(Self.close(noam.lr(realStep: w, epoch: 1), base))
        // Linear rise before the peak, s^−0.5 decay after it.
        #expect(Self.close(noam.lr(realStep: 5, epoch: 1), base * 5 / 25))
        #expect(Self.close(noam.lr(realStep: 4 * w, epoch: 1), base / 2))
        let values = (1...200).map { noam.lr(realStep: $0, epoch: 1) }
        #expect(values.firstIndex(of: values.max()!) == w - 1)
    }

    @Test(arguments: steps)
    func noamWithDModel(step: Int) throws {
        let d = 512, w = 4000
        let noam = try NoamLr(conf: Self.reader(["warmup_steps": .int(w), "d_model": .int(d)], NoamLr.confKeys), baseLR: 123)
        let s = Double(step)
        // The optimizer's lr is ignored when d_model is given.
        let want = Foundation.pow(Double(d), -0.5) * min(Foundation.pow(s, -0.5), s * Foundation.pow(Double(w), -1.5))
        #expect(Self.close(noam.lr(realStep: step, epoch: 1), want), "step \(step)")
    }

    @Test func noamDefaultsToWarmup4000() throws {
        let noam = try NoamLr(conf: Self.reader([:], NoamLr.confKeys), baseLR: 1e-3)
        #expect(noam.warmupSteps == 4000)
        #expect(noam.dModel == nil)
        #expect(Self.close(noam.lr(realStep: 4000, epoch: 1), 1e-3))
    }

    @Test(arguments: [0, -5])
    func noamRejectsNonPositiveWarmup(w: Int) throws {
        let error = Self.configError { _ = try NoamLr(conf: Self.reader(["warmup_steps": .int(w)], NoamLr.confKeys), baseLR: 1e-3) }
        guard case .invalidValue(let context, let key, _)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(context == "t" && key == "warmup_steps")
    }

    @Test func noamRejectsNonPositiveDModel() throws {
        let error = Self.configError { _ = try NoamLr(conf: Self.reader(["d_model": .int(0)], NoamLr.confKeys), baseLR: 1e-3) }
        guard case .invalidValue(_, let key, _)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(key == "d_model")
    }

    @Test func unknownScheduleKeyNamesTheValidOnes() throws {
        let error = Self.configError { _ = try Self.reader(["warmup": .int(3)], NoamLr.confKeys) }
        #expect(error == .unknownKey(context: "t", key: "warmup", valid: ["d_model", "warmup_steps"]))
        #expect(error?.description == "t: unknown key 'warmup'; valid keys: d_model, warmup_steps")
    }

    @Test func unknownScheduleKeyThroughOptimSchedulerNamesScheduleAndOwnKeys() throws {
        let model = try Self.model()
        let error = Self.configError {
            _ = try OptimScheduler(type: NoamLr.typeName, conf: ["optim_type": "Adam", "warmup": 3], model: model, options: TrainingOptions())
        }
        let text = error?.description ?? ""
        #expect(text.contains("unknown key 'warmup'") && text.contains("warmup_steps") && text.contains("d_model")
                && text.contains("optim_loss") && text.contains("updated_modules"), "\(text)")
        // Keys of another schedule are not accepted either.
        let other = Self.configError {
            _ = try OptimScheduler(type: NoamLr.typeName, conf: ["optim_type": "Adam", "total_steps": 3], model: model, options: TrainingOptions())
        }
        guard case .unknownKey(_, let key, _)? = other else { Issue.record("got \(String(describing: other))"); return }
        #expect(key == "total_steps")
    }

    @Test func unknownScheduleTypeNamesTheValidOnes() throws {
        let error = Self.configError { _ = try LRSchedules.type(named: "noam.Noam") }
        guard case .unknownType(_, let name, let valid)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(name == "noam.Noam")
        for t in ["noam.NoamLr", "exp.ExponentDecayLr", "cosine.WarmupCosineLr", "linear.WarmupLinearLr", "step.StepDecayLr", "const.ConstantLr"] {
            #expect(valid.contains(t), "\(t) missing from \(valid)")
            #expect(error!.description.contains(t))
        }
        #expect(error!.description.contains("'noam.Noam'"))
        #expect(try LRSchedules.type(named: "noam.NoamLr") is NoamLr.Type)
        // The OptimScheduler reports the same error.
        let model = try Self.model()
        let viaScheduler = Self.configError {
            _ = try OptimScheduler(type: "noam.Noam", conf: ["optim_type": "Adam"], model: model, options: TrainingOptions())
        }
        guard case .unknownType(_, "noam.Noam", _)? = viaScheduler else { Issue.record("got \(String(describing: viaScheduler))"); return }
    }

    // MARK: Exponential decay

    @Test(arguments: [(1, 1), (1, 500), (2, 1), (2, 9999), (3, 7), (10, 123)])
    func exponentDecayDependsOnTheEpochOnly(epoch: Int, step: Int) throws {
        let base = 0.1, decay = 0.9
        let s = try ExponentDecayLr(conf: Self.reader(["decay_factor": .double(decay)], ExponentDecayLr.confKeys), baseLR: base)
        #expect(Self.close(s.lr(realStep: step, epoch: epoch), base * Foundation.pow(decay, Double(epoch - 1))))
    }

    @Test func exponentDecayDoesNotCompoundAcrossSchedulerSteps() throws {
        // Many OptimScheduler steps within epoch 3: the lr stays base·decay², it does not shrink step after step.
        let model = try Self.model()
        let scheduler = try OptimScheduler(type: ExponentDecayLr.typeName,
                                           conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.5]), "decay_factor": 0.8],
                                           model: model, options: TrainingOptions(gradClip: 0))
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let batch = Batch(features: (0..<8).map { Float($0) / 8 - 0.5 }, labels: [0, 2], cols: 4)
        for stepNum in 1...6 {
            try model.forward(batch, context: ForwardContext(training: true), losses: &losses, metrics: &metrics)
            let report = try scheduler.step(losses: losses, stepNum: stepNum, epochNum: 3)
            #expect(Self.close(try #require(report.lr), 0.5 * 0.8 * 0.8), "step \(stepNum)")
            #expect(Self.close(scheduler.lr, 0.5 * 0.64))
        }
    }

    @Test func exponentDecayDefaultFactorAndItsValidation() throws {
        let s = try ExponentDecayLr(conf: Self.reader([:], ExponentDecayLr.confKeys), baseLR: 1)
        #expect(Self.close(s.lr(realStep: 1, epoch: 3), 0.999 * 0.999))
        let error = Self.configError { _ = try ExponentDecayLr(conf: Self.reader(["decay_factor": 0], ExponentDecayLr.confKeys), baseLR: 1) }
        guard case .invalidValue(_, "decay_factor", _)? = error else { Issue.record("got \(String(describing: error))"); return }
    }

    // MARK: Warmup + cosine / linear

    static func cosineFormula(_ s: Int, base: Double, minLR: Double, w: Int, t: Int) -> Double {
        if s < w { return base * Double(s) / Double(w) }
        let progress = min(1, Double(s - w) / Double(t - w))
        return minLR + (base - minLR) * (1 + cos(Double.pi * progress)) / 2
    }

    static func linearFormula(_ s: Int, base: Double, minLR: Double, w: Int, t: Int) -> Double {
        if s < w { return base * Double(s) / Double(w) }
        return minLR + (base - minLR) * max(0, Double(t - s) / Double(t - w))
    }

    @Test(arguments: [(0, 0.0), (10, 0.0), (10, 1e-4), (1, 2e-4)])
    func warmupCosine(w: Int, minLR: Double) throws {
        let base = 1e-3, t = 110
        let s = try WarmupCosineLr(conf: Self.reader(["warmup_steps": .int(w), "total_steps": .int(t), "min_lr": .double(minLR)],
                                                     WarmupCosineLr.confKeys), baseLR: base)
        for step in 1...(t + 20) {
            #expect(Self.close(s.lr(realStep: step, epoch: 1), Self.cosineFormula(step, base: base, minLR: minLR, w: w, t: t)), "step \(step)")
        }
        // Landmarks: the peak at w, the midpoint at (w + T)/2, min_lr from T on.
        if w > 0 { #expect(Self.close(s.lr(realStep: w, epoch: 1), base)) }
        if (t - w) % 2 == 0 { #expect(Self.close(s.lr(realStep: (w + t) / 2, epoch: 1), (base + minLR) / 2)) }
        #expect(abs(s.lr(realStep: t, epoch: 1) - minLR) <= 1e-18)
        #expect(abs(s.lr(realStep: t + 1000, epoch: 1) - minLR) <= 1e-18)
    }

    @Test(arguments: [(0, 0.0), (10, 0.0), (10, 1e-4), (1, 2e-4)])
    func warmupLinear(w: Int, minLR: Double) throws {
        let base = 1e-3, t = 110
        let s = try WarmupLinearLr(conf: Self.reader(["warmup_steps": .int(w), "total_steps": .int(t), "min_lr": .double(minLR)],
                                                     WarmupLinearLr.confKeys), baseLR: base)
        for step in 1...(t + 20) {
            #expect(Self.close(s.lr(realStep: step, epoch: 1), Self.linearFormula(step, base: base, minLR: minLR, w: w, t: t)), "step \(step)")
        }
        if w > 0 { #expect(Self.close(s.lr(realStep: w, epoch: 1), base)) }
        #expect(abs(s.lr(realStep: t, epoch: 1) - minLR) <= 1e-18)
        #expect(abs(s.lr(realStep: t + 50, epoch: 1) - minLR) <= 1e-18)
    }

    @Test(arguments: [WarmupCosineLr.typeName, WarmupLinearLr.typeName])
    func totalStepsIsRequiredAndMustExceedWarmup(typeName: String) throws {
        let type = try LRSchedules.type(named: typeName)
        let missing = Self.configError { _ = try type.init(conf: Self.reader(["warmup_steps": 5], type.confKeys), baseLR: 1) }
        #expect(missing == .missing(context: "t", key: "total_steps"))
        #expect(missing?.description == "t: missing required key 'total_steps'")
        for t in [5, 4, 0] {
            let error = Self.configError { _ = try type.init(conf: Self.reader(["warmup_steps": 5, "total_steps": .int(t)], type.confKeys), baseLR: 1) }
            guard case .invalidValue(_, "total_steps", _)? = error else { Issue.record("T=\(t): got \(String(describing: error))"); continue }
        }
        let negative = Self.configError { _ = try type.init(conf: Self.reader(["warmup_steps": -1, "total_steps": 10], type.confKeys), baseLR: 1) }
        guard case .invalidValue(_, "warmup_steps", _)? = negative else { Issue.record("got \(String(describing: negative))"); return }
        // total_steps = warmup_steps + 1 is the smallest valid choice.
        _ = try type.init(conf: Self.reader(["warmup_steps": 5, "total_steps": 6], type.confKeys), baseLR: 1)
    }

    // MARK: Step decay, constant

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 10, 31])
    func stepDecay(epoch: Int) throws {
        let base = 0.2, gamma = 0.5, size = 3
        let s = try StepDecayLr(conf: Self.reader(["step_size": .int(size), "gamma": .double(gamma)], StepDecayLr.confKeys), baseLR: base)
        let drops = (epoch - 1) / size   // 0 for epochs 1–3, 1 for 4–6, …
        for step in [1, 17, 10_000] {
            #expect(Self.close(s.lr(realStep: step, epoch: epoch), base * Foundation.pow(gamma, Double(drops))), "epoch \(epoch) step \(step)")
        }
    }

    @Test func stepDecayRejectsNonPositiveStepSize() throws {
        let error = Self.configError { _ = try StepDecayLr(conf: Self.reader(["step_size": 0], StepDecayLr.confKeys), baseLR: 1) }
        guard case .invalidValue(_, "step_size", _)? = error else { Issue.record("got \(String(describing: error))"); return }
    }

    @Test func constantWithoutWarmup() throws {
        let s = try ConstantLr(conf: Self.reader([:], ConstantLr.confKeys), baseLR: 3e-4)
        for step in [1, 2, 100, 100_000] { #expect(s.lr(realStep: step, epoch: step % 5 + 1) == 3e-4) }
    }

    @Test func constantWithWarmup() throws {
        let base = 3e-4, w = 8
        let s = try ConstantLr(conf: Self.reader(["warmup_steps": .int(w)], ConstantLr.confKeys), baseLR: base)
        for step in 1...30 {
            #expect(Self.close(s.lr(realStep: step, epoch: 1), base * min(1, Double(step) / Double(w))), "step \(step)")
        }
        let error = Self.configError { _ = try ConstantLr(conf: Self.reader(["warmup_steps": -2], ConstantLr.confKeys), baseLR: 1) }
        guard case .invalidValue(_, "warmup_steps", _)? = error else { Issue.record("got \(String(describing: error))"); return }
    }

    // MARK: OptimScheduler: repr, ft_factor, registry

    @Test func descriptionInSpeeChainsShape() throws {
        let model = try Self.model()
        let whole = try OptimScheduler(type: NoamLr.typeName, conf: ["optim_type": "Adam", "warmup_steps": 4000],
                                       model: model, options: TrainingOptions())
        #expect(whole.description == "NoamLr(optimizer=Adam, optim_loss=loss, updated_modules=None, d_model=None, warmup_steps=4000)")
        let encoderOnly = try OptimScheduler(type: NoamLr.typeName,
                                             conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1]), "updated_modules": .list(["encoder"]),
                                                    "d_model": 256, "warmup_steps": 25000],
                                             model: model, options: TrainingOptions())
        #expect(encoderOnly.description == "NoamLr(optimizer=SGD, optim_loss=loss, updated_modules=['encoder'], d_model=256, warmup_steps=25000)")
        let both = try OptimScheduler(type: NoamLr.typeName,
                                      conf: ["optim_type": "Adam", "updated_modules": .list(["encoder", "decoder"])],
                                      model: model, options: TrainingOptions())
        #expect(both.description == "NoamLr(optimizer=Adam, optim_loss=loss, updated_modules=['encoder', 'decoder'], d_model=None, warmup_steps=4000)")
    }

    @Test func updateLRUsesTheOptimizersConfiguredLR() throws {
        let model = try Self.model()
        let scheduler = try OptimScheduler(type: NoamLr.typeName,
                                           conf: ["optim_type": "Adam", "optim_conf": .map(["lr": 2e-3]), "warmup_steps": 50],
                                           model: model, options: TrainingOptions(ftFactor: 0.5))
        let initLR = 2e-3 * Double(50).squareRoot()
        for s in [1, 10, 50, 51, 200] {
            let want = initLR * min(Foundation.pow(Double(s), -0.5), Double(s) * Foundation.pow(50, -1.5))
            #expect(Self.close(scheduler.updateLR(realStep: s, epochNum: 1), want), "step \(s)")
        }
        // step() sets lr = ft_factor · update_lr(real_step, epoch).
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(Batch(features: [Float](repeating: 0.25, count: 4), labels: [1], cols: 4),
                          context: ForwardContext(training: false), losses: &losses, metrics: &metrics)
        let report = try scheduler.step(losses: losses, stepNum: 10, epochNum: 1)
        #expect(Self.close(try #require(report.lr), 0.5 * initLR * 10 * Foundation.pow(50, -1.5)))
    }

    @Test func registeredScheduleIsUsableWithoutChangingTheOptimScheduler() throws {
        LRSchedules.register(InversePowerTestLr.self)
        #expect(try LRSchedules.type(named: InversePowerTestLr.typeName) is InversePowerTestLr.Type)
        let model = try Self.model()
        let scheduler = try OptimScheduler(type: InversePowerTestLr.typeName,
                                           conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.3]), "power": 2],
                                           model: model, options: TrainingOptions())
        for s in [1, 4, 9] {
            #expect(Self.close(scheduler.updateLR(realStep: s, epochNum: 1), 0.3 / Double((1 + s) * (1 + s))))
        }
        #expect(scheduler.description == "InversePowerTestLr(optimizer=SGD, optim_loss=loss, updated_modules=None, power=2.0)")
        // Its own keys are checked like any other schedule's.
        let error = Self.configError {
            _ = try OptimScheduler(type: InversePowerTestLr.typeName, conf: ["optim_type": "SGD", "warmup_steps": 3],
                                   model: model, options: TrainingOptions())
        }
        guard case .unknownKey(_, "warmup_steps", let valid)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(valid.contains("power"))
    }
}
