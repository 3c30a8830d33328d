import CKernels

/// torch.nn.Conv2d with a square kernel k, stride s and no padding over [B, Cin, H, W] row-major tensors:
///
///     y[b, o, i, j] = bias[o] + Σ_{c, u, v} W[o, c, u, v] · x[b, c, s·i + u, s·j + v],
///     H' = (H − k)/s + 1, W' = (W − k)/s + 1
///
/// Each utterance is unfolded (im2col) into cols [Cin·k·k, H'·W'] and multiplied by W [Cout, Cin·k·k] in one sgemm;
/// backward unfolds again (one utterance's cols live at a time, so memory does not grow with the batch):
/// dW += dy_b · cols_bᵀ, dbias += Σ dy, dcols = Wᵀ · dy_b folded back (col2im) into dx_b.
///
/// Under autocast p (`amp` of the forward; docs/amp-arasr.md): y = p(conv(p(x), p(W))), and with a bias
/// p(y + p(b)) (cuDNN convolves without it, ATen adds it to the p output); backward, from a
/// p-valued dy: dW = p(Σ_batch dy_b·p(cols_b)ᵀ) and db = p(Σ dy), each rounded once for the whole batch and added
/// into the float32 gradient buffer, and dx = p(fold(p(W)ᵀ·dy_b)).
///
/// Under bfloat16 on a CPU with AVX512_BF16 (`bfloat16Products` = `.native`, the default there, as for Linear) the
/// three products run in `BF16GEMM`'s kernels, which round their float32 operands as they pack them: y_b = W·cols_b
/// and dcols = Wᵀ·dy_b as its "input gradient" product (dy := W or Wᵀ, w := cols_b or dy_b), Σ_b dy_b·cols_bᵀ as its
/// "forward" product (x := dy_b, w := cols_b) added per utterance into the batch's float32 sum. The same sums of
/// exact bfloat16 products as the emulation, added in another order; the roundings around them are the emulation's.
/// A dy that is not bfloat16-valued falls back to the emulated backward (as Linear's does).
public final class Conv2d {
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let stride: Int
    public let hasBias: Bool
    private var store: ParameterStore!   // strong: a layer keeps the buffers it reads and writes alive
    private(set) var weightOffset = 0
    private(set) var biasOffset = 0
    private let cols = FloatBuffer(count: 0)
    private let roundedWeight = FloatBuffer(count: 0), roundedBias = FloatBuffer(count: 0)
    private let batchGradient = FloatBuffer(count: 0)
    private var precision: ReducedPrecision?
    // native bfloat16 products: the kernels' scratch, one utterance's dW, and Wᵀ for dcols
    private let workspace = BF16GEMM.Workspace()
    private let utteranceGradient = FloatBuffer(count: 0), transposedWeight = FloatBuffer(count: 0)

    /// How the products run under bfloat16 autocast (see the type's documentation); float16 is always emulated.
    public var bfloat16Products = BF16GEMM.defaultProducts
    /// Which kernels run the float32 forward, weight gradient and input gradient of a convolution with a patch of at
    /// least `Float32Kernels.minConvPatch` values (`Float32Kernels`: ours broadcast the patch values straight from x
    /// and fold the input gradient while in cache — no unfolded copy of the utterance — or im2col/col2im + sgemm).
    public var float32Kernels = Float32Kernels.selected
    private let ownWorkspace = BF16GEMM.Workspace(), inputGradientWorkspace = BF16GEMM.Workspace()

    /// Whether a float32 product (no autocast) runs in our own kernels.
    private func runsOwnKernels(_ amp: ReducedPrecision?) -> Bool {
        amp == nil && patch >= Float32Kernels.minConvPatch && Float32Kernels.effective(float32Kernels) == .own
    }

    /// Wᵀ [patch, Cout] in `transposedWeight`, for dcols = Wᵀ·dy (our float32 kernel and the native bfloat16 one).
    private func transposeWeight() {
        transposedWeight.resize(to: outChannels * patch)
        f32_transpose(store.values.pointer + weightOffset, outChannels, patch, transposedWeight.pointer)
    }
    /// Whether the last forward and backward ran the native bfloat16 products; tests read it.
    internal private(set) var ranNative = (forward: false, backward: false)

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

    /// cols[(c·k + u)·k + v, i·W' + j] = x[c, s·i + u, s·j + v] for one utterance (a vector kernel).
    private func unfold(_ x: UnsafePointer<Float>, height: Int, width: Int, outH: Int, outW: Int) {
        ck_conv_unfold(VectorPath.current.ck, x, cols.pointer, inChannels, height, width, kernel, stride, outH, outW)
    }

    /// dx[c, s·i + u, s·j + v] = Σ dcols[(c·k + u)·k + v, i·W' + j], then 0 where reluMask ≤ 0 (a vector kernel,
    /// one channel plane at a time).
    private func fold(into dx: UnsafeMutablePointer<Float>, reluMask: UnsafePointer<Float>?, height: Int, width: Int,
                      outH: Int, outW: Int) {
        ck_conv_fold(VectorPath.current.ck, cols.pointer, dx, inChannels, height, width, kernel, stride, outH, outW, 1, reluMask)
    }

    /// x [B, Cin, H, W] → y [B, Cout, H', W'], and with `relu` y = relu(conv(x)) in place, one utterance at a time
    /// (a ReLU straight after the convolution: no pass of its own over the batch, no second tensor).
    ///
    /// In float32 each utterance's output starts as the bias and the product is added to it (sgemm β = 1: no zeroing
    /// pass inside the BLAS, no bias pass after it); the sums differ from product-then-bias only in rounding order.
    /// With `Float32Kernels.own` (and a patch of at least `Float32Kernels.minConvPatch` values) `f32_conv_forward`
    /// computes each utterance instead: no unfolded copy, each sum over the patch in order, then the bias, then the ReLU.
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int,
                        amp: ReducedPrecision? = nil, relu: Bool = false) {
        let outH = outputSize(height), outW = outputSize(width), n = outH * outW
        precision = amp
        var weight = UnsafePointer(store.values.pointer + weightOffset)
        var bias = UnsafePointer(store.values.pointer + biasOffset)
        let native = amp == .bfloat16 && BF16GEMM.effective(bfloat16Products) == .native
        ranNative = (native, false)
        if let amp { (weight, bias) = castParameters(amp, weight: !native) }
        if runsOwnKernels(amp) {
            let ws = ownWorkspace.reserve(bytes: f32_conv_forward_workspace_bytes(inChannels, kernel, outChannels))
            for b in 0..<batch {
                BLAS.ownProduct(transposeB: false, m: outChannels, n: n, k: patch) {
                    if b == 0 { f32_conv_forward_pack(weight, outChannels, patch, ws) }   // Wᵀ panels, once for the batch
                    f32_conv_forward(x + b * inChannels * height * width, inChannels, height, width, kernel, stride, outH,
                                     outW, outChannels, hasBias ? bias : nil, relu ? 1 : 0, y + b * outChannels * n, ws)
                }
            }
            return
        }
        cols.resize(to: patch * n)   // (only here: our kernels unfold nothing)
        for b in 0..<batch {
            unfold(x + b * inChannels * height * width, height: height, width: width, outH: outH, outW: outW)
            let yb = y + b * outChannels * n
            if amp == nil, hasBias {
                for o in 0..<outChannels { Kernels.fill(yb + o * n, count: n, value: bias[o]) }
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: n, k: patch,
                           a: weight, lda: patch, b: cols.pointer, ldb: n, beta: 1, c: yb, ldc: n)
            } else {
                if native {
                    // y_b = bf16(W)·bf16(cols_b): the kernel rounds both as it packs them
                    BF16GEMM.inputGradient(dy: store.values.pointer + weightOffset, w: cols.pointer, dx: yb,
                                           rows: outChannels, inFeatures: n, outFeatures: patch, workspace: workspace)
                } else {
                    amp?.round(cols.pointer, count: patch * n)
                    BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: n, k: patch,
                               a: weight, lda: patch, b: cols.pointer, ldb: n, beta: 0, c: yb, ldc: n)
                }
                if let amp, hasBias {
                    amp.round(yb, count: outChannels * n)   // cuDNN's product, before ATen adds the bias
                    for o in 0..<outChannels { let bo = bias[o]; let r = yb + o * n; for t in 0..<n { r[t] += bo } }
                }
            }
            if amp == nil, relu { Kernels.relu(yb, yb, count: outChannels * n) }
        }
        if let amp {
            amp.round(y, count: batch * outChannels * n)
            if relu { Kernels.relu(y, y, count: batch * outChannels * n) }   // relu of a p value is one
        }
    }

    /// Σ x over one output plane, in 16 float partial sums (a plain reduction loop stays scalar: float addition does
    /// not reassociate).
    @inline(__always) static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD16<Float>(repeating: 0)
        var t = 0
        while t + 16 <= count { acc += UnsafeRawPointer(x + t).loadUnaligned(as: SIMD16<Float>.self); t += 16 }
        var s = acc.sum()
        while t < count { s += x[t]; t += 1 }
        return s
    }

    /// p(W) and p(b) in this layer's own buffers (p(W) only when `weight`: the native products round W themselves).
    private func castParameters(_ p: ReducedPrecision, weight: Bool = true) -> (UnsafePointer<Float>, UnsafePointer<Float>) {
        let w = store.values.pointer
        roundedWeight.resize(to: outChannels * patch)
        if weight { p.round(w + weightOffset, into: roundedWeight.pointer, count: outChannels * patch) }
        if hasBias {
            roundedBias.resize(to: outChannels)
            p.round(w + biasOffset, into: roundedBias.pointer, count: outChannels)
        }
        return (UnsafePointer(roundedWeight.pointer), UnsafePointer(roundedBias.pointer))
    }

    /// Adds the parameter gradients (when `accumulate`) and writes dx (when non-nil). With `reluMask` (shaped as x:
    /// the output of the ReLU that made x) dx is the gradient before that ReLU: 0 where the mask is ≤ 0, as torch's
    /// threshold_backward — applied as each channel plane is folded, not in a pass of its own.
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                         reluMask: UnsafePointer<Float>? = nil, batch: Int, height: Int, width: Int, accumulate: Bool) {
        let outH = outputSize(height), outW = outputSize(width), n = outH * outW
        let g = store.gradients.pointer
        var weight = UnsafePointer(store.values.pointer + weightOffset)
        // under autocast: the float32 sums of the whole batch, rounded once and then added to the buffer
        var weightGradient = g + weightOffset, biasGradient = g + biasOffset
        let native = ranNative.forward && BF16GEMM.allRepresentable(dy, count: batch * outChannels * n)
        ranNative.backward = native
        if native, dx != nil { transposeWeight() }   // (rounded by the kernel)
        if let amp = precision {
            if !native { weight = castParameters(amp).0 }
            if accumulate {
                batchGradient.resize(to: outChannels * patch + outChannels)
                Kernels.fill(batchGradient.pointer, count: batchGradient.count, value: 0)
                weightGradient = batchGradient.pointer; biasGradient = batchGradient.pointer + outChannels * patch
            }
        }
        // float32 with our kernels: dW += dy_b·cols_bᵀ without an unfolded copy (f32_conv_weight_gradient) and
        // dx = fold(Wᵀ·dy_b) a few channels at a time (f32_conv_input_gradient, Wᵀ made once); otherwise im2col/col2im
        let own = runsOwnKernels(precision)
        if !own { cols.resize(to: patch * n) }
        let weightGradientWorkspace: UnsafeMutableRawPointer? = accumulate && own
            ? ownWorkspace.reserve(bytes: f32_conv_weight_gradient_workspace_bytes(inChannels, kernel, n, outChannels)) : nil
        var inputGradientWorkspace: UnsafeMutableRawPointer?
        if dx != nil, own {
            transposeWeight()
            inputGradientWorkspace = self.inputGradientWorkspace.reserve(
                bytes: f32_conv_input_gradient_workspace_bytes(inChannels, kernel, n, outChannels))
        }
        for b in 0..<batch {
            let dyb = dy + b * outChannels * n
            if accumulate, let ws = weightGradientWorkspace {
                BLAS.ownProduct(transposeB: true, m: outChannels, n: patch, k: n) {
                    f32_conv_weight_gradient(x + b * inChannels * height * width, inChannels, height, width, kernel, stride,
                                             outH, outW, dyb, outChannels, weightGradient, ws)
                }
            } else if accumulate {
                unfold(x + b * inChannels * height * width, height: height, width: width, outH: outH, outW: outW)
                if native {
                    // dy_b·cols_bᵀ in float32 sums of exact products, added into the batch's float32 sum
                    utteranceGradient.resize(to: outChannels * patch)
                    BF16GEMM.forward(x: dyb, w: cols.pointer, bias: nil, y: utteranceGradient.pointer, rows: outChannels,
                                     inFeatures: n, outFeatures: patch, workspace: workspace)
                    Kernels.add(utteranceGradient.pointer, into: weightGradient, count: outChannels * patch)
                } else {
                    precision?.round(cols.pointer, count: patch * n)
                    BLAS.sgemm(transposeA: false, transposeB: true, m: outChannels, n: patch, k: n,
                               a: dyb, lda: n, b: cols.pointer, ldb: n, beta: 1, c: weightGradient, ldc: patch)
                }
            }
            if accumulate, hasBias { for o in 0..<outChannels { biasGradient[o] += Self.sum(dyb + o * n, count: n) } }
            if let dx, let ws = inputGradientWorkspace {
                let offset = b * inChannels * height * width
                BLAS.ownProduct(transposeA: true, transposeB: false, m: patch, n: n, k: outChannels) {
                    f32_conv_input_gradient(transposedWeight.pointer, dyb, outChannels, inChannels, height, width, kernel,
                                            stride, outH, outW, reluMask.map { $0 + offset }, dx + offset,
                                            Int32(VectorPath.current.ck.rawValue), ws)
                }
            } else if let dx {
                if native {
                    BF16GEMM.inputGradient(dy: transposedWeight.pointer, w: dyb, dx: cols.pointer, rows: patch,
                                           inFeatures: n, outFeatures: outChannels, workspace: workspace)
                } else {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: patch, n: n, k: outChannels,
                               a: weight, lda: patch, b: dyb, ldb: n, beta: 0, c: cols.pointer, ldc: n)
                }
                let offset = b * inChannels * height * width
                fold(into: dx + offset, reluMask: reluMask.map { $0 + offset }, height: height, width: width, outH: outH, outW: outW)
            }
        }
        if let amp = precision {
            if accumulate {
                amp.accumulateRounded(weightGradient, into: g + weightOffset, count: outChannels * patch)
                if hasBias { amp.accumulateRounded(biasGradient, into: g + biasOffset, count: outChannels) }
            }
            if let dx { amp.round(dx, count: batch * inChannels * height * width) }
        }
    }
}
