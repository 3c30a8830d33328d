/// y = max(x, 0); dy passes where y > 0.
public final class ReLU: Layer {
    public init() {}
    public var description: String { "ReLU()" }
    public func outputWidth(forInput width: Int) -> Int { width }
    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        Kernels.relu(x.data, y.data, count: x.count)
    }
    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        Kernels.reluBackward(y: y.data, dy: dy.data, dx: dx.data, count: x.count)
    }
}
