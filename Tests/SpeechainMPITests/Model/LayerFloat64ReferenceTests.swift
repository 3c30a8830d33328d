import Foundation
import Testing
@testable import SpeechainMPI

/// The float64 PyTorch references of Resources/layer_refs (scripts/reference/layer_refs.py): per case, float32 inputs,
/// parameters, an upstream gradient and dropout masks, and torch's float64 outputs and gradients. Read here without
/// rounding (SpeechainMPI's Safetensors reader rounds F64 to Float): F32 and F64 tensors both become Doubles.
struct Float64References {
    struct Tensor { let shape: [Int]; let values: [Double] }

    /// A case's settings (cases.json), as far as the tests use them.
    struct Conf: Decodable {
        var approximate: String?, eps: Double?, p: Double?, seed: UInt64?, label_smoothing: Double?, labels: [Int32]?
        var stride: Int?, bias: Bool?, training: Bool?, slope: Double?, batchnorm: Bool?, activation: String?
        var conv_dims: [Int]?, lnr_dims: [Int]?, lengths: [Int]?, cross: Bool?, causal: Bool?, scale_by_head: Bool?
        var d_model: Int?, heads: Int?, key_lengths: [Int]?, emb_scale: Bool?, scale: Bool?, tokens: [Int32]?
        var vocab: Int?, dim: Int?, hidden: Int?, ffn: Int?, layers: Int?, token_lengths: [Int]?, source_lengths: [Int]?
        var input_lengths: [Int]?, target_lengths: [Int]?, targets: [[Int32]]?
    }
    struct Case: Decodable {
        let group: String
        let conf: Conf
        /// torch's own float32 run against its float64 one, per tensor (max-norm).
        let torch_f32_error: [String: Double]
    }
    struct Meta: Decodable {
        let torch_version: String
        let cases: [String: Case]
    }

    let tensors: [String: Tensor]
    let meta: Meta

    static func load(_ group: String) throws -> Float64References {
        let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: TestResources.url("layer_refs/cases.json")))
        return Float64References(tensors: try readSafetensors(TestResources.url("layer_refs/\(group).safetensors")), meta: meta)
    }

    /// Every F32/F64 tensor of a safetensors file as Doubles (exact).
    static func readSafetensors(_ url: URL) throws -> [String: Tensor] {
        let data = try Data(contentsOf: url)
        let headerLength = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
        let base = 8 + headerLength
        var out: [String: Tensor] = [:]
        for (name, value) in header where name != "__metadata__" {
            let entry = try #require(value as? [String: Any])
            let dtype = try #require(entry["dtype"] as? String), shape = try #require(entry["shape"] as? [Int])
            let offsets = try #require(entry["data_offsets"] as? [Int])
            let count = shape.reduce(1, *)
            let values: [Double] = data.withUnsafeBytes { raw in
                (0..<count).map { i in
                    switch dtype {
                    case "F64": return Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + offsets[0] + 8 * i, as: UInt64.self)))
                    case "F32": return Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + offsets[0] + 4 * i, as: UInt32.self))))
                    default: return .nan
                    }
                }
            }
            #expect(dtype == "F64" || dtype == "F32", "\(name): dtype \(dtype)")
            #expect(offsets[1] - offsets[0] == count * (dtype == "F64" ? 8 : 4), "\(name): size")
            out[name] = Tensor(shape: shape, values: values)
        }
        return out
    }

    func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw ReferenceError.missing(name) }
        return t
    }
    func floats(_ name: String) throws -> [Float] { try tensor(name).values.map { Float($0) } }
    func doubles(_ name: String) throws -> [Double] { try tensor(name).values }
    func shape(_ name: String) throws -> [Int] { try tensor(name).shape }
    func conf(_ name: String) throws -> Conf {
        guard let c = meta.cases[name] else { throw ReferenceError.missing("case \(name)") }
        return c.conf
    }
    /// The names of one case's tensors of one kind (`param`, `grad`, …), without the `<case>.<kind>.` prefix.
    func names(_ name: String, _ kind: String) -> [String] {
        let prefix = "\(name).\(kind)."
        return tensors.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    enum ReferenceError: Error { case missing(String) }

    /// Loads the case's `param.*` tensors into `store` (every entry of the store must have one, and vice versa).
    func loadParameters(_ name: String, into store: ParameterStore, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let params = names(name, "param")
        #expect(params == store.entries.map(\.name).sorted(), "\(name): parameters \(params) vs the store's \(store.entries.map(\.name))",
                sourceLocation: sourceLocation)
        for p in params {
            let info = try #require(store.info(p), sourceLocation: sourceLocation)
            let v = try floats("\(name).param.\(p)")
            #expect(v.count == info.count, sourceLocation: sourceLocation)
            store.values.copy(from: v, at: info.offset)
        }
    }

    /// max|ours − ref| / max(max|ref|, floor) (max|ours − ref| when both are 0; ∞ on a size mismatch or a NaN).
    static func maxNormError(_ ours: [Float], _ ref: [Double], floor: Double = 0) -> Double {
        guard ours.count == ref.count else { return .infinity }
        var err = 0.0, scale = floor
        for (a, r) in zip(ours, ref) {
            if a.isNaN { return .infinity }
            err = max(err, abs(Double(a) - r)); scale = max(scale, abs(r))
        }
        return scale > 0 ? err / scale : err
    }

    /// Compares one tensor, prints its error (and torch's own float32 error, for scale) and expects ≤ tol. `floor`
    /// bounds the norm from below for a tensor whose true value is 0.
    @discardableResult
    func check(_ ours: [Float], _ name: String, _ tensor: String, tol: Double, floor: Double = 0,
               sourceLocation: SourceLocation = #_sourceLocation) throws -> Double {
        let ref = try doubles("\(name).\(tensor)")
        let e = Self.maxNormError(ours, ref, floor: floor)
        let torch = meta.cases[name]?.torch_f32_error[tensor].map { String(format: "%.1e", $0) } ?? "-"
        print("Float64Ref \(name) \(tensor): \(String(format: "%.2e", e)) (tol \(String(format: "%.0e", tol)); torch float32 \(torch))")
        #expect(e <= tol, "\(name) \(tensor): max|ours − float64| / max|float64| = \(e) > \(tol)", sourceLocation: sourceLocation)
        return e
    }

    /// Every `grad.<p>` of the case's parameters against the store's gradients. The attention's key bias adds the same
    /// constant to every score of a query's row, which softmax ignores: its true gradient is 0 and both sides hold
    /// rounding noise (~1e-17 in float64), so it is measured against the case's largest gradient of any tensor.
    func checkParameterGradients(_ name: String, _ store: ParameterStore, tol: Double, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let grads = store.gradients.toArray()
        let largest = try names(name, "grad").map { try doubles("\(name).grad.\($0)").map(abs).max() ?? 0 }.max() ?? 0
        for p in names(name, "param") {
            let info = try #require(store.info(p), sourceLocation: sourceLocation)
            try check(Array(grads[info.range]), name, "grad.\(p)", tol: tol, floor: p.hasSuffix("k_layer.bias") ? largest : 0,
                      sourceLocation: sourceLocation)
        }
    }

    /// The mask the Swift generator draws for `count` values with probability p (1 kept, 0 dropped), as the layers do.
    static func swiftMask(seed: UInt64, count: Int, p: Double) -> [Double] {
        var rng = Xoshiro256(seed: seed)
        return (0..<count).map { _ in rng.nextUnitFloat() < Float(p) ? 0 : 1 }
    }
}

/// The float32 layers of Sources/SpeechainMPI/Model against PyTorch float64 (Resources/layer_refs/layers.safetensors):
/// outputs and every gradient (input and parameters) of Linear (with and without bias), GELU (exact and tanh), ReLU,
/// Tanh, LayerNorm (eps 1e-5 and 1e-6, one row whose variance is of the order of eps), Dropout with the reference's
/// mask, and cross-entropy with label smoothing. The error of a tensor is max|ours − ref| / max|ref|; each test states
/// its tolerance (1e-4 or tighter, at least ~10× above the worst error seen) and prints every tensor's error next to
/// torch's own float32 error.
@Suite(.serialized) struct LayerFloat64ReferenceTests {
    static let refs = Result { try Float64References.load("layers") }

    /// Runs a Layer on the case's `in.x` with its parameters (if any), backward with `dy.y`; checks y, dx and every
    /// parameter gradient.
    static func checkLayer(_ layer: Layer, _ name: String, tol: Double, context: ForwardContext = ForwardContext(training: true),
                           refs source: Result<Float64References, Error> = refs,
                           sourceLocation: SourceLocation = #_sourceLocation) throws -> (x: [Float], y: [Float], dx: [Float]) {
        let r = try source.get()
        let shape = try r.shape("\(name).in.x")
        let rows = shape[0], width = shape.dropFirst().reduce(1, *)
        let outWidth = layer.outputWidth(forInput: width)
        let store = ParameterStore()
        layer.declareParameters(in: store, prefix: "", module: "m")
        store.allocate()
        try r.loadParameters(name, into: store, sourceLocation: sourceLocation)
        let x = FloatBuffer(try r.floats("\(name).in.x")), y = FloatBuffer(count: rows * outWidth, repeating: .nan)
        let xm = Matrix(x.pointer, rows: rows, cols: width), ym = Matrix(y.pointer, rows: rows, cols: outWidth)
        layer.forward(xm, ym, context: context)
        store.gradients.fill(0)
        let dy = FloatBuffer(try r.floats("\(name).dy.y")), dx = FloatBuffer(count: rows * width, repeating: .nan)
        layer.backward(x: xm, y: ym, dy: Matrix(dy.pointer, rows: rows, cols: outWidth), dx: Matrix(dx.pointer, rows: rows, cols: width),
                       accumulate: true)
        try r.check(y.toArray(), name, "out.y", tol: tol, sourceLocation: sourceLocation)
        try r.check(dx.toArray(), name, "grad.x", tol: tol, sourceLocation: sourceLocation)
        try r.checkParameterGradients(name, store, tol: tol, sourceLocation: sourceLocation)
        return (x.toArray(), y.toArray(), dx.toArray())
    }

    @Test func referenceFileIsComplete() throws {
        let r = try Self.refs.get()
        print("layer_refs generated with torch \(r.meta.torch_version)")
        #expect(!r.meta.torch_version.isEmpty)
        let cases = r.meta.cases.filter { $0.value.group == "layers" }.keys.sorted()
        #expect(cases == ["cross_entropy_ls0", "cross_entropy_ls0.1", "dropout", "gelu_none", "gelu_tanh", "layernorm_eps1e-05",
                          "layernorm_eps1e-06", "linear_bias", "linear_nobias", "relu", "tanh"])
    }

    /// sgemm in float32 over 7 products: worst seen 7.5e-8.
    @Test(arguments: ["linear_bias", "linear_nobias"])
    func linear(name: String) throws {
        let conf = try Self.refs.get().conf(name)
        _ = try Self.checkLayer(Linear(7, 5, bias: try #require(conf.bias as Bool?)), name, tol: 1e-6)
    }

    /// Elementwise: erf/exp/tanh evaluated in double and rounded once, the rest in float32: worst seen 2.9e-7 (GELU tanh's
    /// dx, where torch's own float32 is as far), 7.7e-8 for the exact GELU.
    @Test(arguments: ["gelu_none", "gelu_tanh", "relu", "tanh"])
    func activation(name: String) throws {
        let layer: Layer
        switch name {
        case "gelu_none": layer = GELU(approximate: .none)
        case "gelu_tanh": layer = GELU(approximate: .tanh)
        case "relu": layer = ReLU()
        default: layer = Tanh()
        }
        _ = try Self.checkLayer(layer, name, tol: name == "gelu_tanh" ? 3e-6 : 1e-6)
    }

    /// Statistics in double, output in float32; one row's variance is of the order of eps (so eps matters). Worst seen
    /// 1.2e-7.
    @Test(arguments: ["layernorm_eps1e-05", "layernorm_eps1e-06"])
    func layerNorm(name: String) throws {
        let conf = try Self.refs.get().conf(name)
        _ = try Self.checkLayer(LayerNorm(16, eps: Float(try #require(conf.eps))), name, tol: 2e-6)
    }

    /// The reference multiplies by the mask Xoshiro256(seed) draws: the Swift generator must draw it (checked from the
    /// stored mask and from the zeros of our output, every input being non-zero), then y and dx agree to rounding
    /// (worst seen 6e-8).
    @Test func dropout() throws {
        let r = try Self.refs.get()
        let name = "dropout", conf = try r.conf(name)
        let p = try #require(conf.p), seed = try #require(conf.seed)
        let mask = try r.doubles("\(name).mask.y")
        #expect(Float64References.swiftMask(seed: seed, count: mask.count, p: p) == mask, "the reference's mask is not Xoshiro256(seed: \(seed))'s")
        let (x, y, dx) = try Self.checkLayer(Dropout(p: Float(p)), name, tol: 1e-6,
                                             context: ForwardContext(training: true, rng: Xoshiro256(seed: seed)))
        #expect(x.allSatisfy { $0 != 0 })
        #expect(y.map { $0 == 0 ? 0.0 : 1.0 } == mask, "our dropout drew another mask")
        #expect(dx.map { $0 == 0 ? 0.0 : 1.0 } == mask, "dx does not follow the mask")
        #expect(mask.contains(0) && mask.contains(1))
    }

    /// CrossEntropy (mean over rows, label smoothing): the loss and ∂loss/∂logits (worst seen 8.4e-8).
    @Test(arguments: ["cross_entropy_ls0", "cross_entropy_ls0.1"])
    func crossEntropy(name: String) throws {
        let r = try Self.refs.get()
        let conf = try r.conf(name)
        let labels = try #require(conf.labels)
        let shape = try r.shape("\(name).in.logits")
        let logits = FloatBuffer(try r.floats("\(name).in.logits"))
        let ce = CrossEntropy(labelSmoothing: Float(try #require(conf.label_smoothing)))
        let m = Matrix(logits.pointer, rows: shape[0], cols: shape[1])
        let loss = labels.withUnsafeBufferPointer { ce.forward(logits: m, labels: $0).loss }
        let d = FloatBuffer(count: logits.count, repeating: .nan)
        ce.backward(seed: 1, into: Matrix(d.pointer, rows: shape[0], cols: shape[1]))
        try r.check([loss], name, "out.loss", tol: 1e-6)
        try r.check(d.toArray(), name, "grad.logits", tol: 1e-6)
    }
}
