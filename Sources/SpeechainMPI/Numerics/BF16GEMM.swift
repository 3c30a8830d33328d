import CKernels
import Foundation

/// How a Linear layer multiplies under bfloat16 autocast.
///
/// - `native`: bfloat16 operands multiplied by the CPU (AVX512_BF16 `vdpbf16ps`), products exact, sums in float32;
/// - `emulated`: the operands rounded to bfloat16 but kept in float32 storage, multiplied by float32 sgemm.
///
/// Both compute Σ bf16(a)·bf16(b) in float32 — a bfloat16 product is exact in float32 — and differ only in the order
/// of the float32 additions, so |native − emulated| ≤ c·n·ε·Σ|a·b| over a sum of n products (ε = 2⁻²⁴). The native
/// instruction also treats bfloat16 subnormals (|v| < 2⁻¹²⁶) as zero, as the flush-to-zero compute threads do anyway.
public enum BFloat16Products: String, Sendable, CaseIterable, CustomStringConvertible {
    case native
    case emulated
    public var description: String { rawValue }
}

/// The native bfloat16 products of a Linear layer (`Sources/CKernels/bf16_gemm.c`), chosen at run time from CPUID:
///
///     forward    y  = bf16(x)·bf16(W)ᵀ (+ b)                 x [M, K], W [N, K], y [M, N]
///     dx         dx = bf16(dy)·bf16(W)                       (the caller rounds dx)
///     dW         g += bf16(bf16(dy)ᵀ·bf16(x))                the reduced gradient added into the float32 buffer
///
/// Every product of two bfloat16 values is exact in float32 and every sum is a float32 addition, as in the emulation.
public enum BF16GEMM {
    /// Whether this CPU and OS run the native kernels (AVX-512 F/BW/VL with AVX512_BF16, ZMM state enabled).
    public static var isSupported: Bool { bf16_gemm_supported() != 0 }

    /// What a new Linear uses: `native` when supported, unless the environment variable
    /// `SPEECHAIN_BF16_PRODUCTS=emulated` asks for the emulation (read once, at first use).
    public static let defaultProducts: BFloat16Products = {
        let asked = ProcessInfo.processInfo.environment["SPEECHAIN_BF16_PRODUCTS"].flatMap(BFloat16Products.init(rawValue:))
        return isSupported && asked != .emulated ? .native : .emulated
    }()

    /// What runs when `products` is asked for: the native kernels need a CPU that has them.
    public static func effective(_ products: BFloat16Products) -> BFloat16Products {
        products == .native && isSupported ? .native : .emulated
    }

    /// A description for reports: "native (AVX512_BF16)" or why the emulation runs.
    public static var kernelName: String { isSupported ? "native (AVX512_BF16)" : "emulated (this CPU lacks AVX512_BF16)" }

    /// Scratch memory of the kernels (packed operands), 64-byte aligned; it only grows, so a step reusing it never
    /// allocates. One per layer: kernels running on several threads must not share one.
    public final class Workspace {
        private(set) var pointer: UnsafeMutableRawPointer?
        private var capacity = 0
        public init() {}
        deinit { pointer?.deallocate() }

        func reserve(rows m: Int, inFeatures k: Int, outFeatures n: Int) -> UnsafeMutableRawPointer {
            reserve(bytes: bf16_linear_workspace_bytes(m, k, n))
        }

        func reserve(bytes asked: Int) -> UnsafeMutableRawPointer {
            let bytes = max(64, asked)
            if bytes > capacity {
                pointer?.deallocate()
                pointer = .allocate(byteCount: bytes, alignment: 64)
                capacity = bytes
            }
            return pointer!
        }
    }

    /// y[m, n] = Σ_k bf16(x[m, k])·bf16(w[n, k]) + bias[n] (float32 sums; bias as given, may be nil).
    public static func forward(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               y: UnsafeMutablePointer<Float>, rows m: Int, inFeatures k: Int, outFeatures n: Int,
                               workspace: Workspace) {
        precondition(isSupported)
        guard m > 0, n > 0 else { return }
        bf16_linear_forward(x, w, bias, y, m, k, n, workspace.reserve(rows: m, inFeatures: k, outFeatures: n))
    }

    /// dx[m, k] = Σ_n bf16(dy[m, n])·bf16(w[n, k]) (float32 sums, not rounded).
    public static func inputGradient(dy: UnsafePointer<Float>, w: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                     rows m: Int, inFeatures k: Int, outFeatures n: Int, workspace: Workspace) {
        precondition(isSupported)
        guard m > 0, k > 0 else { return }
        bf16_linear_input_gradient(dy, w, dx, m, k, n, workspace.reserve(rows: m, inFeatures: k, outFeatures: n))
    }

    /// g[n, k] += bf16(Σ_m bf16(dy[m, n])·bf16(x[m, k])).
    public static func accumulateWeightGradient(dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                                into g: UnsafeMutablePointer<Float>, rows m: Int, inFeatures k: Int,
                                                outFeatures n: Int, workspace: Workspace) {
        precondition(isSupported)
        guard n > 0, k > 0 else { return }
        bf16_linear_accumulate_weight_gradient(dy, x, g, m, k, n, workspace.reserve(rows: m, inFeatures: k, outFeatures: n))
    }

    /// Whether all `count` values are bfloat16 values already, so that the native kernels' rounding leaves them as
    /// they are.
    public static func allRepresentable(_ x: UnsafePointer<Float>, count: Int) -> Bool {
        bf16_all_representable(x, count) != 0
    }
}

/// Which kernels multiply five float32 products: Linear's forward and weight gradient for batches of
/// `minRows`…`maxRows` rows, and Conv2d's forward, weight gradient and input gradient for patches of at least
/// `minConvPatch` values.
///
/// - `own`: `f32_linear_forward`, `f32_linear_weight_gradient`, `f32_conv_forward`, `f32_conv_weight_gradient` and
///   `f32_conv_input_gradient` (`Sources/CKernels/bf16_gemm.c`): W read in place (Linear) or packed once per call
///   (Conv2d); Linear's weight gradient sums the squares of what it writes for the clipping norm
///   (GradientNormTally); the convolution's forward and weight gradient broadcast the patch values straight from x
///   (no unfolded copy, no panel of it), its input gradient folds Wᵀ·dy a few channels at a time while in cache.
///   AVX-512F only.
/// - `openblas`: sgemm (Linear as yᵀ = W·xᵀ then a transpose that adds the bias, `Linear.transposedForwardMaxRows`;
///   dW += dyᵀ·x; Conv2d as im2col then W·cols, dW += dy·colsᵀ and dcols = Wᵀ·dy then col2im).
///
/// OpenBLAS packs all of W on every call, which for 64 rows costs about a fifth of the product. Measured on an AMD
/// EPYC family 25 model 17 (Zen 4), one thread, W cold in memory as in a training step (2026-12-07,
/// `scripts/bench/small_batch_forward.c`): 64 rows × 2048 → 2048 at 107–110 GFLOP/s against OpenBLAS's 81–86 (its
/// Haswell kernels), 512 → 2048 at 110 against 100, 16 rows × 2048 → 2048 at 91 against 47 (each a median of 21
/// alternated calls; bench/small-batch-forward-20261207-zen4). Both compute the same sums of the same float32
/// products, in another order; each of our sums runs over k in order, so a row's outputs do not depend on the batch.
public enum Float32Kernels: String, Sendable, CaseIterable, CustomStringConvertible {
    case own
    case openblas
    public var description: String { rawValue }

    /// The batches the choice applies to. Larger ones use sgemm as y = x·Wᵀ; below 16 rows (less than one vector of
    /// the panel) OpenBLAS was as fast or faster (8 rows × 512 → 2048: 65 against 56 GFLOP/s), and stays.
    public static let minRows = 16
    public static let maxRows = Linear.transposedForwardMaxRows
    /// Conv2d uses `own` from this many values per patch (Cin·k·k). The ASR prenet's second convolution (256·9),
    /// AMD EPYC family 25 model 17 (Zen 4), 16 utterances with x cold in memory, medians of 7 (2026-12-07,
    /// scripts/bench/conv_products.c): forward 245 against 300 ms for im2col + sgemm, weight gradient 244 against 298,
    /// input gradient with its fold 264 against 299 for sgemm + col2im; the forward and weight gradient of the panel
    /// kernels before them took 263 and 258 ms (bench/conv-roles-swapped-20261207-zen4). Its first convolution (1·9
    /// values per patch, outputs 28× its products) ran at 0.85 against 0.56 ms per utterance with our kernel, and
    /// keeps OpenBLAS.
    public static let minConvPatch = 64

    /// Whether this CPU and OS run `own` (AVX-512F with the ZMM state enabled).
    public static var isSupported: Bool { f32_linear_supported() != 0 }

    /// Where `own` is the default: CPUs on which it was measured faster — AMD family 25 with AVX-512 (Zen 4). The
    /// Intel Xeons have not been measured yet and keep OpenBLAS (`SPEECHAIN_FLOAT32_KERNELS=own` tries it).
    public static func preferred(cpu: BLASKernels.CPUIdentity?, supported: Bool) -> Float32Kernels {
        supported && cpu?.vendor == "AuthenticAMD" && cpu?.family == 25 ? .own : .openblas
    }

    /// What a new Linear or Conv2d uses: `preferred` for this machine, unless the environment variable
    /// `SPEECHAIN_FLOAT32_KERNELS=own|openblas` says otherwise (read once; `own` only where supported).
    public static let selected: Float32Kernels = {
        let asked = ProcessInfo.processInfo.environment["SPEECHAIN_FLOAT32_KERNELS"].flatMap(Float32Kernels.init(rawValue:))
        return effective(asked ?? preferred(cpu: BLASKernels.cpuIdentity(), supported: isSupported))
    }()

    /// What runs when `kernel` is asked for: `own` needs AVX-512F.
    public static func effective(_ kernel: Float32Kernels) -> Float32Kernels {
        kernel == .own && isSupported ? .own : .openblas
    }

    /// For reports: "own AVX-512 kernels" or "OpenBLAS".
    public static var selectedName: String { selected == .own ? "own AVX-512 kernels" : "OpenBLAS" }

    /// For start lines and reports: "float32 Linear forward and weight gradient (16–256 rows), Conv2d forward and
    /// weight gradient: own AVX-512 kernels".
    public static var selectedLine: String {
        "float32 Linear forward and weight gradient (\(minRows)–\(maxRows) rows), Conv2d forward, weight and input gradient: \(selectedName)"
    }

    /// y[m, n] = Σ_k x[m, k]·w[n, k] + bias[n] with `own` (precondition: supported).
    public static func forward(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               y: UnsafeMutablePointer<Float>, rows m: Int, inFeatures k: Int, outFeatures n: Int,
                               workspace: BF16GEMM.Workspace) {
        precondition(isSupported)
        guard m > 0, n > 0 else { return }
        if k == 0 {   // an empty sum: y = bias (or 0)
            for r in 0..<m { for c in 0..<n { y[r * n + c] = bias?[c] ?? 0 } }
            return
        }
        f32_linear_forward(x, w, bias, y, m, k, n, workspace.reserve(bytes: f32_linear_forward_workspace_bytes(m, k, n)))
    }

    /// g[n, k] += Σ_m dy[m, n]·x[m, k] with `own` (precondition: supported). With `sumOfSquares` it also returns
    /// Σ g² over the whole new g, summed as each tile of g leaves the registers (see GradientNormTally). Linear uses
    /// it for batches of `minRows`…`maxRows` rows in the backward before an update only: the product alone is 1–6%
    /// slower than OpenBLAS's sgemm on the benchmark MLP's shapes (64 × 2048 → 2048: 98–101 against 99–104 GFLOP/s;
    /// 16 rows 70–76 against 74–85), but the norm's pass over g it saves costs more (a 16 MB g: ~0.5 ms).
    /// Measured on an AMD EPYC family 25 model 17, one thread, g cold (`scripts/bench/weight_gradient.c`,
    /// bench/weight-gradient-20261207-zen4).
    @discardableResult
    public static func weightGradient(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>,
                                      rows m: Int, inFeatures k: Int, outFeatures n: Int, workspace: BF16GEMM.Workspace,
                                      sumOfSquares: Bool) -> Double? {
        precondition(isSupported)
        guard n > 0, k > 0 else { return sumOfSquares ? 0 : nil }
        if m == 0 { return sumOfSquares ? Kernels.sumOfSquares(g, count: n * k) : nil }   // g unchanged
        let space = workspace.reserve(bytes: f32_linear_weight_gradient_workspace_bytes(m, k, n))
        guard sumOfSquares else { f32_linear_weight_gradient(dy, x, g, m, k, n, space, nil); return nil }
        var sum = 0.0
        f32_linear_weight_gradient(dy, x, g, m, k, n, space, &sum)
        return sum
    }
}
