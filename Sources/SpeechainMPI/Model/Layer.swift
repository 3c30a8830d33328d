/// A row-major [rows, cols] view of Float32 memory owned elsewhere.
public struct Matrix {
    public var data: UnsafeMutablePointer<Float>
    public var rows: Int
    public var cols: Int
    public init(_ data: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        self.data = data; self.rows = rows; self.cols = cols
    }
    public var count: Int { rows * cols }
}

/// State a forward pass needs beyond its input: training or evaluation, the generator dropout draws from, and the
/// autocast precision (`amp`: nil runs in float32; float16/bfloat16 emulate torch.autocast with that dtype, and the
/// backward of that forward rounds its gradients in the same places).
public final class ForwardContext {
    public var training: Bool
    public var rng: Xoshiro256
    public var amp: ReducedPrecision?
    /// The epoch being trained (SpeeChain passes it to the model: feature normalisation freezes after max_epoch_num).
    public var epoch: Int?
    /// Adds doubles over all ranks in place (statistics of the global batch: normalize, SyncBatchNorm); nil alone.
    public var reduce: ((UnsafeMutablePointer<Double>, Int) throws -> Void)?
    public init(training: Bool = true, rng: Xoshiro256 = Xoshiro256(seed: 0), amp: ReducedPrecision? = nil, epoch: Int? = nil,
                reduce: ((UnsafeMutablePointer<Double>, Int) throws -> Void)? = nil) {
        self.training = training; self.rng = rng; self.amp = amp; self.epoch = epoch; self.reduce = reduce
    }
}

/// A layer maps [rows, inWidth] to [rows, outWidth] row by row. Backward gets the forward's input and output
/// and the gradient of the output; it writes the input gradient when asked (`dx` non-nil) and adds parameter
/// gradients into the store's gradient buffer when `accumulate` is true.
public protocol Layer: AnyObject {
    /// The name PyTorch's repr gives it, e.g. `Linear(in_features=16, out_features=32, bias=True)`.
    var description: String { get }
    func outputWidth(forInput width: Int) -> Int
    /// Declares this layer's parameters under `prefix` (e.g. `encoder.0.`).
    func declareParameters(in store: ParameterStore, prefix: String, module: String)
    func initialize(in store: ParameterStore, rng: inout Xoshiro256)
    func forward(_ x: Matrix, _ y: Matrix, context: ForwardContext)
    func backward(x: Matrix, y: Matrix, dy: Matrix, dx: Matrix?, accumulate: Bool)
    /// Under autocast with `autocast`, the dtype of this layer's output given its input's (nil = float32), as
    /// torch.autocast decides it: ops on autocast's lower-precision list (matrix products) produce `autocast`, ops on
    /// its float32 list (layer norm) produce float32, every other op keeps its input's dtype (the default).
    /// The container rounds the output and the input gradient to these dtypes; a layer rounds only what is internal
    /// to it (Linear: the casts of its input, weight and bias, and the gradients of those casts).
    func outputPrecision(input: ReducedPrecision?, autocast: ReducedPrecision) -> ReducedPrecision?
}

extension Layer {
    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {}
    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {}
    public func outputPrecision(input: ReducedPrecision?, autocast: ReducedPrecision) -> ReducedPrecision? { input }
}
