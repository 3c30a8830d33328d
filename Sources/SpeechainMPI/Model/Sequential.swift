/// A first-level module made of layers applied in order (torch.nn.Sequential): parameters are named
/// `<module>.<index>.<name>`, activations live in buffers sized once per batch shape and reused.
/// Under autocast it keeps each activation's dtype (`Layer.outputPrecision`) and rounds every activation, and in
/// backward every activation gradient, to its tensor's dtype, as autograd holds them.
public final class Sequential {
    public let name: String
    public let layers: [Layer]
    public let inputWidth: Int
    public let widths: [Int]          // widths[i] = output width of layer i
    private var outputs: [FloatBuffer]
    private var gradA = FloatBuffer(count: 0), gradB = FloatBuffer(count: 0)
    private var input: Matrix?
    private var rows = 0
    /// dtypes of the last forward's input and of each layer's output (nil = float32).
    public private(set) var inputPrecision: ReducedPrecision?
    private var precisions: [ReducedPrecision?]

    public init(name: String, inputWidth: Int, layers: [Layer]) {
        self.name = name
        self.layers = layers
        self.inputWidth = inputWidth
        var w = inputWidth
        var ws: [Int] = []
        for l in layers { w = l.outputWidth(forInput: w); ws.append(w) }
        widths = ws
        outputs = layers.map { _ in FloatBuffer(count: 0) }
        precisions = layers.map { _ in nil }
    }

    /// The dtype of the last forward's output (nil = float32).
    public var outputPrecision: ReducedPrecision? { precisions.last ?? inputPrecision }

    public var outputWidth: Int { widths.last ?? inputWidth }

    public func declareParameters(in store: ParameterStore) {
        for (i, l) in layers.enumerated() { l.declareParameters(in: store, prefix: "\(name).\(i).", module: name) }
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        for l in layers { l.initialize(in: store, rng: &rng) }
    }

    private func width(before i: Int) -> Int { i == 0 ? inputWidth : widths[i - 1] }

    /// Runs every layer; `x` (of dtype `inputPrecision` under autocast) must stay valid until `backward`
    /// (the model owns it).
    public func forward(_ x: Matrix, context: ForwardContext, inputPrecision: ReducedPrecision? = nil) -> Matrix {
        precondition(x.cols == inputWidth)
        input = x
        rows = x.rows
        self.inputPrecision = context.amp == nil ? nil : inputPrecision
        var current = x
        var dtype = self.inputPrecision
        for (i, l) in layers.enumerated() {
            outputs[i].resize(to: rows * widths[i])
            let y = Matrix(outputs[i].pointer, rows: rows, cols: widths[i])
            l.forward(current, y, context: context)
            dtype = context.amp.flatMap { l.outputPrecision(input: dtype, autocast: $0) }
            dtype?.round(y.data, count: y.count)
            precisions[i] = dtype
            current = y
        }
        return current
    }

    /// Back-propagates `dy` (the gradient of the output); returns the input gradient when asked for.
    public func backward(_ dy: Matrix, needInputGradient: Bool, accumulate: Bool) -> Matrix? {
        guard let input else { preconditionFailure("backward before forward") }
        let maxWidth = max(inputWidth, widths.max() ?? 0)
        gradA.resize(to: rows * maxWidth); gradB.resize(to: rows * maxWidth)
        var g = dy
        var useA = true
        for i in stride(from: layers.count - 1, through: 0, by: -1) {
            let x = i == 0 ? input : Matrix(outputs[i - 1].pointer, rows: rows, cols: widths[i - 1])
            let y = Matrix(outputs[i].pointer, rows: rows, cols: widths[i])
            let wantDx = i > 0 || needInputGradient
            let dx = wantDx ? Matrix((useA ? gradA : gradB).pointer, rows: rows, cols: width(before: i)) : nil
            layers[i].backward(x: x, y: y, dy: g, dx: dx, accumulate: accumulate)
            if let dx {
                // the gradient of a tensor has the tensor's dtype
                (i == 0 ? inputPrecision : precisions[i - 1])?.round(dx.data, count: dx.count)
                g = dx; useA.toggle()
            }
        }
        return needInputGradient ? g : nil
    }

    public var description: String {
        var lines = ["Sequential("]
        for (i, l) in layers.enumerated() { lines.append("  (\(i)): \(l.description)") }
        lines.append(")")
        return lines.joined(separator: "\n")
    }
}
