import Foundation

/// y = tanh(x); dx = dy·(1 − y²).
public final class Tanh: Layer {
    public init() {}
    public var description: String { "Tanh()" }
    public func outputWidth(forInput width: Int) -> Int { width }
    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        for i in 0..<x.count { y.data[i] = tanhf(x.data[i]) }
    }
    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        for i in 0..<x.count { let t = y.data[i]; dx.data[i] = dy.data[i] * (1 - t * t) }
    }
}
