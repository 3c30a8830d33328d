import Foundation

/// torch.nn.GELU. Exact: y = x·Φ(x) = ½x(1 + erf(x/√2)), y' = Φ(x) + x·φ(x).
/// Tanh approximation (`approximate='tanh'`): y = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³),
/// y' = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²).
public final class GELU: Layer {
    public enum Approximation: String, Sendable { case none, tanh }
    public let approximation: Approximation
    public init(approximate: Approximation = .none) { approximation = approximate }
    public var description: String { approximation == .none ? "GELU(approximate='none')" : "GELU(approximate='tanh')" }
    public func outputWidth(forInput width: Int) -> Int { width }

    private static let k0: Float = (2 / Float.pi).squareRoot()
    private static let k1: Float = 0.044715
    private static let invSqrt2: Float = 1 / Float(2).squareRoot()
    private static let invSqrt2Pi: Float = 1 / (2 * Float.pi).squareRoot()

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        let n = x.count, xs = x.data, ys = y.data
        switch approximation {
        case .none:
            for i in 0..<n { let v = xs[i]; ys[i] = 0.5 * v * (1 + erff(v * Self.invSqrt2)) }
        case .tanh:
            for i in 0..<n { let v = xs[i]; ys[i] = 0.5 * v * (1 + tanhf(Self.k0 * (v + Self.k1 * v * v * v))) }
        }
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        let n = x.count, xs = x.data, g = dy.data, out = dx.data
        switch approximation {
        case .none:
            for i in 0..<n {
                let v = xs[i]
                let cdf = 0.5 * (1 + erff(v * Self.invSqrt2))
                let pdf = Self.invSqrt2Pi * expf(-0.5 * v * v)
                out[i] = g[i] * (cdf + v * pdf)
            }
        case .tanh:
            for i in 0..<n {
                let v = xs[i]
                let t = tanhf(Self.k0 * (v + Self.k1 * v * v * v))
                out[i] = g[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * Self.k0 * (1 + 3 * Self.k1 * v * v))
            }
        }
    }
}
