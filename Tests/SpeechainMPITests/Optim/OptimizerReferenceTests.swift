import Foundation
import Testing
@testable import SpeechainMPI

/// 20 updates of every optimizer variant against trajectories computed by scripts/reference/optim_refs.py, which
/// implements torch.optim's documented algorithms op by op and is itself checked against real PyTorch runs.
@Suite struct OptimizerReferenceTests {
    struct Reference: Decodable {
        let name: String
        let optim_type: String
        let optim_conf: [String: ConfigValue]
        let updates: Int
        let losses: [Double]
        let final: [String: [Float]]
    }

    static let scenarios = [
        "sgd_plain", "sgd_momentum_dampening_wd", "sgd_nesterov_wd", "sgd_maximize",
        "adam_default", "adam_wd_amsgrad", "adamw", "adamw_amsgrad",
        "adagrad", "rmsprop_default", "rmsprop_centered_momentum_wd",
    ]

    @Test(arguments: scenarios)
    func matchesTorchUpdateRule(name: String) throws {
        let ref = try decodeJSON(Reference.self, "optim_refs/\(name).json")
        let data = try ReferenceData(directory: "torch_refs/adam_noam_accum4")
        let model = try ReferenceModel.make()
        // A constant schedule and no clipping: only the optimizer acts.
        let scheduler = try OptimScheduler(
            type: ConstantLr.typeName,
            conf: ["optim_type": .string(ref.optim_type), "optim_conf": .map(ref.optim_conf)],
            model: model, options: TrainingOptions(gradClip: 0))
        var losses: [Float] = []
        try ReferenceModel.train(model, schedulers: [scheduler], data: data, steps: ref.updates) { _, loss, _ in losses.append(loss) }
        for (i, (got, want)) in zip(losses, ref.losses).enumerated() {
            #expect(abs(Double(got) - want) <= 1e-4 * max(abs(want), 1e-2), "loss at update \(i + 1): \(got) vs \(want)")
        }
        let diff = ReferenceModel.maxRelativeDifference(model, ref.final)
        #expect(diff <= 1e-5, "\(name): final weights differ by \(diff) relative")
        #expect(scheduler.optimizer.stepCount == ref.updates)
    }

    @Test func unknownOptimTypeNamesTheValidOnes() throws {
        let model = try ReferenceModel.make()
        let error = #expect(throws: ConfigError.self) {
            try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "Adamax"], model: model, options: TrainingOptions())
        }
        #expect(error?.description == "unknown optim_type 'Adamax'; valid: SGD, Adam, AdamW, Adagrad, RMSprop")
    }

    @Test func unknownOptimConfKeyNamesTheValidOnes() throws {
        let model = try ReferenceModel.make()
        let error = #expect(throws: ConfigError.self) {
            try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "Adam", "optim_conf": .map(["lr": 0.1, "beta1": 0.9])],
                               model: model, options: TrainingOptions())
        }
        let text = error?.description ?? ""
        #expect(text.contains("unknown key 'beta1'") && text.contains("betas") && text.contains("amsgrad"), "\(text)")
    }

    @Test func nesterovWithoutMomentumIsRejected() throws {
        let model = try ReferenceModel.make()
        #expect(throws: ConfigError.self) {
            try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "SGD", "optim_conf": .map(["lr": 0.1, "nesterov": true])],
                               model: model, options: TrainingOptions())
        }
    }
}

extension ConfigValue: ExpressibleByStringLiteral, ExpressibleByFloatLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
