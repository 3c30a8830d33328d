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
            let bytes = max(64, bf16_linear_workspace_bytes(m, k, n))
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
