import CKernels
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

    // Both run in C (CKernels ck_gelu_forward/backward) on the CPU's vector path: the float32 operations below in
    // this order. The exact form's erf and exp are float32 evaluations (erf within 2.6 ulp, `Kernels.erfFloat`; exp
    // ≲ 2 ulp), a whole register at a time: 2.6–2.9× faster than evaluating them in double and rounding once, which
    // is what the tanh form still does (tanh within 0.5 ulp + 1e-10 relative). In 1 + erf the erf's error stays
    // below the rounding of the sum except where the sum cancels (x ≲ −2), as it does for any float32 erf.
    //   forward:  y = (0.5·x)·(1 + erf(x·(1/√2)))            y = (0.5·x)·(1 + tanh(k0·(x + ((k1·x)·x)·x)))
    //   backward: dx = g·(0.5·(1 + erf(x/√2)) + x·(φ₀·exp((−0.5·x)·x)))
    //             dx = g·(0.5·(1 + t) + (((0.5·x)·(1 − t·t))·k0)·(1 + ((3k1)·x)·x))

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        ck_gelu_forward(VectorPath.current.ck, approximation == .tanh ? 1 : 0, x.data, y.data, x.count, Self.k0, Self.k1,
                        Self.invSqrt2)
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        ck_gelu_backward(VectorPath.current.ck, approximation == .tanh ? 1 : 0, x.data, dy.data, dx.data, x.count, Self.k0,
                         Self.k1, Self.invSqrt2, Self.invSqrt2Pi)
    }
}
