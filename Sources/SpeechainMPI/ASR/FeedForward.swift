/// SpeeChain's `transformer.feed_forward.PositionwiseFeedForward` (fdfwd_type 'linear'):
/// y = out_layer(dropout(activation(in_layer(x)))), in_layer d → fdfwd_dim, out_layer fdfwd_dim → d.
/// Under autocast p every tensor after in_layer is p-valued, and so is every gradient up to in_layer's input
/// gradient (docs/amp-arasr.md); dOutput must then be p-valued.
public final class FeedForward {
    let inLayer: Linear, outLayer: Linear
    let activation: Layer
    let dropout: Dropout
    private let hidden = FloatBuffer(count: 0), activated = FloatBuffer(count: 0), dropped = FloatBuffer(count: 0)
    let output = FloatBuffer(count: 0)
    private let dHidden = FloatBuffer(count: 0)
    private var rows = 0
    private var input: UnsafePointer<Float>?
    private var precision: ReducedPrecision?

    public init(dModel: Int, hiddenSize: Int, activation: Layer, dropout: Float) {
        inLayer = Linear(dModel, hiddenSize); outLayer = Linear(hiddenSize, dModel)
        self.activation = activation; self.dropout = Dropout(p: dropout)
    }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        inLayer.declareParameters(in: store, prefix: prefix + "in_layer.", module: module)
        outLayer.declareParameters(in: store, prefix: prefix + "out_layer.", module: module)
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        inLayer.initialize(in: store, rng: &rng); outLayer.initialize(in: store, rng: &rng)
    }

    /// x [rows, d] → `output` [rows, d].
    public func forward(_ x: UnsafePointer<Float>, rows: Int, context: ForwardContext) {
        self.rows = rows; input = x
        let amp = context.amp
        precision = amp
        let f = inLayer.outFeatures, d = inLayer.inFeatures
        hidden.resize(to: rows * f); activated.resize(to: rows * f); dropped.resize(to: rows * f); output.resize(to: rows * d)
        inLayer.forward(Matrix(UnsafeMutablePointer(mutating: x), rows: rows, cols: d), Matrix(hidden.pointer, rows: rows, cols: f), context: context)
        amp?.round(hidden.pointer, count: rows * f)
        activation.forward(Matrix(hidden.pointer, rows: rows, cols: f), Matrix(activated.pointer, rows: rows, cols: f), context: context)
        amp?.round(activated.pointer, count: rows * f)
        dropout.forward(Matrix(activated.pointer, rows: rows, cols: f), Matrix(dropped.pointer, rows: rows, cols: f), context: context)
        amp?.round(dropped.pointer, count: rows * f)
        outLayer.forward(Matrix(dropped.pointer, rows: rows, cols: f), Matrix(output.pointer, rows: rows, cols: d), context: context)
        amp?.round(output.pointer, count: rows * d)
    }

    /// dOutput [rows, d] → dx [rows, d] (overwritten).
    public func backward(_ dOutput: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let f = inLayer.outFeatures, d = inLayer.inFeatures
        dHidden.resize(to: rows * f)
        let dh = Matrix(dHidden.pointer, rows: rows, cols: f)
        outLayer.backward(x: Matrix(dropped.pointer, rows: rows, cols: f), y: Matrix(output.pointer, rows: rows, cols: d),
                          dy: Matrix(UnsafeMutablePointer(mutating: dOutput), rows: rows, cols: d), dx: dh, accumulate: accumulate)
        dropout.backward(x: Matrix(activated.pointer, rows: rows, cols: f), y: Matrix(dropped.pointer, rows: rows, cols: f), dy: dh, dx: dh, accumulate: accumulate)
        precision?.round(dh.data, count: dh.count)
        activation.backward(x: Matrix(hidden.pointer, rows: rows, cols: f), y: Matrix(activated.pointer, rows: rows, cols: f), dy: dh, dx: dh, accumulate: accumulate)
        precision?.round(dh.data, count: dh.count)
        inLayer.backward(x: Matrix(UnsafeMutablePointer(mutating: input!), rows: rows, cols: d), y: Matrix(hidden.pointer, rows: rows, cols: f),
                         dy: dh, dx: Matrix(dx, rows: rows, cols: d), accumulate: accumulate)
    }
}
