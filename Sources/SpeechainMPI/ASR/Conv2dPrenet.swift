/// SpeeChain's `prenet.conv2d.Conv2dPrenet` (kernel 3, stride 2, padding 0 by default):
///
///     [B, T, F] → [B, 1, T, F] → per entry c of conv_dims: Conv2d(prev → c, no bias when conv_batchnorm),
///     BatchNorm2d(c) if conv_batchnorm, the activation → [B, C, T′, F′] → [B, T′, C·F′] (channel-major per frame)
///     → LinearPrenet: Linear(C·F′ → lnr_dims[0]), [activation], Linear(… → lnr_dims[1]), …
///     lengths: len ← ⌊(len − k)/s⌋ + 1 per conv
///
/// State-dict names: `conv.<i>.weight` (and `.bias`, or the BatchNorm's at the next index), `linear.linear.<j>.weight`.
/// As in torch, the convolutions and BatchNorm run over the whole padded tensor. Under autocast p every tensor from
/// the first convolution on is p-valued, and so is every gradient (docs/amp-arasr.md): BatchNorm and the activations
/// compute in float32 and round their outputs and input gradients.
public final class Conv2dPrenet {
    struct Stage {
        let conv: Conv2d
        let norm: BatchNorm2d?
        let activation: Layer?
        /// A ReLU runs in place on the output it follows (the convolution's, inside it, or the BatchNorm's), and its
        /// backward rides on the fold of the convolution above (or, for the last stage, runs in place).
        var inPlaceReLU: Bool { activation is ReLU }
        var height = 0, width = 0   // input plane of this stage
        let convOut = FloatBuffer(count: 0), normOut = FloatBuffer(count: 0), actOut = FloatBuffer(count: 0)
        let dOut = FloatBuffer(count: 0), dIn = FloatBuffer(count: 0)
    }

    public let featDim: Int
    public let outputSize: Int
    public let kernel: Int
    public let stride: Int
    private var stages: [Stage]
    private var linears: [Linear] = []
    private var linearActivations: [Layer?] = []
    private let flat = FloatBuffer(count: 0)          // [B, T′, C·F′]
    private var linearOuts: [FloatBuffer] = []         // per linear: its output (and its activation's)
    private var linearActs: [FloatBuffer] = []
    private let dA = FloatBuffer(count: 0), dB = FloatBuffer(count: 0)
    private var batch = 0, frames = 0
    private var input: UnsafePointer<Float>?
    private var precision: ReducedPrecision?

    /// The BatchNorm layers in order (stored: a computed list would allocate in every forward).
    public let norms: [BatchNorm2d]

    public init(featDim: Int, convDims: [Int], kernel: Int = 3, stride: Int = 2, batchNorm: Bool,
                activation: () throws -> Layer?, lnrDims: [Int], lnrActivation: () throws -> Layer?) throws {
        self.featDim = featDim; self.kernel = kernel; self.stride = stride
        var prev = 1, width = featDim
        stages = []
        for c in convDims {
            let conv = Conv2d(prev, c, kernel: kernel, stride: stride, bias: !batchNorm)
            stages.append(Stage(conv: conv, norm: batchNorm ? BatchNorm2d(c) : nil, activation: try activation()))
            width = conv.outputSize(width)
            prev = c
        }
        var size = prev * width
        for d in lnrDims {
            linears.append(Linear(size, d))
            linearActivations.append(try lnrActivation())
            linearOuts.append(FloatBuffer(count: 0)); linearActs.append(FloatBuffer(count: 0))
            size = d
        }
        outputSize = size
        norms = stages.compactMap(\.norm)
        guard width >= 1 else {
            throw ConfigError.invalidValue(context: "enc_prenet", key: "conv_dims",
                reason: "\(convDims.count) convolutions of kernel \(kernel) and stride \(stride) leave no feature bins of \(featDim)")
        }
    }

    /// Frames the convolutions need at least: SpeeChain's min_height.
    public var minFrames: Int { stages.reduce(1) { n, _ in (n - 1) * stride + kernel } }

    public func outputLength(_ length: Int) -> Int {
        stages.reduce(length) { n, _ in n < kernel ? 0 : (n - kernel) / stride + 1 }
    }

    public func declareParameters(in store: ParameterStore, prefix: String, module: String) {
        var index = 0
        for s in stages {
            s.conv.declareParameters(in: store, prefix: "\(prefix)conv.\(index).", module: module); index += 1
            if let n = s.norm { n.declareParameters(in: store, prefix: "\(prefix)conv.\(index).", module: module); index += 1 }
            if s.activation != nil { index += 1 }
        }
        index = 0
        for (l, a) in zip(linears, linearActivations) {
            l.declareParameters(in: store, prefix: "\(prefix)linear.linear.\(index).", module: module)
            index += a == nil ? 1 : 2
        }
    }

    public func initialize(in store: ParameterStore, rng: inout Xoshiro256) {
        for s in stages { s.conv.initialize(in: store, rng: &rng); s.norm?.initialize(in: store, rng: &rng) }
        for l in linears { l.initialize(in: store, rng: &rng) }
    }

    /// Output frames for `frames` input frames.
    public func outputFrames(_ frames: Int) -> Int { outputLength(frames) }

    /// feat [B, T, F] → output [B, T′, outputSize] (returned; valid until the next forward).
    public func forward(_ feat: UnsafePointer<Float>, batch: Int, frames: Int, context: ForwardContext) throws -> UnsafeMutablePointer<Float> {
        self.batch = batch; self.frames = frames; input = feat
        let amp = context.amp
        precision = amp
        var x = feat, h = frames, w = featDim
        for i in stages.indices {
            stages[i].height = h; stages[i].width = w
            let s = stages[i]
            let oh = s.conv.outputSize(h), ow = s.conv.outputSize(w), n = batch * s.conv.outChannels * oh * ow
            s.convOut.resize(to: n)
            s.conv.forward(x, s.convOut.pointer, batch: batch, height: h, width: w, amp: amp,
                           relu: s.inPlaceReLU && s.norm == nil)
            var y = UnsafeMutablePointer(s.convOut.pointer)
            if let norm = s.norm {
                s.normOut.resize(to: n)
                try norm.forward(y, s.normOut.pointer, batch: batch, plane: oh * ow, training: context.training)
                amp?.round(s.normOut.pointer, count: n)
                y = s.normOut.pointer
                if s.inPlaceReLU { Kernels.relu(y, y, count: n) }   // relu of a p value is one
            }
            if let a = s.activation, !s.inPlaceReLU {
                s.actOut.resize(to: n)
                a.forward(Matrix(y, rows: 1, cols: n), Matrix(s.actOut.pointer, rows: 1, cols: n), context: context)
                amp?.round(s.actOut.pointer, count: n)
                y = s.actOut.pointer
            }
            x = UnsafePointer(y); h = oh; w = ow
        }
        // [B, C, T′, F′] → [B, T′, C·F′]
        let c = stages.last!.conv.outChannels
        flat.resize(to: batch * h * c * w)
        for b in 0..<batch { for ch in 0..<c { for t in 0..<h {
            (flat.pointer + (b * h + t) * c * w + ch * w).update(from: x + ((b * c + ch) * h + t) * w, count: w)
        } } }
        var z = flat.pointer, width = c * w
        let rows = batch * h
        for j in linears.indices {
            let l = linears[j]
            linearOuts[j].resize(to: rows * l.outFeatures)
            l.forward(Matrix(z, rows: rows, cols: width), Matrix(linearOuts[j].pointer, rows: rows, cols: l.outFeatures), context: context)
            amp?.round(linearOuts[j].pointer, count: rows * l.outFeatures)
            z = linearOuts[j].pointer
            if let a = linearActivations[j] {
                linearActs[j].resize(to: rows * l.outFeatures)
                a.forward(Matrix(z, rows: rows, cols: l.outFeatures), Matrix(linearActs[j].pointer, rows: rows, cols: l.outFeatures), context: context)
                amp?.round(linearActs[j].pointer, count: rows * l.outFeatures)
                z = linearActs[j].pointer
            }
            width = l.outFeatures
        }
        return z
    }

    /// dOutput [B, T′, outputSize] → parameter gradients (no input gradient: the features are not trained).
    public func backward(_ dOutput: UnsafePointer<Float>, accumulate: Bool) throws {
        let h = outputLength(frames), c = stages.last!.conv.outChannels, w = stages.last!.conv.outputSize(stages.last!.width)
        let rows = batch * h
        var maxWidth = c * w
        for l in linears { maxWidth = max(maxWidth, l.inFeatures, l.outFeatures) }
        dA.resize(to: rows * maxWidth); dB.resize(to: rows * maxWidth)
        var dy = dA.pointer, spare = dB.pointer
        dy.update(from: dOutput, count: rows * outputSize)
        for j in linears.indices.reversed() {
            let l = linears[j]
            let out = Matrix(linearOuts[j].pointer, rows: rows, cols: l.outFeatures)
            if let a = linearActivations[j] {
                a.backward(x: out, y: Matrix(linearActs[j].pointer, rows: rows, cols: l.outFeatures),
                           dy: Matrix(dy, rows: rows, cols: l.outFeatures), dx: Matrix(dy, rows: rows, cols: l.outFeatures), accumulate: accumulate)
                precision?.round(dy, count: rows * l.outFeatures)
            }
            let xin = j == 0 ? flat.pointer : (linearActivations[j - 1] == nil ? linearOuts[j - 1].pointer : linearActs[j - 1].pointer)
            l.backward(x: Matrix(xin, rows: rows, cols: l.inFeatures), y: out, dy: Matrix(dy, rows: rows, cols: l.outFeatures),
                       dx: Matrix(spare, rows: rows, cols: l.inFeatures), accumulate: accumulate)
            swap(&dy, &spare)
        }
        // dy holds d flat [B, T′, C·F′]: back to [B, C, T′, F′]
        let dFlat = UnsafePointer(dy)
        var last = stages.count - 1
        let top = stages[last]
        top.dOut.resize(to: batch * c * h * w)
        for b in 0..<batch { for ch in 0..<c { for t in 0..<h {
            (top.dOut.pointer + ((b * c + ch) * h + t) * w).update(from: dFlat + (b * h + t) * c * w + ch * w, count: w)
        } } }
        while last >= 0 {
            let s = stages[last]
            let oh = s.conv.outputSize(s.height), ow = s.conv.outputSize(s.width), n = batch * s.conv.outChannels * oh * ow
            var d = s.dOut.pointer
            if s.inPlaceReLU {
                // below the last stage the fold of the convolution above already applied the ReLU's mask
                if last == stages.count - 1 {
                    Kernels.reluBackward(y: stageOutput(last), dy: d, dx: d, count: n)
                    precision?.round(d, count: n)
                }
            } else if let a = s.activation {
                let pre = s.norm == nil ? s.convOut.pointer : s.normOut.pointer
                a.backward(x: Matrix(pre, rows: 1, cols: n), y: Matrix(s.actOut.pointer, rows: 1, cols: n),
                           dy: Matrix(d, rows: 1, cols: n), dx: Matrix(d, rows: 1, cols: n), accumulate: accumulate)
                precision?.round(d, count: n)
            }
            if let norm = s.norm {
                s.dIn.resize(to: n)
                try norm.backward(x: s.convOut.pointer, dy: d, dx: s.dIn.pointer, batch: batch, plane: oh * ow, accumulate: accumulate)
                precision?.round(s.dIn.pointer, count: n)
                d = s.dIn.pointer
            }
            let x = last == 0 ? input! : UnsafePointer(stageOutput(last - 1))
            var dx: UnsafeMutablePointer<Float>? = nil, reluMask: UnsafePointer<Float>? = nil
            if last > 0 {
                let below = stages[last - 1]
                below.dOut.resize(to: batch * s.conv.inChannels * s.height * s.width)
                dx = below.dOut.pointer
                if below.inPlaceReLU { reluMask = x }
            }
            s.conv.backward(x: x, dy: d, dx: dx, reluMask: reluMask, batch: batch, height: s.height, width: s.width,
                            accumulate: accumulate)
            last -= 1
        }
    }

    private func stageOutput(_ i: Int) -> UnsafeMutablePointer<Float> {
        let s = stages[i]
        return s.activation != nil && !s.inPlaceReLU ? s.actOut.pointer : s.norm != nil ? s.normOut.pointer : s.convOut.pointer
    }

}
