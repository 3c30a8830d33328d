/// torch.nn.Dropout: in training, each value is zeroed with probability p and the rest scaled by 1/(1−p);
/// the mask is kept for backward. In evaluation it is the identity.
public final class Dropout: Layer {
    public let p: Float
    private var mask = FloatBuffer(count: 0)
    private var active = false

    public init(p: Float) { self.p = p }
    public var description: String { "Dropout(p=\(p), inplace=False)" }
    public func outputWidth(forInput width: Int) -> Int { width }

    public func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext) {
        active = context.training && p > 0
        guard active else { y.data.update(from: x.data, count: x.count); return }
        mask.resize(to: x.count)
        let keep = 1 / (1 - p)
        for i in 0..<x.count { mask[i] = context.rng.nextUnitFloat() < p ? 0 : keep }
        Kernels.multiply(x.data, mask.pointer, into: y.data, count: x.count)
    }

    public func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool) {
        guard let dx else { return }
        if active { Kernels.multiply(dy.data, mask.pointer, into: dx.data, count: x.count) }
        else { dx.data.update(from: dy.data, count: x.count) }
    }
}
