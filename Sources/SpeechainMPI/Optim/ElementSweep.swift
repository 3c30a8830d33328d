/// Runs an optimizer's element-wise update over one segment in SIMD16 chunks: the parameter, its gradient and up
/// to three state tensors are loaded as vectors, updated by `body`, and stored back. The tail is padded into full
/// vectors, so every element goes through the same arithmetic (results do not depend on the position).
@inline(__always)
func sweep(
    count n: Int,
    _ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
    _ s0: UnsafeMutablePointer<Float>?, _ s1: UnsafeMutablePointer<Float>?, _ s2: UnsafeMutablePointer<Float>?,
    _ body: (inout SIMD16<Float>, SIMD16<Float>, inout SIMD16<Float>, inout SIMD16<Float>, inout SIMD16<Float>) -> Void
) {
    typealias V = SIMD16<Float>
    var i = 0
    var a = V(), b = V(), c = V()
    while i + 16 <= n {
        var pv = Kernels.load(p + i)
        if let s0 { a = Kernels.load(s0 + i) }
        if let s1 { b = Kernels.load(s1 + i) }
        if let s2 { c = Kernels.load(s2 + i) }
        body(&pv, Kernels.load(g + i), &a, &b, &c)
        Kernels.store(pv, p + i)
        if let s0 { Kernels.store(a, s0 + i) }
        if let s1 { Kernels.store(b, s1 + i) }
        if let s2 { Kernels.store(c, s2 + i) }
        i += 16
    }
    let rest = n - i
    guard rest > 0 else { return }
    var pv = V(), gv = V()
    a = V(); b = V(); c = V()
    for j in 0..<rest {
        pv[j] = p[i + j]; gv[j] = g[i + j]
        if let s0 { a[j] = s0[i + j] }
        if let s1 { b[j] = s1[i + j] }
        if let s2 { c[j] = s2[i + j] }
    }
    body(&pv, gv, &a, &b, &c)
    for j in 0..<rest {
        p[i + j] = pv[j]
        if let s0 { s0[i + j] = a[j] }
        if let s1 { s1[i + j] = b[j] }
        if let s2 { s2[i + j] = c[j] }
    }
}
