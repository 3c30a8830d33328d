import Foundation
import Testing
@testable import SpeechainMPI

/// ARASR under use_amp against `scripts/reference/arasr_amp_ref.py`: SpeeChain's modules in torch, float64
/// arithmetic rounded to p exactly where docs/amp-arasr.md says autocast holds a tensor in p (CUDA's op lists; the
/// weights and inputs of `asr_refs`, dropout off).
///
/// The bounds come from the generator's sensitivity study (scripts/reference/README.md): for bfloat16, a float32
/// implementation of the same places differs from the float64 reference by ≤ 5.5e-8 in the loss and ≤ 2e-5 per
/// gradient tensor, while leaving out any single rounding place moves the loss by ≥ 1e-5 (forward places) or a
/// gradient tensor by ≥ 1.3e-2 — so 2e-6 and 3e-3 tell them apart. float16 rounds values near a boundary the other
/// way now and then, which cascades (noise 9.3e-6 / 1.7e-3, as large as a missing place): there the bounds are a
/// sanity check, and the exact checks — every Linear/Conv2d gradient and the logits are p values — carry the weight.
@Suite struct ARASRAutocastReferenceTests {
    struct Bounds { let loss: Double; let gradient: Double }

    func check(_ name: String, base: String, bounds: Bounds) throws {
        let c = try ARASRReferenceTests.load(base)
        let dir = TestResources.url("asr_amp_refs/\(name)")
        let outputs = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("outputs.json"))) as! [String: Any]
        var grads: [String: NamedTensor] = [:], inter: [String: NamedTensor] = [:]
        for t in try Safetensors.read(contentsOf: dir.appendingPathComponent("grads.safetensors")).tensors { grads[t.name] = t }
        for t in try Safetensors.read(contentsOf: dir.appendingPathComponent("intermediates.safetensors")).tensors { inter[t.name] = t }
        let p = try #require(ReducedPrecision(rawValue: outputs["amp_dtype"] as! String))
        let seed = Float(outputs["seed"] as! Double)
        #expect(outputs["weights_from"] as? String == "asr_refs/\(base)")

        var losses = NamedValues(names: c.model.lossNames), metrics = NamedValues(names: c.model.metricNames)
        try c.model.forward(c.batch, context: ForwardContext(training: true, amp: p), losses: &losses, metrics: &metrics)
        for key in ["loss", "ce_loss", "ctc_loss", "accuracy"] {
            let expected = outputs[key] as! Double
            let got = Double(key == "loss" ? losses[key]! : metrics[key]!)
            #expect(abs(got - expected) <= bounds.loss * max(abs(expected), 1e-3), "\(name): \(key) \(got) vs \(expected)")
        }
        // the p-valued logits are p values, bit for bit, and near the reference's
        for (key, buffer) in [("logits", c.model.logits), ("ctc_logits", c.model.ctcLogits)] {
            let ref = try #require(inter[key])
            let got = buffer.toArray(0..<ref.values.count)
            #expect(got.allSatisfy { p.round($0) == $0 }, "\(name): \(key) not \(p) values")
            #expect(ARASRReferenceTests.maxRelative(got, ref.values) < 10 * bounds.gradient, "\(name): \(key)")
        }
        let encOut = c.model.encoder.output.toArray(0..<inter["enc_out"]!.values.count)
        #expect(ARASRReferenceTests.maxRelative(encOut, inter["enc_out"]!.values) < 10 * bounds.gradient, "\(name): enc_out")

        c.model.parameters.zeroGradients([0..<c.model.parameters.count])
        try c.model.backward(loss: "loss", seed: seed, modules: c.model.moduleNames)
        #expect(Set(grads.keys) == Set(c.model.parameters.entries.map(\.name)), "\(name): parameter names")
        let pValued = Set(outputs["p_valued_grads"] as! [String])
        #expect(pValued.count > 50)
        var worst = (0.0, "")
        for e in c.model.parameters.entries {
            guard let ref = grads[e.name] else { continue }
            let got = c.model.parameters.gradients.toArray(e.range)
            if pValued.contains(e.name) {
                #expect(got.allSatisfy { p.round($0) == $0 }, "\(name): the gradient of \(e.name) is not made of \(p) values")
            }
            let r = ARASRReferenceTests.maxRelative(got, ref.values, floor: e.name.hasSuffix("k_layer.bias") ? 1e-2 * Double(seed) : 1e-30)
            if r > worst.0 { worst = (r, e.name) }
            #expect(r < bounds.gradient, "\(name): gradient of \(e.name) at \(r)")
        }
        print("\(name): loss \(losses["loss"]!) vs \(outputs["loss"] as! Double); worst gradient \(worst.1) at \(worst.0) relative")
    }

    @Test func batchNormGELUInBFloat16() throws {
        try check("bn_gelu_bfloat16", base: "bn_gelu", bounds: Bounds(loss: 2e-6, gradient: 3e-3))
    }

    @Test func noBatchNormReLUInBFloat16() throws {
        try check("nobn_relu_bfloat16", base: "nobn_relu", bounds: Bounds(loss: 2e-6, gradient: 3e-3))
    }

    /// What the GradScaler relies on: under float16 a loss scale the format cannot hold overflows the gradients to
    /// ±inf (first where the loss gradient re-enters the p logits), and a moderate one does not; in float32, and in
    /// bfloat16 (float32's range), the same huge scale stays finite.
    @Test(arguments: [ReducedPrecision?.none, .float16, .bfloat16])
    func aTooLargeLossScaleOverflowsOnlyInFloat16(amp: ReducedPrecision?) throws {
        let c = try ARASRReferenceTests.load("bn_gelu")
        var losses = NamedValues(names: c.model.lossNames), metrics = NamedValues(names: c.model.metricNames)
        for (seed, overflows) in [(Float(1024), false), (Float(0x1p40), amp == .float16)] {
            try c.model.forward(c.batch, context: ForwardContext(training: true, amp: amp), losses: &losses, metrics: &metrics)
            c.model.parameters.zeroGradients([0..<c.model.parameters.count])
            try c.model.backward(loss: "loss", seed: seed, modules: c.model.moduleNames)
            let finite = Kernels.allFinite(c.model.parameters.gradients.pointer, count: c.model.parameters.count)
            #expect(finite == !overflows, "\(amp.map(\.rawValue) ?? "float32"), loss scale \(seed): finite \(finite)")
        }
    }

    /// The encoder's positional encoding with emb_scale (no reference case has it): x·√d is an op on the p-valued
    /// prenet output, so it is rounded before the float32 table is added; its gradient p(p(g)·√d). Checked against
    /// the formula with values where each rounding shows, and against float32 (no rounding anywhere).
    @Test(arguments: [ReducedPrecision?.none, .float16, .bfloat16])
    func scaledPositionalEncodingRoundsTheScaledInput(amp: ReducedPrecision?) {
        let d = 6, frames = 2
        let pe = PositionalEncoding(dModel: d, embScale: true, dropout: 0)
        let x: [Float] = (0..<(frames * d)).map { amp?.round(1 + Float($0) * 0x1p-7) ?? (1 + Float($0) * 0x1p-7) }
        let context = ForwardContext(training: true, amp: amp)
        x.withUnsafeBufferPointer { pe.forward($0.baseAddress!, batch: 1, frames: frames, context: context, inputPrecision: amp) }
        let s = Float(d).squareRoot()
        let table = PositionalEncoding(dModel: d, embScale: false, dropout: 0)
        let zeros = [Float](repeating: 0, count: frames * d)
        zeros.withUnsafeBufferPointer { table.forward($0.baseAddress!, batch: 1, frames: frames, context: ForwardContext(training: true)) }
        for i in 0..<(frames * d) {
            let scaled = amp?.round(x[i] * s) ?? x[i] * s
            #expect(pe.output[i] == scaled + table.output[i], "y[\(i)] = \(pe.output[i]), want \(scaled + table.output[i])")
        }
        var g: [Float] = (0..<(frames * d)).map { 0.3 + Float($0) * 0x1p-10 }
        var dx = [Float](repeating: 0, count: frames * d)
        g.withUnsafeMutableBufferPointer { gp in dx.withUnsafeMutableBufferPointer { pe.backward(gp.baseAddress!, dx: $0.baseAddress!) } }
        for i in 0..<(frames * d) {
            let want = amp.map { $0.round($0.round(g[i]) * s) } ?? g[i] * s
            #expect(dx[i] == want, "dx[\(i)] = \(dx[i]), want \(want)")
        }
        if let amp {   // the values are such that both roundings change something (else the test could not fail)
            #expect((0..<(frames * d)).contains { x[$0] * s != amp.round(x[$0] * s) })
            #expect((0..<(frames * d)).contains { g[$0] * s != dx[$0] })
        }
    }

    @Test func batchNormGELUInFloat16WithALossScale() throws {
        try check("bn_gelu_float16", base: "bn_gelu", bounds: Bounds(loss: 5e-5, gradient: 1e-2))
    }
}
