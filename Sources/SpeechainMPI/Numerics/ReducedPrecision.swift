import CKernels

/// A reduced floating-point format that autocast computes in (SpeeChain's `amp_dtype`), emulated on float32
/// storage: a value "in float16" is a Float32 that float16 represents exactly. Rounding is IEEE round to nearest,
/// ties to even — binary16: 10 fraction bits, subnormals down to 2^-24, |x| ≥ 65520 → ±inf; bfloat16: the upper 16
/// bits of a float32 (7 fraction bits, float32's exponent range) — and NaN stays NaN (quiet, sign kept).
///
/// The buffer kernels run in C (`CKernels`) on the vector path of `VectorPath.current`: vcvtps2ph/vcvtph2ps and
/// integer rounding on 16 lanes (AVX-512), F16C and AVX2 integer rounding (avx2), a portable loop (baseline); all
/// three give the same bits, so the binary needs no target-CPU flag and still runs on older x86-64 CPUs.
public enum ReducedPrecision: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// IEEE binary16, torch.float16 (torch.cuda.amp's default).
    case float16
    /// bfloat16, torch.bfloat16.
    case bfloat16

    public var description: String { rawValue }

    /// Which implementation runs a kernel: the one of `VectorPath.current`, or one explicitly (for tests and
    /// benchmarks; `.avx512` only where `VectorPath.avx512.isSupported`, `.simd` only where `simdSupported`).
    public enum Kernel: Sendable, CustomStringConvertible {
        case dispatched, avx512, simd, portable

        /// The kernels of a vector path.
        public init(_ path: VectorPath) {
            switch path {
            case .avx512: self = .avx512
            case .avx2: self = .simd
            case .baseline: self = .portable
            }
        }

        /// The vector path that runs it.
        public var path: VectorPath {
            switch self {
            case .dispatched: return .current
            case .avx512: return .avx512
            case .simd: return .avx2
            case .portable: return .baseline
            }
        }

        /// "avx512", "f16c+avx2" or "portable" (`.dispatched`: the one it resolves to now).
        public var description: String {
            switch path {
            case .avx512: return "avx512"
            case .avx2: return "f16c+avx2"
            case .baseline: return "portable"
            }
        }
    }

    /// Rounds `count` values in place.
    @inline(__always)
    public func round(_ x: UnsafeMutablePointer<Float>, count: Int, kernel: Kernel = .dispatched) {
        round(UnsafePointer(x), into: x, count: count, kernel: kernel)
    }

    /// dst = round(src); the buffers are the same or do not overlap.
    @inline(__always)
    public func round(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int,
                      kernel: Kernel = .dispatched) {
        guard count > 0 else { return }
        let path = kernel.path
        precondition(path.isSupported, "\(kernel) kernels need a CPU that runs the \(path) path")
        switch self {
        case .float16: ck_round_f16(path.ck, src, dst, count)
        case .bfloat16: ck_round_bf16(path.ck, src, dst, count)
        }
    }

    /// dst += round(src): a reduced-precision gradient added into its float32 accumulation buffer
    /// (autograd's cast back to the float32 master weight, then AccumulateGrad). The buffers do not overlap.
    @inline(__always)
    public func accumulateRounded(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int,
                                  kernel: Kernel = .dispatched) {
        guard count > 0 else { return }
        let path = kernel.path
        precondition(path.isSupported, "\(kernel) kernels need a CPU that runs the \(path) path")
        switch self {
        case .float16: ck_accumulate_rounded_f16(path.ck, src, dst, count)
        case .bfloat16: ck_accumulate_rounded_bf16(path.ck, src, dst, count)
        }
    }

    /// One value rounded (the buffer kernel on a single element).
    public func round(_ x: Float, kernel: Kernel = .dispatched) -> Float {
        var v = x
        withUnsafeMutablePointer(to: &v) { round($0, count: 1, kernel: kernel) }
        return v
    }

    /// The kernels `.dispatched` runs now: "avx512", "f16c+avx2" or "portable".
    public static var kernelName: String { Kernel.dispatched.description }

    /// Whether this CPU (and OS) runs the F16C/AVX2 kernels (the avx2 vector path).
    public static var simdSupported: Bool { VectorPath.avx2.isSupported }
}
