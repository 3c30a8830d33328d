import Foundation
import Testing
@testable import SpeechainMPI

/// The two trajectories computed with real PyTorch (../shared/refs): OptimScheduler semantics end to end.
@Suite struct TorchReferenceTests {
    struct Scenario: Decodable {
        struct Exp: Decodable {
            let num_epochs: Int, accum_grad: Int, ft_factor: Double, grad_clip: Double, grad_norm_type: Double, use_amp: Bool
        }
        struct Sche: Decodable { let type: String; let optim_type: String; let optim_conf: [String: ConfigValue]; let sche_conf: [String: ConfigValue] }
        let exp: Exp
        let optim_sches: [String: Sche]
    }
    struct TraceRecord: Decodable {
        let step_num: Int, epoch: Int, loss: Double
        let lr: [String: Double]
        let grad_norm: [String: Double]
        let skipped: [String: Bool]
    }

    @Test(arguments: ["adam_noam_accum4", "sgd_nesterov_exp"])
    func reproducesPyTorchTrajectory(name: String) throws {
        let dir = "torch_refs/\(name)"
        let scenario = try decodeJSON(Scenario.self, "\(dir)/scenario.json")
        let trace = try decodeJSON([TraceRecord].self, "\(dir)/trace.json")
        let data = try ReferenceData(directory: dir)
        let model = try ReferenceModel.make(initWeights: "\(dir)/init.safetensors")
        let exp = scenario.exp
        let options = TrainingOptions(accumGrad: exp.accum_grad, ftFactor: exp.ft_factor, gradClip: exp.grad_clip,
                                      gradNormType: exp.grad_norm_type, useAMP: exp.use_amp)
        let sche = try #require(scenario.optim_sches["main"])
        var conf = sche.sche_conf
        conf["optim_type"] = .string(sche.optim_type)
        conf["optim_conf"] = .map(sche.optim_conf)
        let scheduler = try OptimScheduler(name: "main", type: sche.type, conf: conf, model: model, options: options)
        #expect(trace.count == exp.num_epochs * data.batchesPerEpoch)

        try ReferenceModel.train(model, schedulers: [scheduler], data: data, steps: trace.count) { stepNum, loss, reports in
            let ref = trace[stepNum - 1]
            let report = reports[0]
            #expect(abs(Double(loss) - ref.loss) <= 1e-5 * max(abs(ref.loss), 1e-3), "loss at step \(stepNum)")
            if let lr = ref.lr["main"] {
                #expect(abs((report.lr ?? .nan) - lr) <= 1e-12, "lr at step \(stepNum)")
            } else {
                #expect(report.lr == nil)
            }
            if let norm = ref.grad_norm["main"] {
                let got = Double(report.gradNorm ?? .nan)
                #expect(abs(got - norm) <= 1e-5 * norm, "grad_norm at step \(stepNum): \(got) vs \(norm)")
            } else {
                #expect(report.gradNorm == nil)
            }
            #expect(report.skipped == (ref.skipped["main"] ?? false))
        }
        let final = try Safetensors.read(contentsOf: TestResources.url("\(dir)/final.safetensors"))
        let expected = Dictionary(uniqueKeysWithValues: final.tensors.map { ($0.name, $0.values) })
        let diff = ReferenceModel.maxRelativeDifference(model, expected)
        #expect(diff <= 1e-5, "final weights differ by \(diff) relative")
    }
}
