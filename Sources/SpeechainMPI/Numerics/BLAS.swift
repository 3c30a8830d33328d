import Foundation
import COpenBLAS

/// Row-major single-precision GEMM through OpenBLAS: C = alpha·op(A)·op(B) + beta·C,
/// op(A) of shape [m, k], op(B) of shape [k, n], C of shape [m, n].
public enum BLAS {
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if profile.isOn {
            measured(GemmShape(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k)) {
                cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
            }
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// One of our own products (`Float32Kernels`), recorded in `profile` as sgemm's are, under its shape marked own.
    @inline(__always)
    public static func ownProduct(transposeA: Bool = false, transposeB: Bool, m: Int, n: Int, k: Int, _ body: () -> Void) {
        guard profile.isOn else { body(); return }
        measured(GemmShape(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, own: true), body)
    }

    private static func measured(_ shape: GemmShape, _ body: () -> Void) {
        let t = DispatchTime.now().uptimeNanoseconds
        body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        let flops = 2 * Double(shape.m) * Double(shape.n) * Double(shape.k)
        profile.seconds += seconds
        profile.flops += flops
        profile.calls += 1
        if profile.shapes != nil { profile.shapes![shape, default: .init()].add(seconds: seconds, flops: flops) }
    }

    /// What the benchmarks read: time and FLOPs inside the products (sgemm and our own kernels) while `isOn` (the
    /// calling thread's products only; set and read from the thread that trains).
    public struct Profile: Sendable {
        public var isOn = false
        public var seconds = 0.0
        public var flops = 0.0
        public var calls = 0
        /// The same per product shape, when not nil (set it to [:] to record): which products run below the peak.
        public var shapes: [GemmShape: Totals]?
        public init(isOn: Bool = false) { self.isOn = isOn }
        /// Turns recording on from zero totals, keeping the table by shape (its keys, so no insertion allocates).
        public mutating func start() { isOn = true; seconds = 0; flops = 0; calls = 0 }
    }

    /// One product's shape as called: op(A) [m, k] · op(B) [k, n]; `own` for our own kernels (`Float32Kernels`).
    public struct GemmShape: Hashable, Sendable, CustomStringConvertible {
        public var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int
        public var own = false
        public var description: String {
            "\(m)×\(n)×\(k) \(transposeA ? "T" : "N")\(transposeB ? "T" : "N")" + (own ? " (own kernel)" : "")
        }
    }

    /// Time, FLOPs and calls summed.
    public struct Totals: Sendable {
        public var seconds = 0.0, flops = 0.0, calls = 0
        public init() {}
        mutating func add(seconds s: Double, flops f: Double) { seconds += s; flops += f; calls += 1 }
    }
    nonisolated(unsafe) public static var profile = Profile()

    /// OpenBLAS's own thread count; one per rank when ranks fill the cores.
    public static func setThreadCount(_ n: Int) { openblas_set_num_threads(Int32(n)) }
    public static var threadCount: Int { Int(openblas_get_num_threads()) }
}
