/// torch.nn.Conv2d with a square kernel k, stride s and no padding over [B, Cin, H, W] row-major tensors:
///
///     y[b, o, i, j] = bias[o] + Σ_{c, u, v} W[o, c, u, v] · x[b, c, s·i + u, s·j + v],
///     H' = (H − k)/s + 1, W' = (W − k)/s + 1
///
/// Each utterance is unfolded (im2col) into cols [Cin·k·k, H'·W'] and multiplied by W [Cout, Cin·k·k] in one sgemm;
/// backward unfolds again (one utterance's cols live at a time, so memory does not grow with the batch):
/// dW += dy_b · cols_bᵀ, dbias += Σ dy, dcols = Wᵀ · dy_b folded back (col2im) into dx_b.
public final class Conv2d {
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let stride: Int
    public let hasBias: Bool
    private unowned(unsafe) var store: ParameterStore!
    private(set) var weightOffset = 0
    private(set) var biasOffset = 0
    private let cols = FloatBuffer(count: 0)

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int = 3, stride: Int = 2, bias: Bool = true) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.hasBias = bias
    }

    public func outputSize(_ n: Int) -> Int { n < kernel ? 0 : (n - kernel) / stride + 1 }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        self.store = store
        weightOffset = store.declare(prefix + "weight", shape: [outChannels, inChannels, kernel, kernel], module: module)
        if hasBias { biasOffset = store.declare(prefix + "bias", shape: [outChannels], module: module) }
    }

    /// torch's default: kaiming_uniform(a=√5) for W and U(−1/√fan_in, 1/√fan_in) for the bias, fan_in = Cin·k·k.
    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        let fanIn = inChannels * kernel * kernel
        let bound = 1 / Float(fanIn).squareRoot()
        let w = store.values.pointer
        for i in 0..<(outChannels * fanIn) { w[weightOffset + i] = rng.uniform(-bound, bound) }
        if hasBias { for i in 0..<outChannels { w[biasOffset + i] = rng.uniform(-bound, bound) } }
    }

    private var patch: Int { inChannels * kernel * kernel }

    /// cols[(c·k + u)·k + v, i·W' + j] = x[c, s·i + u, s·j + v] for one utterance.
    private func unfold(_ x: UnsafePointer<Float>, height: Int, width: Int, outH: Int, outW: Int) {
        let k = kernel, s = stride, n = outH * outW
        var row = cols.pointer
        for c in 0..<inChannels {
            let plane = x + c * height * width
            for u in 0..<k {
                for v in 0..<k {
                    for i in 0..<outH {
                        let src = plane + (s * i + u) * width + v
                        let dst = row + i * outW
                        if s == 1 { dst.update(from: src, count: outW) }
                        else { for j in 0..<outW { dst[j] = src[s * j] } }
                    }
                    row += n
                }
            }
        }
    }

    /// dx[c, s·i + u, s·j + v] += dcols[(c·k + u)·k + v, i·W' + j].
    private func fold(into dx: UnsafeMutablePointer<Float>, height: Int, width: Int, outH: Int, outW: Int) {
        let k = kernel, s = stride, n = outH * outW
        var row = UnsafePointer(cols.pointer)
        for c in 0..<inChannels {
            let plane = dx + c * height * width
            for u in 0..<k {
                for v in 0..<k {
                    for i in 0..<outH {
                        let dst = plane + (s * i + u) * width + v
                        let src = row + i * outW
                        for j in 0..<outW { dst[s * j] += src[j] }
                    }
                    row += n
                }
            }
        }
    }

    /// x [B, Cin, H, W] → y [B, Cout, H', W'].
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int) {
        let outH = outputSize(height), outW = outputSize(width), n = outH * outW
        cols.resize(to: patch * n)
        let w = store.values.pointer
        for b in 0..<batch {
            unfold(x + b * inChannels * height * width, height: height, width: width, outH: outH, outW: outW)
            let yb = y + b * outChannels * n
            BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: n, k: patch,
                       a: w + weightOffset, lda: patch, b: cols.pointer, ldb: n, beta: 0, c: yb, ldc: n)
            if hasBias { for o in 0..<outChannels { let bo = w[biasOffset + o]; let r = yb + o * n; for t in 0..<n { r[t] += bo } } }
        }
    }

    /// Adds the parameter gradients (when `accumulate`) and writes dx (when non-nil).
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                         batch: Int, height: Int, width: Int, accumulate: Bool) {
        let outH = outputSize(height), outW = outputSize(width), n = outH * outW
        cols.resize(to: patch * n)
        let w = store.values.pointer, g = store.gradients.pointer
        if let dx { Kernels.fill(dx, count: batch * inChannels * height * width, value: 0) }
        for b in 0..<batch {
            let dyb = dy + b * outChannels * n
            if accumulate {
                unfold(x + b * inChannels * height * width, height: height, width: width, outH: outH, outW: outW)
                BLAS.sgemm(transposeA: false, transposeB: true, m: outChannels, n: patch, k: n,
                           a: dyb, lda: n, b: cols.pointer, ldb: n, beta: 1, c: g + weightOffset, ldc: patch)
                if hasBias { for o in 0..<outChannels { var s: Float = 0; let r = dyb + o * n; for t in 0..<n { s += r[t] }; g[biasOffset + o] += s } }
            }
            if let dx {
                BLAS.sgemm(transposeA: true, transposeB: false, m: patch, n: n, k: outChannels,
                           a: w + weightOffset, lda: patch, b: dyb, ldb: n, beta: 0, c: cols.pointer, ldc: n)
                fold(into: dx + b * inChannels * height * width, height: height, width: width, outH: outH, outW: outW)
            }
        }
    }
}
