import Foundation
import Testing
@testable import SpeechainMPI

/// The Swift ARASR against PyTorch (scripts/reference/arasr_ref.py: SpeeChain's modules rewritten in torch, fixed
/// weights, 3 utterances of 41/33/27 frames, dropout off): losses and metrics within 1e-5 relative, every
/// parameter gradient within 1e-4 relative (per tensor, max-norm), the intermediate tensors and BatchNorm's
/// updated running statistics.
@Suite struct ARASRReferenceTests {
    struct Case {
        let name: String
        let model: ARASR
        let batch: Batch
        let outputs: [String: Any]
        let grads: [String: NamedTensor]
        let intermediates: [String: NamedTensor]
    }

    static func load(_ name: String) throws -> Case {
        let dir = TestResources.url("asr_refs/\(name)")
        let outputs = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("outputs.json"))) as! [String: Any]
        let config = outputs["config"] as! [String: Any]
        var p = ARASR.Parts(vocabSize: config["vocab"] as! Int)
        p.ctcWeight = Float(config["ctc_weight"] as! Double)
        p.labelSmoothing = Float(config["label_smoothing"] as! Double)
        p.featDim = config["idim"] as! Int
        p.convDims = config["conv_dims"] as! [Int]
        p.convBatchNorm = config["conv_batchnorm"] as! Bool
        p.convActivation = config["conv_activation"] as? String
        p.lnrDims = [config["d_model"] as! Int]
        for conf in [\ARASR.Parts.encoder, \ARASR.Parts.decoder] {
            p[keyPath: conf].dModel = config["d_model"] as! Int
            p[keyPath: conf].heads = config["num_heads"] as! Int
            p[keyPath: conf].ffnSize = config["fdfwd_dim"] as! Int
            p[keyPath: conf].ffnActivation = config["fdfwd_activation"] as! String
            p[keyPath: conf].posencDropout = 0; p[keyPath: conf].attDropout = 0
            p[keyPath: conf].ffnDropout = 0; p[keyPath: conf].resDropout = 0
        }
        p.encoder.layers = config["enc_layers"] as! Int
        p.decoder.layers = config["dec_layers"] as! Int
        p.encoder.embScale = config["enc_emb_scale"] as! Bool
        p.decoder.embScale = config["dec_emb_scale"] as! Bool
        let model = try ARASR(p, seed: 1)
        let weights = try Safetensors.read(contentsOf: dir.appendingPathComponent("weights.safetensors")).tensors
        try model.loadStateDict(weights, source: "weights.safetensors")

        var inputs: [String: NamedTensor] = [:]
        for t in try Safetensors.read(contentsOf: dir.appendingPathComponent("inputs.safetensors")).tensors { inputs[t.name] = t }
        var batch = Batch()
        let f = batch.slot("feat"), x = batch.slot("text")
        let feat = inputs["feat"]!, text = inputs["text"]!
        batch.tensors[f].shape = feat.shape; batch.tensors[f].floats = feat.values
        batch.tensors[f].lengths = inputs["feat_len"]!.values.map { Int($0) }
        batch.tensors[x].shape = text.shape; batch.tensors[x].ints = text.values.map { Int32($0) }
        batch.tensors[x].lengths = inputs["text_len"]!.values.map { Int($0) }
        var grads: [String: NamedTensor] = [:], inter: [String: NamedTensor] = [:]
        for t in try Safetensors.read(contentsOf: dir.appendingPathComponent("grads.safetensors")).tensors { grads[t.name] = t }
        for t in try Safetensors.read(contentsOf: dir.appendingPathComponent("intermediates.safetensors")).tensors { inter[t.name] = t }
        return Case(name: name, model: model, batch: batch, outputs: outputs, grads: grads, intermediates: inter)
    }

    /// max|a − b| / max(max|b|, floor). The floor matters for the attention's key biases: adding a constant to every
    /// score of a query's row leaves its softmax unchanged, so their true gradient is 0 and both sides hold float32
    /// rounding noise (≈1e-8); 1e-4 relative of a gradient of size 1e-2 is the bound there.
    static func maxRelative(_ a: [Float], _ b: [Float], floor: Double = 1e-30) -> Double {
        precondition(a.count == b.count)
        var diff = 0.0, norm = 0.0
        for (x, y) in zip(a, b) { diff = max(diff, Double(abs(x - y))); norm = max(norm, Double(abs(y))) }
        return diff / max(norm, floor)
    }

    func check(_ name: String) throws {
        let c = try Self.load(name)
        var losses = NamedValues(names: c.model.lossNames), metrics = NamedValues(names: c.model.metricNames)
        try c.model.forward(c.batch, context: ForwardContext(training: true), losses: &losses, metrics: &metrics)
        for key in ["loss", "ce_loss", "ctc_loss", "accuracy"] {
            let expected = c.outputs[key] as! Double
            let got = Double(key == "loss" ? losses[key]! : metrics[key]!)
            #expect(abs(got - expected) <= 1e-5 * max(abs(expected), 1e-3), "\(name): \(key) \(got) vs \(expected)")
        }
        // intermediate tensors (localise a failure)
        let encOut = c.model.encoder.output.toArray(0..<c.intermediates["enc_out"]!.values.count)
        #expect(Self.maxRelative(encOut, c.intermediates["enc_out"]!.values) < 1e-5, "\(name): enc_out")
        // BatchNorm's running statistics after the training forward
        for bn in c.model.batchNorms { for t in bn.buffers {
            guard let ref = c.intermediates["after." + t.name] else { Issue.record("\(name): no reference for \(t.name)"); continue }
            #expect(Self.maxRelative(t.values, ref.values) < 1e-5, "\(name): \(t.name)")
        } }
        c.model.parameters.zeroGradients([0..<c.model.parameters.count])
        try c.model.backward(loss: "loss", seed: 1, modules: c.model.moduleNames)
        #expect(Set(c.grads.keys) == Set(c.model.parameters.entries.map(\.name)), "\(name): parameter names")
        var worst = (0.0, "")
        for e in c.model.parameters.entries {
            guard let ref = c.grads[e.name] else { continue }
            let r = Self.maxRelative(c.model.parameters.gradients.toArray(e.range), ref.values,
                                     floor: e.name.hasSuffix("k_layer.bias") ? 1e-2 : 1e-30)
            if r > worst.0 { worst = (r, e.name) }
            #expect(r < 1e-4, "\(name): gradient of \(e.name)")
        }
        print("\(name): worst gradient \(worst.1) at \(worst.0) relative")
    }

    @Test func batchNormGELU() throws { try check("bn_gelu") }
    @Test func noBatchNormReLU() throws { try check("nobn_relu") }
    @Test func infeasibleCTCTargetIsZeroed() throws { try check("ctc_inf") }
}
