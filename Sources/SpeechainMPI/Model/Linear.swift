/// y = x·Wᵀ + b with W of shape [out, in] (torch.nn.Linear); both products and gradients go through sgemm:
/// dW += dyᵀ·x, db += Σ_rows dy, dx = dy·W.
public final class Linear: Layer {
    public let inFeatures: Int
    public let outFeatures: Int
    public let hasBias: Bool
    private unowned(unsafe) var store: ParameterStore!
    private var weightOffset = 0
    private var biasOffset = 0

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.hasBias = bias
    }

    public var description: String { "Linear(in_features=\(inFeatures), out_features=\(outFeatures), bias=\(hasBias ? "True" : "False"))" }

    public func outputWidth(forInput width: Int) -> Int { outFeatures }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        self.store = store
        weightOffset = store.declare(prefix + "weight", shape: [outFeatures, inFeatures], module: module)
        if hasBias { biasOffset = store.declare(prefix + "bias", shape: [outFeatures], module: module) }
    }

    /// torch's default: kaiming_uniform(a=√5) for W and U(-1/√in, 1/√in) for b, both bound 1/√in.
    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = store.values.pointer
        for i in 0..<(inFeatures * outFeatures) { w[weightOffset + i] = rng.uniform(-bound, bound) }
        if hasBias { for i in 0..<outFeatures { w[biasOffset + i] = rng.uniform(-bound, bound) } }
    }

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        let w = store.values.pointer
        BLAS.sgemm(transposeA: false, transposeB: true, m: x.rows, n: outFeatures, k: inFeatures,
                   a: x.data, lda: inFeatures, b: w + weightOffset, ldb: inFeatures,
                   beta: 0, c: y.data, ldc: outFeatures)
        if hasBias { Kernels.addRowVector(w + biasOffset, to: y.data, rows: x.rows, cols: outFeatures) }
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        let w = store.values.pointer, g = store.gradients.pointer
        if accumulate {
            BLAS.sgemm(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: x.rows,
                       a: dy.data, lda: outFeatures, b: x.data, ldb: inFeatures,
                       beta: 1, c: g + weightOffset, ldc: inFeatures)
            if hasBias { Kernels.accumulateColumnSums(dy.data, rows: dy.rows, cols: outFeatures, into: g + biasOffset) }
        }
        if let dx {
            BLAS.sgemm(transposeA: false, transposeB: false, m: x.rows, n: inFeatures, k: outFeatures,
                       a: dy.data, lda: outFeatures, b: w + weightOffset, ldb: inFeatures,
                       beta: 0, c: dx.data, ldc: inFeatures)
        }
    }
}
