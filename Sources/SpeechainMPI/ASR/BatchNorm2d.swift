/// torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1, affine, running statistics) over [B, C, H, W]:
///
///     training:   μ_c = mean_{b,i,j} x,  σ²_c = mean (x − μ_c)² (biased),  x̂ = (x − μ_c)/√(σ²_c + ε),  y = γ_c·x̂ + β_c
///                 running_mean ← 0.9·running_mean + 0.1·μ_c,  running_var ← 0.9·running_var + 0.1·σ²_c·N/(N − 1),
///                 num_batches_tracked += 1
///     evaluation: y = γ_c·(x − running_mean)/√(running_var + ε) + β_c
///     backward:   dβ = Σ dy,  dγ = Σ dy·x̂,  dx = γ/(N·√(σ² + ε))·(N·dy − Σ dy − x̂·Σ dy·x̂)
///
/// As in torch, the statistics cover every position of the padded tensor (padding included).
///
/// Under data parallelism torch's plain BatchNorm2d takes each rank's own batch statistics, and DDP's
/// `broadcast_buffers` copies rank 0's running statistics to the others before every forward: the model's state is
/// rank 0's. We keep each rank's running statistics and save rank 0's in checkpoints, which is the same state where
/// it matters (what is saved and then evaluated); before every validation the trainer copies rank 0's buffers to all
/// ranks, so every rank evaluates with the state DDP would have. With `reduce` set (SyncBatchNorm, the prenet's
/// `sync_batchnorm: true`), the sums behind μ and σ² and behind the two backward sums are added over the ranks
/// through `reduce` before use, so every rank normalises with the global batch's statistics, as torch.nn.SyncBatchNorm does.
public final class BatchNorm2d {
    public let channels: Int
    public let eps: Float = 1e-5
    public let momentum: Float = 0.1
    /// Adds the given doubles over all ranks in place (SyncBatchNorm); nil keeps the statistics per rank.
    public var reduce: ((UnsafeMutablePointer<Double>, Int) throws -> Void)?
    public private(set) var runningMean: [Float]
    public private(set) var runningVar: [Float]
    public private(set) var batchesTracked: Int64 = 0
    private var store: ParameterStore!   // strong: a layer keeps the buffers it reads and writes alive
    private(set) var weightOffset = 0
    private(set) var biasOffset = 0
    private var prefix = ""
    private var mean: [Float]
    private var rstd: [Float]
    private var sums: [Double]
    private var trained = false
    private var count = 0

    public init(_ channels: Int) {
        self.channels = channels
        runningMean = [Float](repeating: 0, count: channels)
        runningVar = [Float](repeating: 1, count: channels)
        mean = [Float](repeating: 0, count: channels)
        rstd = [Float](repeating: 1, count: channels)
        sums = [Double](repeating: 0, count: 2 * channels + 1)
    }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        self.store = store
        self.prefix = prefix
        weightOffset = store.declare(prefix + "weight", shape: [channels], module: module)
        biasOffset = store.declare(prefix + "bias", shape: [channels], module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        Kernels.fill(store.values.pointer + weightOffset, count: channels, value: 1)
        Kernels.fill(store.values.pointer + biasOffset, count: channels, value: 0)
    }

    /// The buffers as torch's state dict names them.
    public var buffers: [NamedTensor] {
        [NamedTensor(name: prefix + "running_mean", shape: [channels], values: runningMean),
         NamedTensor(name: prefix + "running_var", shape: [channels], values: runningVar),
         NamedTensor(name: prefix + "num_batches_tracked", shape: [], values: [Float(batchesTracked)])]
    }

    public var bufferNames: [String] { buffers.map(\.name) }

    /// Whether `t` is one of this layer's buffers with the right size.
    public func fits(_ t: NamedTensor) -> Bool {
        switch t.name {
        case prefix + "running_mean", prefix + "running_var": return t.values.count == channels
        case prefix + "num_batches_tracked": return t.values.count == 1
        default: return false
        }
    }

    /// Loads a buffer that `fits`.
    public func load(_ t: NamedTensor) {
        precondition(fits(t))
        switch t.name {
        case prefix + "running_mean": runningMean = t.values
        case prefix + "running_var": runningVar = t.values
        default: batchesTracked = Int64(t.values[0])
        }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, plane: Int, training: Bool) throws {
        trained = training
        let w = store.values.pointer + weightOffset, bias = store.values.pointer + biasOffset
        if training {
            for i in sums.indices { sums[i] = 0 }
            for b in 0..<batch {
                for c in 0..<channels {
                    let (s, q) = Self.moments(x + (b * channels + c) * plane, count: plane)
                    sums[c] += s; sums[channels + c] += q
                }
            }
            sums[2 * channels] = Double(batch * plane)
            if let reduce { try sums.withUnsafeMutableBufferPointer { try reduce($0.baseAddress!, $0.count) } }
            let n = sums[2 * channels]
            count = Int(n)
            for c in 0..<channels {
                let mu = sums[c] / n
                let variance = max(sums[channels + c] / n - mu * mu, 0)
                mean[c] = Float(mu)
                rstd[c] = Float(1 / (variance + Double(eps)).squareRoot())
                let unbiased = n > 1 ? variance * n / (n - 1) : variance
                runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(mu)
                runningVar[c] = (1 - momentum) * runningVar[c] + momentum * Float(unbiased)
            }
            batchesTracked += 1
        } else {
            for c in 0..<channels { mean[c] = runningMean[c]; rstd[c] = 1 / (runningVar[c] + eps).squareRoot() }
        }
        for b in 0..<batch {
            for c in 0..<channels {
                let o = (b * channels + c) * plane
                let scale = w[c] * rstd[c], shift = bias[c] - mean[c] * scale
                for t in 0..<plane { y[o + t] = x[o + t] * scale + shift }
            }
        }
    }

    /// (Σ x, Σ x²) in double over one channel plane, 8 partial sums (a plain loop stays scalar and latency-bound).
    @inline(__always) static func moments(_ x: UnsafePointer<Float>, count: Int) -> (Double, Double) {
        var s = SIMD8<Double>(repeating: 0), q = SIMD8<Double>(repeating: 0)
        var t = 0
        while t + 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + t).loadUnaligned(as: SIMD8<Float>.self))
            s += v; q += v * v; t += 8
        }
        var ss = s.sum(), qq = q.sum()
        while t < count { let v = Double(x[t]); ss += v; qq += v * v; t += 1 }
        return (ss, qq)
    }

    /// (Σ dy, Σ dy·x̂) in double over one channel plane, x̂ = (x − mean)·rstd in float, 8 partial sums.
    @inline(__always) static func gradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int,
                                               mean: Float, rstd: Float) -> (Double, Double) {
        var s = SIMD8<Double>(repeating: 0), sx = SIMD8<Double>(repeating: 0)
        var t = 0
        while t + 8 <= count {
            let d = SIMD8<Double>(UnsafeRawPointer(dy + t).loadUnaligned(as: SIMD8<Float>.self))
            let xh = (UnsafeRawPointer(x + t).loadUnaligned(as: SIMD8<Float>.self) - mean) * rstd
            s += d; sx += d * SIMD8<Double>(xh); t += 8
        }
        var ss = s.sum(), sxx = sx.sum()
        while t < count { let d = Double(dy[t]); ss += d; sxx += d * Double((x[t] - mean) * rstd); t += 1 }
        return (ss, sxx)
    }

    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                         batch: Int, plane: Int, accumulate: Bool) throws {
        let w = store.values.pointer + weightOffset
        let gw = store.gradients.pointer + weightOffset, gb = store.gradients.pointer + biasOffset
        // Σ dy and Σ dy·x̂ per channel
        for i in sums.indices { sums[i] = 0 }
        for b in 0..<batch {
            for c in 0..<channels {
                let o = (b * channels + c) * plane
                let (s, sx) = Self.gradientSums(dy + o, x + o, count: plane, mean: mean[c], rstd: rstd[c])
                sums[c] += s; sums[channels + c] += sx
            }
        }
        if accumulate {
            for c in 0..<channels { gb[c] += Float(sums[c]); gw[c] += Float(sums[channels + c]) }
        }
        guard let dx else { return }
        if !trained {
            for b in 0..<batch { for c in 0..<channels {
                let o = (b * channels + c) * plane, k = w[c] * rstd[c]
                for t in 0..<plane { dx[o + t] = dy[o + t] * k }
            } }
            return
        }
        if let reduce { sums[2 * channels] = 0; try sums.withUnsafeMutableBufferPointer { try reduce($0.baseAddress!, $0.count) } }
        let n = Double(count)
        for b in 0..<batch {
            for c in 0..<channels {
                let o = (b * channels + c) * plane
                let mu = mean[c], r = rstd[c]
                let k = w[c] * r
                let meanDy = Float(sums[c] / n), meanDyX = Float(sums[channels + c] / n)
                for t in 0..<plane { dx[o + t] = k * (dy[o + t] - meanDy - (x[o + t] - mu) * r * meanDyX) }
            }
        }
    }
}
