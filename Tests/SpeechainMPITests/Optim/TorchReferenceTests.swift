import Foundation
import Testing
@testable import SpeechainMPI

/// The trajectories computed with real PyTorch (Resources/torch_refs): OptimScheduler semantics end to end.
@Suite struct TorchReferenceTests {
    struct Scenario: Decodable {
        struct Exp: Decodable {
            let num_epochs: Int, accum_grad: Int, ft_factor: Double, grad_clip: Double, grad_norm_type: Double, use_amp: Bool

            enum CodingKeys: String, CodingKey { case num_epochs, accum_grad, ft_factor, grad_clip, grad_norm_type, use_amp }

            /// grad_norm_type is a number, or the string "inf" (JSON has no infinity).
            init(from decoder: Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                num_epochs = try c.decode(Int.self, forKey: .num_epochs)
                accum_grad = try c.decode(Int.self, forKey: .accum_grad)
                ft_factor = try c.decode(Double.self, forKey: .ft_factor)
                grad_clip = try c.decode(Double.self, forKey: .grad_clip)
                use_amp = try c.decode(Bool.self, forKey: .use_amp)
                if let s = try? c.decode(String.self, forKey: .grad_norm_type) {
                    guard s == "inf" else {
                        throw DecodingError.dataCorruptedError(forKey: .grad_norm_type, in: c, debugDescription: "'\(s)' is not inf")
                    }
                    grad_norm_type = .infinity
                } else {
                    grad_norm_type = try c.decode(Double.self, forKey: .grad_norm_type)
                }
            }
        }
        struct Sche: Decodable {
            let type: String; let optim_type: String; let optim_conf: [String: ConfigValue]; let sche_conf: [String: ConfigValue]
            let updated_modules: [String]?; let step_per_update: Int?
        }
        let exp: Exp
        let optim_sches: [String: Sche]
        /// The schedulers' order when there are several (a JSON object has none).
        let optim_sches_order: [String]?

        var options: TrainingOptions {
            TrainingOptions(accumGrad: exp.accum_grad, ftFactor: exp.ft_factor, gradClip: exp.grad_clip,
                            gradNormType: exp.grad_norm_type, useAMP: exp.use_amp)
        }

        /// The OptimScheduler `name` of the scenario, built from its conf as SpeeChain's `{type, conf}` would be.
        func scheduler(_ name: String, model: MLPClassifier) throws -> OptimScheduler {
            let sche = try #require(optim_sches[name])
            var conf = sche.sche_conf
            conf["optim_type"] = .string(sche.optim_type)
            conf["optim_conf"] = .map(sche.optim_conf)
            if let mods = sche.updated_modules { conf["updated_modules"] = .list(mods.map { .string($0) }) }
            if let n = sche.step_per_update { conf["step_per_update"] = .int(n) }
            return try OptimScheduler(name: name, type: sche.type, conf: conf, model: model, options: options)
        }
    }
    struct TraceRecord: Decodable {
        let step_num: Int, epoch: Int, loss: Double
        let lr: [String: Double]
        let grad_norm: [String: Double]
        let skipped: [String: Bool]
    }

    @Test(arguments: ["adam_noam_accum4", "sgd_nesterov_exp"])
    func reproducesPyTorchTrajectory(name: String) throws {
        try Self.replay(name)
    }

    /// Replays the one-scheduler trajectory torch_refs/<name> step by step (loss ≤ 1e-5 relative, lr, grad norm and
    /// skip flag as `expect`, final weights ≤ 1e-5); returns the scenario and the reference's grad norms of its updates.
    @discardableResult
    static func replay(_ name: String) throws -> (Scenario, [Double]) {
        let dir = "torch_refs/\(name)"
        let scenario = try decodeJSON(Scenario.self, "\(dir)/scenario.json")
        let trace = try decodeJSON([TraceRecord].self, "\(dir)/trace.json")
        let data = try ReferenceData(directory: dir)
        let model = try ReferenceModel.make(initWeights: "\(dir)/init.safetensors")
        let exp = scenario.exp
        let scheduler = try scenario.scheduler("main", model: model)
        #expect(trace.count == exp.num_epochs * data.batchesPerEpoch)
        var norms: [Double] = [], lossError = 0.0, normError = 0.0

        try ReferenceModel.train(model, schedulers: [scheduler], data: data, steps: trace.count) { stepNum, loss, reports in
            let ref = trace[stepNum - 1]
            lossError = max(lossError, abs(Double(loss) - ref.loss) / abs(ref.loss))
            #expect(abs(Double(loss) - ref.loss) <= 1e-5 * max(abs(ref.loss), 1e-3), "loss at step \(stepNum)")
            if let norm = Self.expect(reports[0], matches: ref, scheduler: "main", stepNum: stepNum) {
                norms.append(norm)
                normError = max(normError, abs(Double(reports[0].gradNorm ?? .nan) - norm) / norm)
            }
        }
        let weightError = try Self.expectFinalWeights(of: model, in: dir)
        print("\(name): loss ≤ \(String(format: "%.1e", lossError)), grad_norm ≤ \(String(format: "%.1e", normError)) relative; "
              + "final weights \(String(format: "%.1e", weightError)) (max|Δ|/max|ref| per tensor)")
        return (scenario, norms)
    }

    /// Trajectories whose total gradient norm exceeds grad_clip on most updates (scripts/reference/clip_refs.py):
    /// SGD, whose step is proportional to the clipped gradient (so the clipping coefficient shows in the weights), with
    /// grad_norm_type 2 (momentum, exponential decay), 1 (nesterov, weight decay, accum_grad 2) and inf (weight decay).
    /// Same bounds as the other trajectories: every step's loss, lr, grad norm, and the final weights ≤ 1e-5.
    @Test(arguments: [("clip_sgd_momentum_l2", 2.0), ("clip_sgd_nesterov_l1_accum2", 1.0), ("clip_sgd_wd_inf", Double.infinity)])
    func reproducesPyTorchClippedTrajectory(name: String, normType: Double) throws {
        let (scenario, norms) = try Self.replay(name)
        #expect(scenario.exp.grad_norm_type == normType)
        let clipped = norms.filter { $0 > scenario.exp.grad_clip }.count
        #expect(norms.count == scenario.exp.num_epochs * 8 / scenario.exp.accum_grad)
        #expect(clipped >= norms.count * 7 / 10 && clipped < norms.count, "\(clipped) of \(norms.count) updates clipped")
        print("\(name): \(clipped) of \(norms.count) updates clipped (grad_clip \(scenario.exp.grad_clip), grad_norm_type \(normType))")
    }

    /// Stopped inside an accumulation window (step 6 of accum_grad 4: two micro-steps pending; step 7 of the
    /// two-scheduler reference: accum_grad 2 with one pending and the decoder's step_per_update 2 half done),
    /// written to a checkpoint file, read into a fresh model and fresh schedulers, continued: every later step and
    /// the final weights still match PyTorch's uninterrupted trajectory.
    @Test(arguments: [("adam_noam_accum4", 6), ("two_sches_decoder_first", 7)])
    func aCheckpointInsideAnAccumulationWindowContinuesThePyTorchTrajectory(name: String, stop: Int) throws {
        let dir = "torch_refs/\(name)"
        let scenario = try decodeJSON(Scenario.self, "\(dir)/scenario.json")
        let trace = try decodeJSON([TraceRecord].self, "\(dir)/trace.json")
        let data = try ReferenceData(directory: dir)
        let order = scenario.optim_sches_order ?? ["main"]
        #expect(stop % scenario.exp.accum_grad != 0)
        let first = try ReferenceModel.make(initWeights: "\(dir)/init.safetensors")
        let firstSchedulers = try order.map { try scenario.scheduler($0, model: first) }
        try ReferenceModel.train(first, schedulers: firstSchedulers, data: data, steps: stop)
        #expect(first.parameters.gradients.toArray().contains { $0 != 0 }, "the stop must leave a partial gradient")
        let scratch = try TestResources.scratchDirectory("torch-resume")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let file = scratch.appendingPathComponent(Checkpoint.fileName)
        var state = CheckpointState()
        state.stepNum = stop
        try Checkpoint.write(state, model: first, schedulers: firstSchedulers, to: file)

        // a fresh process would start from other weights: the checkpoint must bring everything
        let model = try ReferenceModel.make(initWeights: "\(dir)/init.safetensors")
        model.parameters.values.pointer.update(repeating: 0.5, count: model.parameters.count)
        let schedulers = try order.map { try scenario.scheduler($0, model: model) }
        let restored = try Checkpoint.read(from: file, model: model, schedulers: schedulers)
        #expect(restored.stepNum == stop)
        try ReferenceModel.train(model, schedulers: schedulers, data: data, steps: trace.count - stop, startStep: stop + 1) { stepNum, loss, reports in
            let ref = trace[stepNum - 1]
            #expect(abs(Double(loss) - ref.loss) <= 1e-5 * max(abs(ref.loss), 1e-3), "loss at step \(stepNum)")
            for (k, n) in order.enumerated() { Self.expect(reports[k], matches: ref, scheduler: n, stepNum: stepNum) }
        }
        try Self.expectFinalWeights(of: model, in: dir)
    }

    /// One scheduler's step against the reference: lr exact (≤ 1e-12) when it acted, grad norm ≤ 1e-5 relative when
    /// it updated, the skip flag; returns the reference grad norm of an update step.
    @discardableResult
    static func expect(_ report: StepReport, matches ref: TraceRecord, scheduler name: String, stepNum: Int) -> Double? {
        if let lr = ref.lr[name] {
            #expect(abs((report.lr ?? .nan) - lr) <= 1e-12, "\(name) lr at step \(stepNum)")
        } else {
            #expect(report.lr == nil, "\(name) acted at step \(stepNum)")
        }
        if let norm = ref.grad_norm[name] {
            let got = Double(report.gradNorm ?? .nan)
            #expect(abs(got - norm) <= 1e-5 * norm, "\(name) grad_norm at step \(stepNum): \(got) vs \(norm)")
        } else {
            #expect(report.gradNorm == nil, "\(name) updated at step \(stepNum)")
        }
        #expect(report.skipped == (ref.skipped[name] ?? false))
        return ref.grad_norm[name]
    }

    /// The model's weights against the reference's final.safetensors, ≤ 1e-5 relative.
    @discardableResult
    static func expectFinalWeights(of model: MLPClassifier, in dir: String) throws -> Double {
        let final = try Safetensors.read(contentsOf: TestResources.url("\(dir)/final.safetensors"))
        let expected = Dictionary(uniqueKeysWithValues: final.tensors.map { ($0.name, $0.values) })
        let diff = ReferenceModel.maxRelativeDifference(model, expected)
        #expect(diff <= 1e-5, "final weights differ by \(diff) relative")
        return diff
    }

    static let twoSches = "torch_refs/two_sches_decoder_first"

    /// Trains the two-scheduler reference with the schedulers in `order`; returns the model and each step's
    /// loss and reports by scheduler name.
    static func trainTwoSches(order: [String]) throws -> (MLPClassifier, [(loss: Float, reports: [String: StepReport])]) {
        let scenario = try decodeJSON(Scenario.self, "\(twoSches)/scenario.json")
        let data = try ReferenceData(directory: twoSches)
        let model = try ReferenceModel.make(initWeights: "\(twoSches)/init.safetensors")
        let schedulers = try order.map { try scenario.scheduler($0, model: model) }
        try OptimSchedulers.checkDisjoint(schedulers)
        var steps: [(loss: Float, reports: [String: StepReport])] = []
        try ReferenceModel.train(model, schedulers: schedulers, data: data, steps: scenario.exp.num_epochs * data.batchesPerEpoch) {
            _, loss, reports in
            steps.append((loss, Dictionary(uniqueKeysWithValues: zip(order, reports))))
        }
        return (model, steps)
    }

    /// Two OptimSchedulers (decoder: SGD+nesterov, exp decay, step_per_update 2; encoder: Adam+Noam), the output
    /// side first, accum_grad 2 and a grad_clip that clips: every backward of a step must see the forward's weights.
    @Test func reproducesPyTorchTwoSchedulersDecoderFirst() throws {
        let scenario = try decodeJSON(Scenario.self, "\(Self.twoSches)/scenario.json")
        let trace = try decodeJSON([TraceRecord].self, "\(Self.twoSches)/trace.json")
        let order = try #require(scenario.optim_sches_order)
        #expect(order == ["decoder", "encoder"])
        let (model, steps) = try Self.trainTwoSches(order: order)
        #expect(steps.count == trace.count)
        var clipped = 0
        for (i, (ref, got)) in zip(trace, steps).enumerated() {
            let stepNum = i + 1
            #expect(ref.step_num == stepNum)
            #expect(abs(Double(got.loss) - ref.loss) <= 1e-5 * max(abs(ref.loss), 1e-3), "loss at step \(stepNum)")
            for name in order {
                let report = try #require(got.reports[name])
                if let norm = Self.expect(report, matches: ref, scheduler: name, stepNum: stepNum), norm > scenario.exp.grad_clip {
                    clipped += 1
                }
            }
        }
        #expect(clipped > 0, "the reference is meant to exercise clipping")
        try Self.expectFinalWeights(of: model, in: Self.twoSches)
    }

    /// The order of the OptimSchedulers does not matter: encoder first gives the decoder-first weights bit for bit.
    @Test func twoSchedulersDoNotDependOnOrder() throws {
        let (first, _) = try Self.trainTwoSches(order: ["decoder", "encoder"])
        let (reversed, _) = try Self.trainTwoSches(order: ["encoder", "decoder"])
        let a = first.parameters.values.toArray()
        let b = reversed.parameters.values.toArray()
        #expect(a.count == b.count)
        let moved = zip(a, b).filter { $0 != $1 }.count
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        #expect(moved == 0, "the reversed order moves \(moved) of \(a.count) weights, by up to \(worst)")
    }
}
