import Foundation
import Testing
@testable import SpeechainMPI

/// Every layer's backward, the loss's and the whole model's against central finite differences of the forward.
/// Layers are checked through the scalar L = Σ w_ij·y_ij with a fixed random w, so dy = w; the perturbed forward
/// divides by the step actually taken in Float32 ((x+h) − (x−h) after rounding), and L is summed in Double.
@Suite struct GradientCheckTests {
    static func random(_ n: Int, seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(lo, hi) }
    }

    /// (f(p_i + h) − f(p_i − h)) / (2h) for each index, restoring p_i afterwards.
    static func centralDifferences(_ p: UnsafeMutablePointer<Float>, _ indices: Range<Int>, h: Float, _ f: () -> Double) -> [Double] {
        indices.map { i in
            let v = p[i]
            p[i] = v + h
            let plus = p[i], fPlus = f()
            p[i] = v - h
            let minus = p[i], fMinus = f()
            p[i] = v
            return (fPlus - fMinus) / Double(plus - minus)
        }
    }

    /// |fd − analytic| ≤ atol + rtol·|fd| element by element; also rejects an analytic gradient that is all zeros.
    static func expectAgree(_ fd: [Double], _ analytic: [Float], _ label: String, atol: Double = 2e-3, rtol: Double = 2e-2,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(fd.count == analytic.count, "\(label): sizes", sourceLocation: sourceLocation)
        var worst = (index: -1, excess: 0.0)
        for (i, (f, a)) in zip(fd, analytic).enumerated() {
            let excess = abs(f - Double(a)) - (atol + rtol * abs(f))
            if excess > worst.excess { worst = (i, excess) }
        }
        if worst.index >= 0 {
            let i = worst.index
            Issue.record("\(label)[\(i)]: finite difference \(fd[i]) vs backward \(analytic[i])", sourceLocation: sourceLocation)
        }
        #expect(analytic.contains { $0 != 0 }, "\(label): backward gave only zeros", sourceLocation: sourceLocation)
    }

    /// One layer over its own ParameterStore and buffers, with the objective L = Σ w·y.
    final class Harness {
        let layer: Layer
        let store = ParameterStore()
        let rows: Int, inWidth: Int, outWidth: Int
        let x: FloatBuffer, y: FloatBuffer, w: [Float]
        let training: Bool
        let seed: UInt64

        init(_ layer: Layer, rows: Int, inWidth: Int, x values: [Float]? = nil, training: Bool = true, seed: UInt64 = 7) {
            self.layer = layer; self.rows = rows; self.inWidth = inWidth; self.training = training; self.seed = seed
            outWidth = layer.outputWidth(forInput: inWidth)
            layer.declareParameters(in: store, prefix: "l.", module: "m")
            store.allocate()
            var rng = Xoshiro256(seed: 11)
            layer.initialize(in: store, rng: &rng)
            x = FloatBuffer(values ?? GradientCheckTests.random(rows * inWidth, seed: 21, -2, 2))
            y = FloatBuffer(count: rows * outWidth)
            w = GradientCheckTests.random(rows * outWidth, seed: 31)
        }

        var xm: Matrix { Matrix(x.pointer, rows: rows, cols: inWidth) }
        var ym: Matrix { Matrix(y.pointer, rows: rows, cols: outWidth) }
        /// A fresh context each time, so dropout draws the same mask in every forward.
        func context() -> ForwardContext { ForwardContext(training: training, rng: Xoshiro256(seed: seed)) }

        func forward() -> [Float] { layer.forward(xm, ym, context: context()); return y.toArray() }

        func objective() -> Double {
            layer.forward(xm, ym, context: context())
            var s = 0.0
            for i in 0..<(rows * outWidth) { s += Double(w[i]) * Double(y[i]) }
            return s
        }

        /// Forward, then backward with dy = w into zeroed parameter gradients; returns (dx, parameter gradients).
        func backward(accumulate: Bool = true) -> (dx: [Float], grads: [Float]) {
            _ = forward()
            store.gradients.fill(0)
            let dy = FloatBuffer(w), dx = FloatBuffer(count: rows * inWidth, repeating: .nan)
            layer.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: rows, cols: outWidth),
                           dx: Matrix(dx.pointer, rows: rows, cols: inWidth), accumulate: accumulate)
            return (dx.toArray(), store.gradients.toArray())
        }

        func inputDifferences(h: Float) -> [Double] {
            GradientCheckTests.centralDifferences(x.pointer, 0..<x.count, h: h, objective)
        }

        func parameterDifferences(_ name: String, h: Float) -> (fd: [Double], range: Range<Int>) {
            let r = store.info(name)!.range
            return (GradientCheckTests.centralDifferences(store.values.pointer, r, h: h, objective), r)
        }
    }

    // MARK: Linear

    @Test(arguments: [true, false])
    func linearInputWeightAndBias(bias: Bool) throws {
        let h = Harness(Linear(7, 4, bias: bias), rows: 5, inWidth: 7)
        let (dx, grads) = h.backward()
        Self.expectAgree(h.inputDifferences(h: 1e-2), dx, "dx")
        let (fdW, rW) = h.parameterDifferences("l.weight", h: 1e-2)
        Self.expectAgree(fdW, Array(grads[rW]), "dW")
        if bias {
            let (fdB, rB) = h.parameterDifferences("l.bias", h: 1e-2)
            Self.expectAgree(fdB, Array(grads[rB]), "db")
        } else {
            #expect(h.store.info("l.bias") == nil)
            #expect(h.store.count == 28)
        }
    }

    @Test func linearForwardIsXWTransposedPlusB() {
        // y_rj = Σ_k x_rk W_jk + b_j, with W stored [out, in] as in torch.
        let h = Harness(Linear(3, 2), rows: 2, inWidth: 3, x: [1, 2, 3, -1, 0, 4])
        h.store.values.copy(from: [1, 0, -1, 0.5, 2, 1], at: h.store.info("l.weight")!.offset)
        h.store.values.copy(from: [0.25, -3], at: h.store.info("l.bias")!.offset)
        let want: [Float] = [1 * 1 + 2 * 0 + 3 * -1 + 0.25, 1 * 0.5 + 2 * 2 + 3 * 1 - 3,
                             -1 * 1 + 0 * 0 + 4 * -1 + 0.25, -1 * 0.5 + 0 * 2 + 4 * 1 - 3]
        #expect(h.forward() == want)
    }

    @Test func linearAccumulateAddsAndDxIsOverwritten() {
        let h = Harness(Linear(7, 4), rows: 5, inWidth: 7)
        let (dx1, once) = h.backward()
        // A second backward with accumulate adds the same gradient again; dx is written, not added to.
        let dy = FloatBuffer(h.w), dx = FloatBuffer(Array(repeating: 123, count: 35))
        h.layer.backward(x: h.xm, y: h.ym, dy: Matrix(dy.pointer, rows: 5, cols: 4), dx: Matrix(dx.pointer, rows: 5, cols: 7), accumulate: true)
        let twice = h.store.gradients.toArray()
        for i in once.indices { #expect(abs(twice[i] - 2 * once[i]) <= 1e-6 * max(1, abs(once[i])), "i=\(i)") }
        #expect(zip(dx.toArray(), dx1).allSatisfy { abs($0 - $1) <= 1e-6 })
        // accumulate: false leaves the parameter gradients alone but still gives dx.
        h.layer.backward(x: h.xm, y: h.ym, dy: Matrix(dy.pointer, rows: 5, cols: 4), dx: Matrix(dx.pointer, rows: 5, cols: 7), accumulate: false)
        #expect(h.store.gradients.toArray() == twice)
        let (dxNoAccumulate, grads) = h.backward(accumulate: false)
        #expect(grads.allSatisfy { $0 == 0 })
        #expect(dxNoAccumulate == dx1)
    }

    // MARK: Activations

    static let activations = ["ReLU", "GELU-none", "GELU-tanh", "Tanh"]

    static func activation(_ name: String) -> Layer {
        switch name {
        case "ReLU": return ReLU()
        case "GELU-none": return GELU(approximate: .none)
        case "GELU-tanh": return GELU(approximate: .tanh)
        default: return Tanh()
        }
    }

    /// Inputs in ±[0.2, 3]: away from ReLU's kink, and across the curved parts of GELU and tanh.
    static func activationInput(_ n: Int) -> [Float] {
        var rng = Xoshiro256(seed: 41)
        return (0..<n).map { _ in
            let m = rng.uniform(0.2, 3)
            return rng.nextUnitFloat() < 0.5 ? -m : m
        }
    }

    @Test(arguments: activations)
    func activationInputGradient(name: String) {
        let h = Harness(Self.activation(name), rows: 5, inWidth: 7, x: Self.activationInput(35))
        let (dx, _) = h.backward()
        Self.expectAgree(h.inputDifferences(h: 1e-2), dx, "\(name) dx", atol: 1e-3, rtol: 1e-2)
    }

    @Test(arguments: activations)
    func activationForwardMatchesItsFormula(name: String) {
        let xs = Self.activationInput(35) + [0, 0.5, -0.5]
        let h = Harness(Self.activation(name), rows: 1, inWidth: xs.count, x: xs)
        let y = h.forward()
        for (i, v) in xs.enumerated() {
            let x = Double(v)
            let want: Double
            switch name {
            case "ReLU": want = max(x, 0)
            case "GELU-none": want = 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
            case "GELU-tanh": want = 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
            default: want = tanh(x)
            }
            #expect(abs(Double(y[i]) - want) <= 1e-6 * max(1, abs(want)), "\(name)(\(x)) = \(y[i]), want \(want)")
        }
    }

    @Test func geluExactAndTanhDiffer() {
        // The two GELUs differ by up to ~5e-4 near |x| ≈ 2: a check that `approximate` is honoured.
        let xs: [Float] = [-2.5, -2, -1.5, 1.5, 2, 2.5]
        let exact = Harness(GELU(approximate: .none), rows: 1, inWidth: 6, x: xs).forward()
        let approx = Harness(GELU(approximate: .tanh), rows: 1, inWidth: 6, x: xs).forward()
        #expect(zip(exact, approx).contains { abs($0 - $1) > 1e-4 })
    }

    // MARK: LayerNorm

    static func layerNormHarness() -> Harness {
        let h = Harness(LayerNorm(7), rows: 5, inWidth: 7)
        // Non-trivial affine parameters, so that the weight reaches dx and both gradients are exercised.
        let wOff = h.store.info("l.weight")!.offset, bOff = h.store.info("l.bias")!.offset
        h.store.values.copy(from: random(7, seed: 51, 0.5, 1.5).enumerated().map { $0.offset % 2 == 0 ? $0.element : -$0.element }, at: wOff)
        h.store.values.copy(from: random(7, seed: 52, -1, 1), at: bOff)
        return h
    }

    @Test func layerNormInputWeightAndBias() {
        let h = Self.layerNormHarness()
        let (dx, grads) = h.backward()
        Self.expectAgree(h.inputDifferences(h: 1e-2), dx, "dx", atol: 1e-3, rtol: 1e-2)
        let (fdW, rW) = h.parameterDifferences("l.weight", h: 1e-2)
        Self.expectAgree(fdW, Array(grads[rW]), "dweight", atol: 1e-3, rtol: 1e-2)
        let (fdB, rB) = h.parameterDifferences("l.bias", h: 1e-2)
        Self.expectAgree(fdB, Array(grads[rB]), "dbias", atol: 1e-3, rtol: 1e-2)
    }

    @Test func layerNormForwardNormalisesEachRow() {
        let h = Self.layerNormHarness()
        let y = h.forward()
        let wv = h.store.values.toArray(h.store.info("l.weight")!.range), bv = h.store.values.toArray(h.store.info("l.bias")!.range)
        let xs = h.x.toArray()
        for r in 0..<5 {
            let row = xs[(r * 7)..<(r * 7 + 7)].map(Double.init)
            let mu = row.reduce(0, +) / 7
            let variance = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / 7   // biased, as torch
            for j in 0..<7 {
                let want = (row[j] - mu) / (variance + 1e-5).squareRoot() * Double(wv[j]) + Double(bv[j])
                #expect(abs(Double(y[r * 7 + j]) - want) <= 1e-5, "row \(r) col \(j)")
            }
        }
    }

    @Test func layerNormAccumulateAdds() {
        let h = Self.layerNormHarness()
        let (dx1, once) = h.backward()
        let dy = FloatBuffer(h.w), dx = FloatBuffer(count: 35, repeating: 9)
        h.layer.backward(x: h.xm, y: h.ym, dy: Matrix(dy.pointer, rows: 5, cols: 7), dx: Matrix(dx.pointer, rows: 5, cols: 7), accumulate: true)
        let twice = h.store.gradients.toArray()
        for i in once.indices { #expect(abs(twice[i] - 2 * once[i]) <= 1e-6 * max(1, abs(once[i])), "i=\(i)") }
        #expect(dx.toArray() == dx1)
        h.layer.backward(x: h.xm, y: h.ym, dy: Matrix(dy.pointer, rows: 5, cols: 7), dx: nil, accumulate: false)
        #expect(h.store.gradients.toArray() == twice)
    }

    // MARK: Dropout

    @Test func dropoutInTrainingMatchesFiniteDifferencesWithTheSameMask() {
        let p: Float = 0.3
        let h = Harness(Dropout(p: p), rows: 5, inWidth: 7, training: true, seed: 99)
        let (dx, _) = h.backward()
        Self.expectAgree(h.inputDifferences(h: 1e-2), dx, "dropout dx", atol: 1e-4, rtol: 1e-4)
        // Each output is either dropped or scaled by 1/(1−p), and dx follows the same mask.
        let y = h.forward(), xs = h.x.toArray()
        var dropped = 0
        for i in 0..<35 {
            if y[i] == 0 {
                dropped += 1
                #expect(dx[i] == 0)
            } else {
                #expect(abs(y[i] - xs[i] / (1 - p)) <= 1e-6 * abs(xs[i] / (1 - p)), "i=\(i)")
                #expect(abs(dx[i] - h.w[i] / (1 - p)) <= 1e-6 * max(1, abs(h.w[i])), "i=\(i)")
            }
        }
        #expect(dropped > 0 && dropped < 35, "p=0.3 over 35 values dropped \(dropped)")
    }

    @Test func dropoutRateIsAboutP() {
        let p: Float = 0.25, n = 20_000
        let h = Harness(Dropout(p: p), rows: 1, inWidth: n, x: [Float](repeating: 1, count: n), training: true, seed: 5)
        let zeros = h.forward().filter { $0 == 0 }.count
        // Binomial(n, p): standard deviation √(n·p·(1−p)) ≈ 61; allow 5σ.
        #expect(abs(Double(zeros) - Double(n) * 0.25) <= 5 * (Double(n) * 0.25 * 0.75).squareRoot(), "\(zeros) of \(n)")
    }

    @Test func dropoutInEvaluationIsTheIdentity() {
        let h = Harness(Dropout(p: 0.5), rows: 5, inWidth: 7, training: false)
        #expect(h.forward() == h.x.toArray())
        let (dx, _) = h.backward()
        #expect(dx == h.w)
        // And after a training forward, an evaluation forward forgets the mask.
        let t = Harness(Dropout(p: 0.5), rows: 5, inWidth: 7, training: true)
        _ = t.forward()
        let out = FloatBuffer(count: 35)
        t.layer.forward(t.xm, Matrix(out.pointer, rows: 5, cols: 7), context: ForwardContext(training: false))
        #expect(out.toArray() == t.x.toArray())
        let dy = FloatBuffer(t.w), dx2 = FloatBuffer(count: 35)
        t.layer.backward(x: t.xm, y: Matrix(out.pointer, rows: 5, cols: 7), dy: Matrix(dy.pointer, rows: 5, cols: 7),
                         dx: Matrix(dx2.pointer, rows: 5, cols: 7), accumulate: true)
        #expect(dx2.toArray() == t.w)
    }

    // MARK: Cross-entropy

    static let crossEntropyCases: [(Float, Float)] = [(0, 1), (0.1, 1), (0.1, 2.5), (0, -0.5)]

    @Test(arguments: crossEntropyCases)
    func crossEntropyBackwardIsSeedTimesTheLossGradient(smoothing: Float, seed: Float) {
        let rows = 5, k = 7
        let logits = FloatBuffer(Self.random(rows * k, seed: 61, -3, 3))
        let labels: [Int32] = [0, 6, 3, 3, 1]
        let ce = CrossEntropy(labelSmoothing: smoothing)
        let m = Matrix(logits.pointer, rows: rows, cols: k)
        func loss() -> Double { labels.withUnsafeBufferPointer { Double(ce.forward(logits: m, labels: $0).loss) } }
        _ = loss()
        let d = FloatBuffer(count: rows * k, repeating: .nan)
        ce.backward(seed: seed, into: Matrix(d.pointer, rows: rows, cols: k))
        let analytic = d.toArray()
        let fd = Self.centralDifferences(logits.pointer, 0..<(rows * k), h: 1e-2, loss).map { $0 * Double(seed) }
        Self.expectAgree(fd, analytic, "ε=\(smoothing) seed=\(seed)", atol: 1e-4, rtol: 1e-2)
        // Softmax rows sum to one, so each row of ∂loss/∂logits sums to zero.
        for r in 0..<rows {
            let s = analytic[(r * k)..<(r * k + k)].reduce(0, +)
            #expect(abs(s) <= 1e-6, "row \(r) sums to \(s)")
        }
    }

    @Test(arguments: [Float(0), 0.1, 0.3])
    func crossEntropyLossAndAccuracyMatchTheirFormulas(smoothing: Float) {
        let rows = 6, k = 5
        let z = Self.random(rows * k, seed: 62, -4, 4)
        let labels: [Int32] = [0, 1, 2, 3, 4, 2]
        let logits = FloatBuffer(z)
        let (loss, accuracy) = labels.withUnsafeBufferPointer {
            CrossEntropy(labelSmoothing: smoothing).forward(logits: Matrix(logits.pointer, rows: rows, cols: k), labels: $0)
        }
        // torch: (1−ε)·nll + ε·mean_k(−log p_k), averaged over rows.
        let eps = Double(smoothing)
        var total = 0.0, correct = 0
        for r in 0..<rows {
            let row = z[(r * k)..<(r * k + k)].map(Double.init)
            let logSumExp = log(row.map(exp).reduce(0, +))
            let negLogP = row.map { logSumExp - $0 }
            total += (1 - eps) * negLogP[Int(labels[r])] + eps * negLogP.reduce(0, +) / Double(k)
            if row.firstIndex(of: row.max()!) == Int(labels[r]) { correct += 1 }
        }
        #expect(abs(Double(loss) - total / Double(rows)) <= 1e-6 * total)
        #expect(accuracy == Float(correct) / Float(rows))
    }

    // MARK: The whole model

    struct ModelCase: Sendable, CustomTestStringConvertible {
        var activation: String, approximate: String, layerNorm: Bool, dropout: Float, smoothing: Float, h: Float
        var seed: UInt64 = 3
        var testDescription: String { "\(activation)/\(approximate) ln=\(layerNorm) p=\(dropout) ε=\(smoothing)" }
    }

    static let modelCases = [
        ModelCase(activation: "GELU", approximate: "none", layerNorm: true, dropout: 0, smoothing: 0.1, h: 1e-2),
        ModelCase(activation: "GELU", approximate: "tanh", layerNorm: true, dropout: 0.2, smoothing: 0, h: 1e-2),
        ModelCase(activation: "Tanh", approximate: "none", layerNorm: false, dropout: 0, smoothing: 0, h: 1e-2),
        // ReLU is piecewise linear: central differences are only valid when no pre-activation lies within ±h of
        // its kink. With model seed 2 none does within ±1e-2 (checked by comparing differences at h = 4e-3 and
        // 1e-2), so h = 1e-3 leaves a tenfold margin; the default seed 3 has a kink within 1e-3.
        ModelCase(activation: "ReLU", approximate: "none", layerNorm: false, dropout: 0.1, smoothing: 0.1, h: 1e-3, seed: 2),
    ]

    static func makeModel(_ c: ModelCase) throws -> MLPClassifier {
        var enc = MLPClassifier.ModuleConf(dims: [5, 6, 4], activation: c.activation)
        enc.approximate = c.approximate; enc.layerNorm = c.layerNorm; enc.dropout = c.dropout
        var dec = MLPClassifier.ModuleConf(dims: [4, 5, 3], activation: c.activation)
        dec.approximate = c.approximate; dec.layerNorm = c.layerNorm; dec.dropout = c.dropout
        return try MLPClassifier(encoder: enc, decoder: dec, labelSmoothing: c.smoothing, seed: c.seed)
    }

    static let batch = Batch(features: random(6 * 5, seed: 71, -2, 2), labels: [0, 1, 2, 2, 1, 0], cols: 5)

    /// The forward loss with a context rebuilt from the same seed, so dropout masks repeat.
    static func loss(_ model: MLPClassifier) throws -> Double {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(batch, context: ForwardContext(training: true, rng: Xoshiro256(seed: 8)), losses: &losses, metrics: &metrics)
        return Double(losses["loss"]!)
    }

    @Test(arguments: modelCases)
    func mlpClassifierAllParameters(c: ModelCase) throws {
        let model = try Self.makeModel(c)
        if c.layerNorm {
            // Give the LayerNorms non-trivial affine parameters.
            // A LayerNorm is the layer whose weight is one-dimensional (a Linear's is [out, in]).
            var rng = Xoshiro256(seed: 81)
            let norms = model.parameters.entries.filter { $0.name.hasSuffix(".weight") && $0.shape.count == 1 }
                .map { String($0.name.dropLast("weight".count)) }
            #expect(norms.count == 3)
            for e in model.parameters.entries where norms.contains(where: { e.name.hasPrefix($0) }) {
                for i in e.range { model.parameters.values[i] = e.name.hasSuffix("weight") ? rng.uniform(0.5, 1.5) : rng.uniform(-0.5, 0.5) }
            }
        }
        _ = try Self.loss(model)
        model.parameters.gradients.fill(0)
        try model.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let analytic = model.parameters.gradients.toArray()
        var failed: String?
        let fd = Self.centralDifferences(model.parameters.values.pointer, 0..<model.parameters.count, h: c.h) {
            do { return try Self.loss(model) } catch { failed = "\(error)"; return .nan }
        }
        #expect(failed == nil)
        // Gradients of a mean over 6 rows are small: scale the absolute tolerance to the largest one.
        let largest = fd.map(abs).max()!
        for e in model.parameters.entries {
            Self.expectAgree(Array(fd[e.range]), Array(analytic[e.range]), "\(c.testDescription) \(e.name)",
                             atol: 2e-3 * largest, rtol: 2e-2)
        }
        let names = model.parameters.entries.map(\.name)
        #expect(names.contains("encoder.0.weight") && names.contains("decoder.\(c.layerNorm ? 1 : 0).weight"))
    }

    @Test func mlpClassifierLayoutFollowsTorchIndices() throws {
        let model = try Self.makeModel(Self.modelCases[1])   // layer_norm and dropout
        // encoder: 0 Linear, 1 LayerNorm, 2 GELU, 3 Dropout, 4 Linear, 5 LayerNorm, 6 GELU, 7 Dropout
        #expect(model.parameters.entries.map(\.name) == [
            "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
            "encoder.4.weight", "encoder.4.bias", "encoder.5.weight", "encoder.5.bias",
            "decoder.0.weight", "decoder.0.bias", "decoder.1.weight", "decoder.1.bias",
            "decoder.4.weight", "decoder.4.bias",
        ])
        // `approximate` reaches every activation (finite differences cannot tell the two GELUs apart).
        let gelus = (model.encoder.layers + model.decoder.layers).map(\.description).filter { $0.hasPrefix("GELU") }
        #expect(gelus == [String](repeating: "GELU(approximate='tanh')", count: 3))
    }

    @Test(arguments: [0, 3])
    func mlpBackwardOfOneModuleLeavesTheOtherAlone(caseIndex: Int) throws {
        let model = try Self.makeModel(Self.modelCases[caseIndex])
        let store = model.parameters
        let enc = try #require(store.range(ofModule: "encoder")), dec = try #require(store.range(ofModule: "decoder"))
        _ = try Self.loss(model)
        store.gradients.fill(0)
        try model.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let full = store.gradients.toArray()

        // Start from non-zero gradients: the requested module's gradient is added, the other's is untouched.
        let start = Self.random(store.count, seed: 91)
        store.gradients.copy(from: start)
        try model.backward(loss: "loss", seed: 1, modules: ["decoder"])
        var g = store.gradients.toArray()
        #expect(Array(g[enc]) == Array(start[enc]), "decoder-only backward changed encoder gradients")
        for i in dec { #expect(abs((g[i] - start[i]) - full[i]) <= 1e-6, "decoder gradient \(i)") }

        store.gradients.copy(from: start)
        try model.backward(loss: "loss", seed: 1, modules: ["encoder"])
        g = store.gradients.toArray()
        #expect(Array(g[dec]) == Array(start[dec]), "encoder-only backward changed decoder gradients")
        for i in enc { #expect(abs((g[i] - start[i]) - full[i]) <= 1e-6, "encoder gradient \(i)") }

        // No module: nothing changes.
        store.gradients.copy(from: start)
        try model.backward(loss: "loss", seed: 1, modules: [])
        #expect(store.gradients.toArray() == start)
    }

    @Test func mlpBackwardAccumulatesAndScalesWithTheSeed() throws {
        let model = try Self.makeModel(Self.modelCases[0])
        let store = model.parameters
        _ = try Self.loss(model)
        store.gradients.fill(0)
        try model.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let once = store.gradients.toArray()
        try model.backward(loss: "loss", seed: 1, modules: ["encoder", "decoder"])
        let twice = store.gradients.toArray()
        let largest = once.map(abs).max()!
        #expect(largest > 0)
        for i in once.indices { #expect(abs(twice[i] - 2 * once[i]) <= 1e-6 * largest, "i=\(i)") }
        store.gradients.fill(0)
        try model.backward(loss: "loss", seed: 0.25, modules: ["encoder", "decoder"])
        let quarter = store.gradients.toArray()
        for i in once.indices { #expect(abs(quarter[i] - 0.25 * once[i]) <= 1e-6 * largest, "i=\(i)") }
        #expect(throws: ModelError.unknownLoss(name: "los", valid: ["loss"])) {
            try model.backward(loss: "los", seed: 1, modules: ["encoder"])
        }
    }
}
