/// Vectorised element-wise kernels over contiguous Float32 memory: SIMD16 bodies with scalar tails.
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

    /// out += column sums of a [rows, cols] matrix (the bias gradient).
    public static func accumulateColumnSums(_ m: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<rows { add(m + r * cols, into: out, count: cols) }
    }

    /// y = max(x, 0)
    public static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let zero = V(repeating: 0)
        while i + width <= count { store(pointwiseMax(load(x + i), zero), y + i); i += width }
        while i < count { y[i] = max(x[i], 0); i += 1 }
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

    /// Σ x²
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var acc = SIMD8<Double>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            acc += v * v
            i += 8
        }
        var s = acc.sum()
        while i < count { let v = Double(x[i]); s += v * v; i += 1 }
        return s
    }

    /// Σ |x|
    public static func sumOfMagnitudes(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var acc = SIMD8<Double>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            acc += v.replacing(with: -v, where: v .< 0)
            i += 8
        }
        var s = acc.sum()
        while i < count { s += Double(abs(x[i])); i += 1 }
        return s
    }

    /// max |x|; NaN anywhere gives NaN (as torch's inf-norm does).
    public static func maxMagnitude(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var m: Float = 0
        for i in 0..<count {
            let a = abs(x[i])
            if a.isNaN { return .nan }
            if a > m { m = a }
        }
        return m
    }

    /// Σ |x|^p for a general p > 0.
    public static func sumOfPowers(_ x: UnsafePointer<Float>, count: Int, p: Double) -> Double {
        var s = 0.0
        for i in 0..<count { s += Foundation.pow(Double(abs(x[i])), p) }
        return s
    }

    /// x *= a in one pass that also tells whether every result is finite (GradScaler's unscale and inf check).
    public static func scaleCheckingFinite(_ x: UnsafeMutablePointer<Float>, count: Int, by a: Float) -> Bool {
        var i = 0
        let va = V(repeating: a), zero = V(repeating: 0)
        var bad = SIMDMask<SIMD16<Int32>>(repeating: false)
        while i + width <= count {
            let v = load(x + i) * va
            store(v, x + i)
            bad .|= (v * zero) .!= zero
            i += width
        }
        var finite = !any(bad)
        while i < count { x[i] *= a; if !x[i].isFinite { finite = false }; i += 1 }
        return finite
    }

    /// true when every value is finite.
    public static func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
        // x * 0 is 0 for finite x and NaN for ±inf/NaN; one vector compare per 16 values.
        var i = 0
        let zero = V(repeating: 0)
        var bad = SIMDMask<SIMD16<Int32>>(repeating: false)
        while i + width <= count { bad .|= (load(x + i) * zero) .!= zero; i += width }
        if any(bad) { return false }
        while i < count { if !x[i].isFinite { return false }; i += 1 }
        return true
    }
}

import Foundation
