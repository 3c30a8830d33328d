/// torch.nn.LeakyReLU: y = x for x ≥ 0 (torch: x > 0), a·x otherwise (a = 0.01); dx = dy where x > 0, a·dy otherwise.
public final class LeakyReLU: Layer {
    public let slope: Float
    public init(slope: Float = 0.01) { self.slope = slope }
    public var description: String { "LeakyReLU(negative_slope=\(slope))" }
    public func outputWidth(forInput width: Int) -> Int { width }

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        Self.forward(x.data, y.data, count: x.count, slope: slope)
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        Self.backward(x: x.data, dy: dy.data, dx: dx.data, count: x.count, slope: slope)
    }

    static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int, slope: Float) {
        for i in 0..<count { let v = x[i]; y[i] = v > 0 ? v : v * slope }
    }

    static func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int, slope: Float) {
        for i in 0..<count { dx[i] = x[i] > 0 ? dy[i] : dy[i] * slope }
    }
}
