import CKernels

/// A reduced floating-point format that autocast computes in (SpeeChain's `amp_dtype`), emulated on float32
/// storage: a value "in float16" is a Float32 that float16 represents exactly. Rounding is IEEE round to nearest,
/// ties to even — binary16: 10 fraction bits, subnormals down to 2^-24, |x| ≥ 65520 → ±inf; bfloat16: the upper 16
/// bits of a float32 (7 fraction bits, float32's exponent range) — and NaN stays NaN (quiet, sign kept).
///
/// The buffer kernels run in C (`CKernels`): vcvtps2ph/vcvtph2ps (F16C) and AVX2 integer rounding when CPUID says
/// the CPU has them, a portable loop otherwise; the choice is made at run time, so the binary needs no target-CPU
/// flag and still runs on older x86-64 CPUs.
public enum ReducedPrecision: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// IEEE binary16, torch.float16 (torch.cuda.amp's default).
    case float16
    /// bfloat16, torch.bfloat16.
    case bfloat16

    public var description: String { rawValue }

    /// Which implementation runs a kernel: the one chosen for this CPU, or one of the two explicitly
    /// (`.simd` only where `simdSupported`); the explicit ones are for tests and benchmarks.
    public enum Kernel: Sendable { case dispatched, simd, portable }

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
        switch (self, kernel) {
        case (.float16, .dispatched): ck_round_f16(src, dst, count)
        case (.float16, .simd): precondition(Self.simdSupported); ck_round_f16_simd(src, dst, count)
        case (.float16, .portable): ck_round_f16_portable(src, dst, count)
        case (.bfloat16, .dispatched): ck_round_bf16(src, dst, count)
        case (.bfloat16, .simd): precondition(Self.simdSupported); ck_round_bf16_simd(src, dst, count)
        case (.bfloat16, .portable): ck_round_bf16_portable(src, dst, count)
        }
    }

    /// dst += round(src): a reduced-precision gradient added into its float32 accumulation buffer
    /// (autograd's cast back to the float32 master weight, then AccumulateGrad). The buffers do not overlap.
    @inline(__always)
    public func accumulateRounded(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int,
                                  kernel: Kernel = .dispatched) {
        guard count > 0 else { return }
        switch (self, kernel) {
        case (.float16, .dispatched): ck_accumulate_rounded_f16(src, dst, count)
        case (.float16, .simd): precondition(Self.simdSupported); ck_accumulate_rounded_f16_simd(src, dst, count)
        case (.float16, .portable): ck_accumulate_rounded_f16_portable(src, dst, count)
        case (.bfloat16, .dispatched): ck_accumulate_rounded_bf16(src, dst, count)
        case (.bfloat16, .simd): precondition(Self.simdSupported); ck_accumulate_rounded_bf16_simd(src, dst, count)
        case (.bfloat16, .portable): ck_accumulate_rounded_bf16_portable(src, dst, count)
        }
    }

    /// One value rounded (the buffer kernel on a single element).
    public func round(_ x: Float, kernel: Kernel = .dispatched) -> Float {
        var v = x
        withUnsafeMutablePointer(to: &v) { round($0, count: 1, kernel: kernel) }
        return v
    }

    /// The kernels `.dispatched` runs on this machine: "f16c+avx2" or "portable".
    public static var kernelName: String { String(cString: ck_kernel_name()) }

    /// Whether this CPU (and OS) runs the F16C/AVX2 kernels.
    public static var simdSupported: Bool { ck_simd_supported() != 0 }
}
