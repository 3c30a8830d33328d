/// SpeeChain's `prenet.embed.EmbedPrenet`: torch.nn.Embedding(V, d, padding_idx 0), unscaled by default:
/// y[n] = E[token n]; dE[v] += Σ_{n: token n = v} dy[n] for every v except the padding index (torch leaves its
/// row's gradient zero). State-dict name: `embed.weight` [V, d].
public final class EmbedPrenet {
    public let vocabSize: Int
    public let dim: Int
    public let paddingIndex = 0
    public let scale: Bool
    private var store: ParameterStore!   // strong: a layer keeps the buffers it reads and writes alive
    private var weightOffset = 0
    let output = FloatBuffer(count: 0)
    private var tokens: UnsafePointer<Int32>?
    private var count = 0

    public init(vocabSize: Int, dim: Int, scale: Bool = false) { self.vocabSize = vocabSize; self.dim = dim; self.scale = scale }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        self.store = store
        weightOffset = store.declare(prefix + "embed.weight", shape: [vocabSize, dim], module: module)
    }

    /// torch's default: N(0, 1), the padding row zero.
    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        let w = store.values.pointer + weightOffset
        for i in 0..<(vocabSize * dim) { w[i] = rng.normal() }
        Kernels.fill(w + paddingIndex * dim, count: dim, value: 0)
    }

    private var factor: Float { scale ? Float(dim).squareRoot() : 1 }

    /// tokens [n] (ids in 0..<V, checked by the caller) → `output` [n, d].
    public func forward(_ tokens: UnsafePointer<Int32>, count: Int) {
        self.tokens = tokens; self.count = count
        output.resize(to: count * dim)
        let w = store.values.pointer + weightOffset, f = factor
        for i in 0..<count {
            let src = w + Int(tokens[i]) * dim, dst = output.pointer + i * dim
            if f == 1 { dst.update(from: src, count: dim) } else { for j in 0..<dim { dst[j] = src[j] * f } }
        }
    }

    public func backward(_ dOutput: UnsafePointer<Float>) {
        let g = store.gradients.pointer + weightOffset, f = factor
        for i in 0..<count {
            let v = Int(tokens![i])
            guard v != paddingIndex else { continue }
            Kernels.axpy(f, dOutput + i * dim, g + v * dim, count: dim)
        }
    }
}
