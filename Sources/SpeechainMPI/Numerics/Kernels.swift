import CKernels
import Foundation

/// Vectorised element-wise kernels over contiguous Float32 memory: SIMD16 bodies with scalar tails, and, for the
/// reductions, finite checks and special functions, C kernels dispatched on the CPU's vector path.
/// Reductions accumulate in Double lanes so that a norm over millions of values keeps float32 accuracy.
public enum Kernels {
    public typealias V = SIMD16<Float>
    public static let width = V.scalarCount

    @inline(__always) public static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }
    @inline(__always) public static func load(_ p: UnsafeMutablePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }
    @inline(__always) public static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }

    public static func fill(_ x: UnsafeMutablePointer<Float>, count: Int, value: Float) {
        x.update(repeating: value, count: count)
    }

    /// x *= a
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by a: Float) {
        var i = 0
        let va = V(repeating: a)
        while i + width <= count { store(load(x + i) * va, x + i); i += width }
        while i < count { x[i] *= a; i += 1 }
    }

    /// y += a * x
    public static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let va = V(repeating: a)
        while i + width <= count { store(load(y + i) + va * load(x + i), y + i); i += width }
        while i < count { y[i] += a * x[i]; i += 1 }
    }

    /// y += x
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + width <= count { store(load(y + i) + load(x + i), y + i); i += width }
        while i < count { y[i] += x[i]; i += 1 }
    }

    /// Every row of a [rows, cols] matrix gets `bias` added.
    public static func addRowVector(_ bias: UnsafePointer<Float>, to m: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows { add(bias, into: m + r * cols, count: cols) }
    }

    /// y[r, c] = t[c, r] (+ bias[c]): the [cols, rows] matrix t transposed into the [rows, cols] matrix y, with the
    /// bias added as it is written (the same float addition as `addRowVector` after the product). Blocks of 16
    /// columns: 16 rows of t are read in step while each row of y gets 16 contiguous values.
    public static func transpose(_ t: UnsafePointer<Float>, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>,
                                 addingBias bias: UnsafePointer<Float>?) {
        var c0 = 0
        while c0 < cols {
            let c1 = min(c0 + 16, cols)
            for r in 0..<rows {
                let out = y + r * cols
                if let bias {
                    for c in c0..<c1 { out[c] = t[c * rows + r] + bias[c] }
                } else {
                    for c in c0..<c1 { out[c] = t[c * rows + r] }
                }
            }
            c0 = c1
        }
    }

    /// out += column sums of a [rows, cols] matrix (the bias gradient).
    public static func accumulateColumnSums(_ m: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<rows { add(m + r * cols, into: out, count: cols) }
    }

    /// y = max(x, 0) (NaN stays NaN)
    public static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let zero = V(repeating: 0)
        // a select, not pointwiseMax: Swift lowered pointwiseMax on SIMD16 to a scalar maxss loop through the stack
        // (12% of an ASR training step). Zero where x ≤ 0; a NaN stays NaN, as torch.relu keeps it.
        while i + width <= count { let v = load(x + i); store(v.replacing(with: zero, where: v .<= zero), y + i); i += width }
        while i < count { y[i] = x[i] <= 0 ? 0 : x[i]; i += 1 }
    }

    /// dx = dy where y > 0, else 0 (torch's threshold_backward: the gradient at 0 is 0).
    public static func reluBackward(y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let zero = V(repeating: 0)
        while i + width <= count {
            let g = load(dy + i)
            store(g.replacing(with: zero, where: load(y + i) .<= zero), dx + i)
            i += width
        }
        while i < count { dx[i] = y[i] > 0 ? dy[i] : 0; i += 1 }
    }

    /// z = x * y
    public static func multiply(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, into z: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + width <= count { store(load(x + i) * load(y + i), z + i); i += width }
        while i < count { z[i] = x[i] * y[i]; i += 1 }
    }

    // The reductions and finite checks below run in C (CKernels), on the vector path `path` (default: the task's
    // or the process's, `VectorPath.current`); every path gives the same bits. Sums accumulate in double, element
    // i into partial sum i mod 16, and those 16 are added pairwise.

    /// Σ x²
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int, path: VectorPath = .current) -> Double {
        ck_sum_squares(path.ck, x, count)
    }

    /// Σ |x|
    public static func sumOfMagnitudes(_ x: UnsafePointer<Float>, count: Int, path: VectorPath = .current) -> Double {
        ck_sum_magnitudes(path.ck, x, count)
    }

    /// max |x|; NaN anywhere gives NaN (as torch's inf-norm does).
    public static func maxMagnitude(_ x: UnsafePointer<Float>, count: Int, path: VectorPath = .current) -> Float {
        ck_max_magnitude(path.ck, x, count)
    }

    /// Σ |x|^p for a general p > 0 (each term exp(p·log|x|) in double, within ~1e-15 of pow).
    public static func sumOfPowers(_ x: UnsafePointer<Float>, count: Int, p: Double, path: VectorPath = .current) -> Double {
        ck_sum_powers(path.ck, x, count, p)
    }

    /// x *= a in one pass that also tells whether every result is finite (GradScaler's unscale and inf check).
    public static func scaleCheckingFinite(_ x: UnsafeMutablePointer<Float>, count: Int, by a: Float,
                                           path: VectorPath = .current) -> Bool {
        ck_scale_checking_finite(path.ck, x, count, a) != 0
    }

    /// true when every value is finite.
    public static func allFinite(_ x: UnsafePointer<Float>, count: Int, path: VectorPath = .current) -> Bool {
        ck_all_finite(path.ck, x, count) != 0
    }

    /// y = erf(x), evaluated in double and rounded once (within 0.5 ulp + 1e-10 of the exact value); x may be y.
    public static func erf(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
                           path: VectorPath = .current) {
        ck_erf(path.ck, x, y, count)
    }

    /// y = erf(x) in float32 arithmetic (within 2.6 ulp): the erf of GELU's exact form, 2.6–2.9× faster than the
    /// double evaluation on AVX-512; the same bits on every path; x may be y.
    public static func erfFloat(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
                                path: VectorPath = .current) {
        ck_erf_float(path.ck, x, y, count)
    }

    /// y = eˣ, evaluated in double and rounded once; x may be y.
    public static func exp(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
                           path: VectorPath = .current) {
        ck_exp(path.ck, x, y, count)
    }

    /// y = tanh(x), evaluated in double and rounded once; x may be y.
    public static func tanh(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
                            path: VectorPath = .current) {
        ck_tanh(path.ck, x, y, count)
    }
}
