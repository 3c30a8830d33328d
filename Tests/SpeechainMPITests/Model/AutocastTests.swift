import Foundation
import Testing
@testable import SpeechainMPI

/// Where autocast rounds, each place checked by a construction whose result is known in closed form and differs
/// between "rounded there" and "not rounded there": values like 1 + 2^-12, which float16 and bfloat16 both round
/// to 1, cancelling against −1 so that a missed rounding leaves 2^-12·k instead of 0. The float32 path (amp nil)
/// is the contrast every time.
@Suite struct AutocastTests {
    static let tiny: Float = 0x1p-12             // representable in both formats; 1 + tiny rounds to 1 in both
    static let precisions: [ReducedPrecision?] = [nil, .float16, .bfloat16]

    /// One Sequential over its own parameters, fed from a buffer that outlives the forward (as a model's would).
    final class Net {
        let store = ParameterStore()
        let sequential: Sequential
        let input = FloatBuffer(count: 0)
        let gradient = FloatBuffer(count: 0)
        var rows = 0

        init(_ inputWidth: Int, _ layers: [Layer]) {
            sequential = Sequential(name: "m", inputWidth: inputWidth, layers: layers)
            sequential.declareParameters(in: store)
            store.allocate()
        }

        func set(_ name: String, _ values: [Float]) { store.values.copy(from: values, at: store.info(name)!.offset) }
        func setGradient(_ name: String, _ values: [Float]) { store.gradients.copy(from: values, at: store.info(name)!.offset) }
        func gradient(_ name: String) -> [Float] { store.gradients.toArray(store.info(name)!.range) }

        func forward(_ x: [Float], rows: Int, amp: ReducedPrecision?, training: Bool = true) -> [Float] {
            self.rows = rows
            input.resize(to: x.count)
            input.copy(from: x)
            let y = sequential.forward(Matrix(input.pointer, rows: rows, cols: sequential.inputWidth),
                                       context: ForwardContext(training: training, amp: amp))
            return Array(UnsafeBufferPointer(start: y.data, count: y.count))
        }

        /// Back-propagates `dy` (the gradient of the output) and returns the input gradient.
        func backward(_ dy: [Float]) -> [Float] {
            gradient.resize(to: dy.count)
            gradient.copy(from: dy)
            let dx = sequential.backward(Matrix(gradient.pointer, rows: rows, cols: sequential.outputWidth),
                                         needInputGradient: true, accumulate: true)!
            return Array(UnsafeBufferPointer(start: dx.data, count: dx.count))
        }
    }

    /// The identity, recording what it sees: its input in forward and its output's gradient in backward.
    final class Probe: Layer {
        var x: [Float] = [], dy: [Float] = []
        var description: String { "Probe()" }
        func outputWidth(forInput width: Int) -> Int { width }
        func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
            self.x = Array(UnsafeBufferPointer(start: x.data, count: x.count))
            y.data.update(from: x.data, count: x.count)
        }
        func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
            self.dy = Array(UnsafeBufferPointer(start: dy.data, count: dy.count))
            dx?.data.update(from: dy.data, count: dy.count)
        }
    }

    /// An element-wise op that is on none of autocast's lists: y = c·x (computed in float32).
    final class Scale: Layer {
        let c: Float
        init(_ c: Float) { self.c = c }
        var description: String { "Scale(\(c))" }
        func outputWidth(forInput width: Int) -> Int { width }
        func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) { for i in 0..<x.count { y.data[i] = c * x.data[i] } }
        func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
            if let dx { for i in 0..<x.count { dx.data[i] = c * dy.data[i] } }
        }
    }

    static func representable(_ values: [Float], in p: ReducedPrecision) -> Bool {
        values.allSatisfy { ReducedPrecisionTests.reference(p, $0).bitPattern == $0.bitPattern }
    }

    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.normal() }
    }

    // MARK: Linear forward: the casts of input, weight and bias, the output, float32 accumulation

    @Test(arguments: precisions)
    func weightIsCastBeforeTheProduct(amp: ReducedPrecision?) {
        // y = Σ_j w_j·x_j with w = (1+2^-12, −1, …) over 64 inputs of 1: 32·2^-12 = 2^-7 exactly in float32;
        // w rounds to (1, −1, …) in either format and the sum cancels to 0
        let net = Net(64, [Linear(64, 1)])
        net.set("m.0.weight", (0..<64).map { $0 % 2 == 0 ? 1 + Self.tiny : -1 })
        net.set("m.0.bias", [0])
        let y = net.forward([Float](repeating: 1, count: 64), rows: 1, amp: amp)
        #expect(y == [amp == nil ? 0x1p-7 : 0])
    }

    @Test(arguments: precisions)
    func inputIsCastBeforeTheProduct(amp: ReducedPrecision?) {
        let net = Net(64, [Linear(64, 1)])
        net.set("m.0.weight", [Float](repeating: 1, count: 64))
        net.set("m.0.bias", [0])
        let y = net.forward((0..<64).map { $0 % 2 == 0 ? 1 + Self.tiny : -1 }, rows: 1, amp: amp)
        #expect(y == [amp == nil ? 0x1p-7 : 0])
    }

    @Test(arguments: precisions)
    func biasIsCast(amp: ReducedPrecision?) {
        // y = 1·(−1) + b with b = 1 + 2^-12: 2^-12 in float32, 0 once b is rounded to 1
        let net = Net(1, [Linear(1, 1)])
        net.set("m.0.weight", [1])
        net.set("m.0.bias", [1 + Self.tiny])
        #expect(net.forward([-1], rows: 1, amp: amp) == [amp == nil ? Self.tiny : 0])
    }

    @Test(arguments: precisions)
    func outputIsRoundedAndProductsAccumulateInFloat32(amp: ReducedPrecision?) {
        // y = 1 + 16·2^-11 + b: float32 accumulation gives 1 + 2^-7, representable in both formats (a running sum
        // rounded to either format after each term would stay at 1); then + b = 2^-12 leaves 1 + 2^-7 + 2^-12, which
        // the output rounding takes back to 1 + 2^-7
        let net = Net(17, [Linear(17, 1)])
        net.set("m.0.weight", [Float](repeating: 1, count: 17))
        net.set("m.0.bias", [Self.tiny])
        let y = net.forward([1] + [Float](repeating: 0x1p-11, count: 16), rows: 1, amp: amp)
        #expect(y == [amp == nil ? 1 + 0x1p-7 + Self.tiny : 1 + 0x1p-7])
    }

    @Test(arguments: precisions)
    func float16OverflowsWhereBFloat16DoesNot(amp: ReducedPrecision?) {
        // 256·256 = 65536 > 65504: +inf in float16 (65520 and above round past the largest finite value)
        let net = Net(1, [Linear(1, 2)])
        net.set("m.0.weight", [256, -256])
        net.set("m.0.bias", [0, 0])
        let y = net.forward([256], rows: 1, amp: amp)
        #expect(y == (amp == .float16 ? [.infinity, -.infinity] : [65536, -65536]))
    }

    // MARK: Linear backward: dW, db, dx as reduced-precision tensors; the accumulation buffer stays float32

    @Test(arguments: precisions)
    func weightAndBiasGradientsAreRoundedThenAccumulatedInFloat32(amp: ReducedPrecision?) {
        // two rows, x = 1 each, dy = (1, 2^-12): dW = db = 1 + 2^-12, rounded to 1 under autocast; the buffer already
        // holds g0, and g0 + 1 is then formed in float32 (1.0001 is representable in neither format)
        let g0: Float = 1e-4
        let net = Net(1, [Linear(1, 1)])
        net.set("m.0.weight", [1]); net.set("m.0.bias", [0])
        net.setGradient("m.0.weight", [g0]); net.setGradient("m.0.bias", [g0])
        _ = net.forward([1, 1], rows: 2, amp: amp)
        _ = net.backward([1, Self.tiny])
        let reduced: Float = amp == nil ? 1 + Self.tiny : 1
        #expect(net.gradient("m.0.weight") == [g0 + reduced])
        #expect(net.gradient("m.0.bias") == [g0 + reduced])
        if let amp { #expect(!Self.representable([g0 + reduced], in: amp), "the float32 sum is what is kept") }
    }

    @Test(arguments: precisions)
    func inputGradientUsesTheCastWeightAndIsRounded(amp: ReducedPrecision?) {
        // dx = Σ_o dy_o·w_o: with w = (1 + 2^-12, −1) the cast weight cancels; with w = (1, 2^-12) the sum 1 + 2^-12
        // is rounded to 1
        let cancel = Net(1, [Linear(1, 2)])
        cancel.set("m.0.weight", [1 + Self.tiny, -1]); cancel.set("m.0.bias", [0, 0])
        _ = cancel.forward([1], rows: 1, amp: amp)
        #expect(cancel.backward([1, 1]) == [amp == nil ? Self.tiny : 0])

        let round = Net(1, [Linear(1, 2)])
        round.set("m.0.weight", [1, Self.tiny]); round.set("m.0.bias", [0, 0])
        _ = round.forward([1], rows: 1, amp: amp)
        #expect(round.backward([1, 1]) == [amp == nil ? 1 + Self.tiny : 1])
    }

    @Test(arguments: precisions)
    func inputGradientAccumulatesInFloat32AcrossWeightBlocks(amp: ReducedPrecision?) {
        // dx = Σ over 17 outputs of dy_o·1 with dy = (1, 2^-11 × 16) = 1 + 2^-7, one output row per block of W_p
        let linear = Linear(1, 17)
        linear.autocastBlockFloats = 1
        let net = Net(1, [linear])
        net.set("m.0.weight", [Float](repeating: 1, count: 17))
        _ = net.forward([1], rows: 1, amp: amp)
        #expect(net.backward([1] + [Float](repeating: 0x1p-11, count: 16)) == [1 + 0x1p-7])
    }

    @Test func weightGradientOverflowsInFloat16() {
        // dW = 65504·1 + 65504·1 = 131008: +inf in float16; bfloat16 rounds it to 131072 (spacing 512 there)
        for (amp, want) in [(ReducedPrecision.float16, Float.infinity), (.bfloat16, 131072), (nil, 131008)] as [(ReducedPrecision?, Float)] {
            let net = Net(1, [Linear(1, 1)])
            net.set("m.0.weight", [1])
            _ = net.forward([1, 1], rows: 2, amp: amp)
            _ = net.backward([65504, 65504])
            #expect(net.gradient("m.0.weight") == [want], "\(amp?.rawValue ?? "float32")")
        }
    }

    /// A block size that splits W into many blocks gives the same forward and weight gradients as one block
    /// (each output element is one product over the same inputs).
    @Test(arguments: [ReducedPrecision.float16, .bfloat16])
    func blockingDoesNotChangeTheRounding(amp: ReducedPrecision) {
        var results: [[Float]] = []
        for blockFloats in [1, 7 * 24, 1 << 20] {
            let linear = Linear(24, 40)
            linear.autocastBlockFloats = blockFloats
            let net = Net(24, [linear])
            var rng = Xoshiro256(seed: 3)
            linear.initialize(in: net.store, rng: &rng)
            let y = net.forward(Self.random(5 * 24, seed: 4), rows: 5, amp: amp)
            _ = net.backward(Self.random(5 * 40, seed: 5).map { amp.round($0) })
            #expect(Self.representable(y, in: amp))
            results.append(y + net.gradient("m.0.weight") + net.gradient("m.0.bias"))
        }
        for r in results.dropFirst() {
            // sgemm may sum in another order for another shape: allow one unit in the last place of the format
            let ulp: Float = amp == .float16 ? 0x1p-10 : 0x1p-7
            for (a, b) in zip(r, results[0]) { #expect(abs(a - b) <= ulp * max(abs(b), 0x1p-14)) }
        }
    }

    // MARK: dtypes through a Sequential: which activations and gradients are reduced

    @Test(arguments: [ReducedPrecision.float16, .bfloat16])
    func activationsAfterMatrixProductsAndElementwiseOpsAreReduced(amp: ReducedPrecision) {
        // Linear → Scale(1 + 2^-12) → Probe: Scale keeps its input's (reduced) dtype, so its output is rounded too
        let probe = Probe()
        let net = Net(8, [Linear(8, 8), Scale(1 + Self.tiny), probe, Linear(8, 3)])
        var rng = Xoshiro256(seed: 1)
        net.sequential.initialize(in: net.store, rng: &rng)
        let y = net.forward(Self.random(4 * 8, seed: 2), rows: 4, amp: amp)
        #expect(Self.representable(probe.x, in: amp))
        #expect(Self.representable(y, in: amp))
        _ = net.backward(Self.random(4 * 3, seed: 3))
        #expect(Self.representable(probe.dy, in: amp), "the gradient of a reduced activation is reduced")

        // the same under float32 is not reduced (the contrast that makes the checks above mean something)
        let plain = Net(8, [Linear(8, 8), Scale(1 + Self.tiny), Probe()])
        plain.sequential.initialize(in: plain.store, rng: &rng)
        #expect(!Self.representable(plain.forward(Self.random(4 * 8, seed: 2), rows: 4, amp: nil), in: amp))
    }

    @Test(arguments: [ReducedPrecision.float16, .bfloat16])
    func layerNormRunsInFloat32AndItsInputGradientIsReduced(amp: ReducedPrecision) {
        // Linear → Probe₁ → LayerNorm → Probe₂ → Scale → Probe₃ → Linear
        // Probe₁ sits on a reduced tensor (Linear's output): its value and gradient are reduced; LayerNorm's output
        // is float32 (autocast's float32 list), and Scale keeps float32; the last Linear rounds its own input
        let p1 = Probe(), p2 = Probe(), p3 = Probe()
        let net = Net(8, [Linear(8, 16), p1, LayerNorm(16), p2, Scale(1 + Self.tiny), p3, Linear(16, 3)])
        var rng = Xoshiro256(seed: 6)
        net.sequential.initialize(in: net.store, rng: &rng)
        let y = net.forward(Self.random(4 * 8, seed: 7), rows: 4, amp: amp)
        #expect(Self.representable(p1.x, in: amp))
        #expect(!Self.representable(p2.x, in: amp), "layer norm's output stays float32")
        #expect(!Self.representable(p3.x, in: amp), "an element-wise op on float32 stays float32")
        #expect(Self.representable(y, in: amp))
        _ = net.backward(Self.random(4 * 3, seed: 8))
        #expect(Self.representable(p3.dy, in: amp), "the last Linear's input gradient is the gradient of its cast")
        #expect(!Self.representable(p2.dy, in: amp), "Scale's input gradient (a float32 tensor's) is float32")
        #expect(Self.representable(p1.dy, in: amp), "layer norm's input gradient, the gradient of a reduced tensor")
        let lnWeightGradient = net.gradient("m.2.weight")
        #expect(!Self.representable(lnWeightGradient, in: amp), "layer norm's parameters and gradients stay float32")
    }

    @Test(arguments: [ReducedPrecision.float16, .bfloat16])
    func dropoutAndActivationsKeepTheReducedDtype(amp: ReducedPrecision) {
        let probes = [Probe(), Probe(), Probe()]
        let net = Net(8, [Linear(8, 8), GELU(), probes[0], Tanh(), probes[1], Dropout(p: 0.3), probes[2], Linear(8, 2)])
        var rng = Xoshiro256(seed: 9)
        net.sequential.initialize(in: net.store, rng: &rng)
        _ = net.forward(Self.random(6 * 8, seed: 10), rows: 6, amp: amp)
        _ = net.backward(Self.random(6 * 2, seed: 11))
        for (i, p) in probes.enumerated() {
            #expect(Self.representable(p.x, in: amp), "activation \(i)")
            #expect(Self.representable(p.dy, in: amp), "gradient \(i)")
        }
    }

    // MARK: the model: loss in float32, the scaled loss gradient rounded where it enters the half-precision graph

    static func model() throws -> MLPClassifier {
        var enc = MLPClassifier.ModuleConf(dims: [6, 16, 16], activation: "GELU")
        enc.layerNorm = true
        return try MLPClassifier(encoder: enc, decoder: .init(dims: [16, 4]), seed: 3)
    }

    static func batch() -> Batch {
        var rng = Xoshiro256(seed: 12)
        return Batch(features: (0..<(8 * 6)).map { _ in rng.normal() }, labels: (0..<8).map { Int32($0 % 4) }, cols: 6)
    }

    /// A fresh model after one forward and a backward per seed (gradients accumulating from zero).
    static func gradients(amp: ReducedPrecision?, seeds: [Float]) throws -> (model: MLPClassifier, loss: Float) {
        let model = try model()
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        for seed in seeds {
            try model.forward(batch(), context: ForwardContext(amp: amp), losses: &losses, metrics: &metrics)
            try model.backward(loss: "loss", seed: seed, modules: model.moduleNames)
        }
        return (model, losses.values[0])
    }

    static func gradients(amp: ReducedPrecision?, seed: Float) throws -> (model: MLPClassifier, loss: Float) {
        try gradients(amp: amp, seeds: [seed])
    }

    @Test func aLargeLossScaleOverflowsFloat16Only() throws {
        // d loss/d logits = seed·(p − onehot)/N; with seed 2^30 and N = 8, any |p − onehot| ≥ 65520·8/2^30 ≈ 5e-4
        // (true of every row of an untrained model) overflows float16 where the gradient enters the graph
        for (amp, overflows) in [(ReducedPrecision.float16, true), (.bfloat16, false), (nil, false)] as [(ReducedPrecision?, Bool)] {
            let (model, loss) = try Self.gradients(amp: amp, seed: 0x1p30)
            #expect(loss.isFinite)
            let g = model.parameters.gradients.toArray()
            #expect(g.contains { !$0.isFinite } == overflows, "\(amp?.rawValue ?? "float32")")
            #expect(model.parameters.values.toArray().allSatisfy { $0.isFinite }, "backward never touches the weights")
        }
        let (model, _) = try Self.gradients(amp: .float16, seed: 1)
        #expect(model.parameters.gradients.toArray().allSatisfy { $0.isFinite }, "an unscaled loss does not overflow")
    }

    /// Two rows with the same input and labels 0 and 1, logits forced to (0, 0): p = (½, ½), so d loss/d logits is
    /// ±seed/4 per row, cancelling over the rows. With seed 2^18 the entries are ±65536: float16 turns them into ±inf
    /// where the upcast's gradient enters the half-precision graph, and the decoder's reductions make inf − inf = NaN
    /// (as autocast on a GPU does); in bfloat16 or float32 they stay finite and the gradients cancel to exactly 0.
    @Test(arguments: precisions)
    func theLossGradientIsRoundedWhereItEntersTheReducedGraph(amp: ReducedPrecision?) throws {
        let model = try MLPClassifier(encoder: .init(dims: [1, 1]), decoder: .init(dims: [1, 2]), seed: 0)
        let params = model.parameters
        for name in ["decoder.0.weight", "decoder.0.bias"] { params.values.copy(from: [0, 0], at: params.info(name)!.offset) }
        params.values.copy(from: [1], at: params.info("encoder.0.weight")!.offset)
        params.values.copy(from: [0], at: params.info("encoder.0.bias")!.offset)
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(Batch(features: [1, 1], labels: [0, 1], cols: 1), context: ForwardContext(amp: amp),
                          losses: &losses, metrics: &metrics)
        #expect(abs(losses.values[0] - Float(M_LN2)) < 1e-7)
        try model.backward(loss: "loss", seed: 0x1p18, modules: model.moduleNames)
        let decoder = params.gradients.toArray(params.range(ofModule: "decoder")!)
        if amp == .float16 {
            #expect(decoder.allSatisfy { $0.isNaN }, "\(decoder)")
        } else {
            #expect(decoder == [0, 0, 0, 0])
        }
    }

    @Test(arguments: [ReducedPrecision.float16, .bfloat16])
    func linearGradientsAreReducedAndAccumulateInFloat32(amp: ReducedPrecision) throws {
        let (once, _) = try Self.gradients(amp: amp, seed: 1)
        let prefixes = ["encoder.0.", "encoder.3.", "decoder.0."]
        let linears = once.parameters.entries.filter { e in prefixes.contains { e.name.hasPrefix($0) } }
        #expect(linears.count == 6)
        for e in linears {
            #expect(Self.representable(once.parameters.gradients.toArray(e.range), in: amp), "\(e.name) after one backward")
        }
        // a second backward (seed 3) adds its own reduced gradient to the first in float32: a Linear's gradient is
        // the float32 sum of the two separate results, which the format cannot represent everywhere (layer norm adds
        // row by row into the buffer, so its sums associate differently and are left out here)
        let (three, _) = try Self.gradients(amp: amp, seed: 3)
        let (both, _) = try Self.gradients(amp: amp, seeds: [1, 3])
        for e in linears {
            let sum = zip(once.parameters.gradients.toArray(e.range), three.parameters.gradients.toArray(e.range)).map { $0 + $1 }
            let got = both.parameters.gradients.toArray(e.range)
            #expect(zip(got, sum).filter { $0.bitPattern != $1.bitPattern }.isEmpty, "\(e.name)")
            #expect(!Self.representable(sum, in: amp), "\(e.name)")
        }
        #expect(!Self.representable(once.parameters.gradients.toArray(once.parameters.info("encoder.1.weight")!.range), in: amp),
                "layer norm's gradients are float32")
    }
}
