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
            let t = DispatchTime.now().uptimeNanoseconds
            cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                        blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
            profile.seconds += Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
            profile.flops += 2 * Double(m) * Double(n) * Double(k)
            profile.calls += 1
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// What the benchmarks read: time and FLOPs inside sgemm while `isOn` (the calling thread's products only;
    /// set and read from the thread that trains).
    public struct Profile: Sendable {
        public var isOn = false
        public var seconds = 0.0
        public var flops = 0.0
        public var calls = 0
        public init(isOn: Bool = false) { self.isOn = isOn }
    }
    nonisolated(unsafe) public static var profile = Profile()

    /// OpenBLAS's own thread count; one per rank when ranks fill the cores.
    public static func setThreadCount(_ n: Int) { openblas_set_num_threads(Int32(n)) }
    public static var threadCount: Int { Int(openblas_get_num_threads()) }
}
