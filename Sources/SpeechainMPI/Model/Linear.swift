/// y = x·Wᵀ + b with W of shape [out, in] (torch.nn.Linear); both products and gradients go through sgemm:
/// dW += dyᵀ·x, db += Σ_rows dy, dx = dy·W.
///
/// Under autocast (`context.amp` = p) it computes as torch's half/bfloat16 addmm does on a GPU: x, W and b are cast
/// to p, the products accumulate in float32 (exact products of p-values, float32 sums, as tensor cores do), and the
/// gradients of those casts are p-values: dW_p = p(dyᵀ·x_p) and db_p = p(Σ_rows dy) are added into the float32
/// gradient buffer (the cast back to the float32 master weight, then accumulation), dx = p(dy·W_p). The output's
/// own rounding to p belongs to the container (see `Layer.outputPrecision`). W_p is formed block by block, about
/// 1 MiB at a time, right before the sgemm that reads it, so that emulation adds no pass over the weights in memory;
/// the same holds for dW_p, rounded and accumulated while its block is still in cache.
///
/// Under bfloat16 on a CPU with AVX512_BF16 (`bfloat16Products` = `.native`, the default there) the three products
/// run in `BF16GEMM` instead: the same sums of exact bfloat16 products in float32, added in another order, with no
/// block of W_p formed (the kernels round as they pack). dy must then be a bfloat16 tensor, as autocast's
/// gradient of a bfloat16 output is (the containers round it); a dy that is not falls back to the emulation.
public final class Linear: Layer {
    public let inFeatures: Int
    public let outFeatures: Int
    public let hasBias: Bool
    private var store: ParameterStore!   // strong: a layer keeps the buffers it reads and writes alive
    private var weightOffset = 0
    private var biasOffset = 0
    // autocast state of the last forward and its workspaces (grown once, reused)
    private var precision: ReducedPrecision?
    private let roundedInput = FloatBuffer(count: 0)
    private let block = FloatBuffer(count: 0)
    private let roundedBias = FloatBuffer(count: 0)
    private let transposedOutput = FloatBuffer(count: 0)
    private let workspace = BF16GEMM.Workspace()
    /// Whether the last forward and backward ran the native bfloat16 products (a backward does when its forward did
    /// and dy is a bfloat16 tensor); tests read it to know which path ran.
    internal private(set) var ranNative = (forward: false, backward: false)

    /// How the products run under bfloat16 autocast; `.native` runs only where `BF16GEMM.isSupported` (the
    /// emulation otherwise). float16 is always emulated.
    public var bfloat16Products = BF16GEMM.defaultProducts

    /// Which kernel multiplies a float32 forward of `Float32Kernels.minRows`…`maxRows` rows (see `Float32Kernels`).
    public var float32Kernels = Float32Kernels.selected

    /// Floats per block of W_p / dW_p under autocast: 1 MiB, cache-resident, yet large enough that each sgemm
    /// call (which packs the whole activation matrix again) still does most of its work on the weights.
    public static let defaultAutocastBlockFloats = 1 << 18
    public var autocastBlockFloats = Linear.defaultAutocastBlockFloats

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.hasBias = bias
    }

    public var description: String { "Linear(in_features=\(inFeatures), out_features=\(outFeatures), bias=\(hasBias ? "True" : "False"))" }

    public func outputWidth(forInput width: Int) -> Int { outFeatures }

    /// Matrix products are on autocast's lower-precision list.
    public func outputPrecision(input: ReducedPrecision?, autocast: ReducedPrecision) -> ReducedPrecision? { autocast }

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

    /// Batches of at most this many rows multiply in float32 as yᵀ = W·xᵀ (then a transpose, which adds the bias):
    /// OpenBLAS packs the operand it sees transposed, and packing all of W for a few rows costs more than the
    /// product saves. Measured with OpenBLAS 0.3.21's Cooperlake kernels on an AMD EPYC family 25 model 17, one
    /// thread (`scripts/bench/linear_orientation.c`): 64 rows × 2048 → 2048 at 69–71 GFLOP/s as y = x·Wᵀ and 90 as
    /// yᵀ = W·xᵀ, 2048 → 512 at 71 and 89–94, 128 rows 84 and 95, 256 rows 94 and 100; at 1200 rows either way wins
    /// by the shape. The same products either way, summed in OpenBLAS's own blocking (so the last bits of y may
    /// differ between the two orientations; each batch size always takes the same one).
    public static let transposedForwardMaxRows = 256

    /// Output rows of W per block under autocast.
    private var blockRows: Int { max(1, min(outFeatures, autocastBlockFloats / max(inFeatures, 1))) }

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        let w = store.values.pointer
        precision = context.amp
        ranNative = (false, false)
        guard let p = context.amp else {
            if x.rows >= Float32Kernels.minRows, x.rows <= Float32Kernels.maxRows,
               Float32Kernels.effective(float32Kernels) == .own {
                BLAS.ownProduct(transposeB: true, m: x.rows, n: outFeatures, k: inFeatures) {
                    Float32Kernels.forward(x: x.data, w: w + weightOffset, bias: hasBias ? UnsafePointer(w + biasOffset) : nil,
                                           y: y.data, rows: x.rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                           workspace: workspace)
                }
                return
            }
            if x.rows > 0, x.rows <= Linear.transposedForwardMaxRows {   // (ldc = rows must be ≥ 1)
                // yᵀ = W·xᵀ, then transposed into y with the bias added on the way (see transposedForwardMaxRows)
                transposedOutput.resize(to: x.rows * outFeatures)
                BLAS.sgemm(transposeA: false, transposeB: true, m: outFeatures, n: x.rows, k: inFeatures,
                           a: w + weightOffset, lda: inFeatures, b: x.data, ldb: inFeatures,
                           beta: 0, c: transposedOutput.pointer, ldc: x.rows)
                Kernels.transpose(transposedOutput.pointer, rows: x.rows, cols: outFeatures, into: y.data,
                                  addingBias: hasBias ? UnsafePointer(w + biasOffset) : nil)
                return
            }
            BLAS.sgemm(transposeA: false, transposeB: true, m: x.rows, n: outFeatures, k: inFeatures,
                       a: x.data, lda: inFeatures, b: w + weightOffset, ldb: inFeatures,
                       beta: 0, c: y.data, ldc: outFeatures)
            if hasBias { Kernels.addRowVector(w + biasOffset, to: y.data, rows: x.rows, cols: outFeatures) }
            return
        }
        // x_p is kept for dW_p in backward (the layer's input buffer belongs to the layer before).
        roundedInput.resize(to: x.count)
        p.round(x.data, into: roundedInput.pointer, count: x.count)
        if hasBias {
            roundedBias.resize(to: outFeatures)
            p.round(w + biasOffset, into: roundedBias.pointer, count: outFeatures)
        }
        if p == .bfloat16, BF16GEMM.effective(bfloat16Products) == .native {
            ranNative.forward = true
            BF16GEMM.forward(x: roundedInput.pointer, w: w + weightOffset, bias: hasBias ? UnsafePointer(roundedBias.pointer) : nil,
                             y: y.data, rows: x.rows, inFeatures: inFeatures, outFeatures: outFeatures, workspace: workspace)
            return
        }
        let rows = blockRows
        block.resize(to: rows * inFeatures)
        var o = 0
        while o < outFeatures {
            let n = min(rows, outFeatures - o)
            p.round(w + weightOffset + o * inFeatures, into: block.pointer, count: n * inFeatures)
            BLAS.sgemm(transposeA: false, transposeB: true, m: x.rows, n: n, k: inFeatures,
                       a: roundedInput.pointer, lda: inFeatures, b: block.pointer, ldb: inFeatures,
                       beta: 0, c: y.data + o, ldc: outFeatures)
            o += n
        }
        if hasBias { Kernels.addRowVector(roundedBias.pointer, to: y.data, rows: x.rows, cols: outFeatures) }
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        let w = store.values.pointer, g = store.gradients.pointer
        ranNative.backward = false
        guard let p = precision else {
            if accumulate {
                // In the backward before an update (the tally recording) our kernel computes dW and sums the squares
                // of the new values as it writes them: the clipping norm's share of dW (GradientNormTally), and db's,
                // read right after it was added. Other backwards keep sgemm, a few percent faster on the product alone.
                let tally = store.normTally
                let recorded = tally.recording && x.rows >= Float32Kernels.minRows && x.rows <= Float32Kernels.maxRows
                    && Float32Kernels.effective(float32Kernels) == .own
                if recorded {
                    var sum = 0.0
                    BLAS.ownProduct(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: x.rows) {
                        sum = Float32Kernels.weightGradient(dy: dy.data, x: x.data, g: g + weightOffset, rows: x.rows,
                                                            inFeatures: inFeatures, outFeatures: outFeatures,
                                                            workspace: workspace, sumOfSquares: true) ?? .nan
                    }
                    tally.record(offset: weightOffset, count: outFeatures * inFeatures, sumOfSquares: sum)
                } else {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: x.rows,
                               a: dy.data, lda: outFeatures, b: x.data, ldb: inFeatures,
                               beta: 1, c: g + weightOffset, ldc: inFeatures)
                    tally.forget(offset: weightOffset)
                }
                if hasBias {
                    Kernels.accumulateColumnSums(dy.data, rows: dy.rows, cols: outFeatures, into: g + biasOffset)
                    if recorded {
                        tally.record(offset: biasOffset, count: outFeatures,
                                     sumOfSquares: Kernels.sumOfSquares(g + biasOffset, count: outFeatures))
                    } else {
                        tally.forget(offset: biasOffset)
                    }
                }
            }
            if let dx {
                BLAS.sgemm(transposeA: false, transposeB: false, m: x.rows, n: inFeatures, k: outFeatures,
                           a: dy.data, lda: outFeatures, b: w + weightOffset, ldb: inFeatures,
                           beta: 0, c: dx.data, ldc: inFeatures)
            }
            return
        }
        if accumulate {   // autocast's paths record no Σ g²
            store.normTally.forget(offset: weightOffset)
            if hasBias { store.normTally.forget(offset: biasOffset) }
        }
        if ranNative.forward, BF16GEMM.allRepresentable(dy.data, count: dy.count) {
            ranNative.backward = true
            nativeBackward(p, x: x, dy: dy, dx: dx, accumulate: accumulate)
            return
        }
        let rows = blockRows
        block.resize(to: rows * inFeatures)
        if accumulate {
            var o = 0
            while o < outFeatures {
                let n = min(rows, outFeatures - o)
                BLAS.sgemm(transposeA: true, transposeB: false, m: n, n: inFeatures, k: x.rows,
                           a: dy.data + o, lda: outFeatures, b: roundedInput.pointer, ldb: inFeatures,
                           beta: 0, c: block.pointer, ldc: inFeatures)
                p.accumulateRounded(block.pointer, into: g + weightOffset + o * inFeatures, count: n * inFeatures)
                o += n
            }
            if hasBias { accumulateBiasGradient(p, dy: dy) }
        }
        if let dx {
            var o = 0
            while o < outFeatures {
                let n = min(rows, outFeatures - o)
                p.round(w + weightOffset + o * inFeatures, into: block.pointer, count: n * inFeatures)
                BLAS.sgemm(transposeA: false, transposeB: false, m: x.rows, n: inFeatures, k: n,
                           a: dy.data + o, lda: outFeatures, b: block.pointer, ldb: inFeatures,
                           beta: o == 0 ? 0 : 1, c: dx.data, ldc: inFeatures)
                o += n
            }
            p.round(dx.data, count: dx.count)
        }
    }

    /// db_p = p(Σ_rows dy), added into the float32 buffer.
    private func accumulateBiasGradient(_ p: ReducedPrecision, dy: Matrix) {
        roundedBias.resize(to: outFeatures)
        Kernels.fill(roundedBias.pointer, count: outFeatures, value: 0)
        Kernels.accumulateColumnSums(dy.data, rows: dy.rows, cols: outFeatures, into: roundedBias.pointer)
        p.accumulateRounded(roundedBias.pointer, into: store.gradients.pointer + biasOffset, count: outFeatures)
    }

    /// The backward of the native forward: dW_p = bf16(dyᵀ·x_p) added into the buffer, db as in the emulation,
    /// dx = p(dy·W_p).
    private func nativeBackward(_ p: ReducedPrecision, x: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        let w = store.values.pointer, g = store.gradients.pointer
        if accumulate {
            BF16GEMM.accumulateWeightGradient(dy: dy.data, x: roundedInput.pointer, into: g + weightOffset, rows: x.rows,
                                              inFeatures: inFeatures, outFeatures: outFeatures, workspace: workspace)
            if hasBias { accumulateBiasGradient(p, dy: dy) }
        }
        if let dx {
            BF16GEMM.inputGradient(dy: dy.data, w: w + weightOffset, dx: dx.data, rows: x.rows, inFeatures: inFeatures,
                                   outFeatures: outFeatures, workspace: workspace)
            p.round(dx.data, count: dx.count)
        }
    }
}
