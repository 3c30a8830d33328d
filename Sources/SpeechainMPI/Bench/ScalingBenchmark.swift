import COpenBLAS
import CKernels
import Foundation

/// The scaling benchmark of `speechain-mpi bench`: the training step of an MLP (default 512→2048→2048→2048→512,
/// GELU, cross-entropy, Adam, batch 64 per rank, synthetic data) timed on every rank, split into compute
/// (forward + backward), waiting for the slowest rank, gradient synchronisation and optimizer, and set beside three
/// references measured in the same run: the cblas_sgemm peak, the memory bandwidth and a raw MPI_Allreduce of the
/// same gradient buffer (timed after every update, so that both medians come from the same minutes).
///
/// FLOPs of one sample (matrix products only; biases, activations and the loss are O(width), not O(width²)):
/// forward Σᵢ 2·inᵢ·outᵢ, backward Σᵢ 2·inᵢ·outᵢ (dW) + Σ_{i>0} 2·inᵢ·outᵢ (dx; the input needs none).
public enum ScalingBenchmark {
    public struct Configuration: Sendable, Codable, Equatable {
        /// Layer widths: input, hidden…, classes; GELU after every hidden layer.
        public var dims = [512, 2048, 2048, 2048, 512]
        /// Rows per rank and micro-step (weak scaling).
        public var batchSize = 64
        /// Strong scaling: rows per micro-step over all ranks (batch per rank = globalBatch / ranks).
        public var globalBatch: Int?
        public var accumGrad = 1
        /// Timed micro-steps (SpeeChain's step_num), after `warmup` untimed ones; both multiples of accum_grad.
        public var steps = 32
        public var warmup = 4
        public var lr = 1e-3
        public var seed: UInt64 = 0
        /// Side of the square cblas_sgemm that measures the peak.
        public var gemmSize = 1024
        /// Elements per MPI_Allreduce in the gradient synchronisation (nil: the communicator's default).
        public var syncChunk: Int?
        /// Sum the gradients in a shared-memory window on each node, then by MPI between nodes (as the trainer does).
        public var sharedMemory = true

        public init() {}

        public func batchPerRank(worldSize: Int) -> Int { globalBatch.map { $0 / worldSize } ?? batchSize }

        /// Everything a user can get wrong, as one line naming the option.
        public func validate(worldSize: Int) throws {
            func bad(_ option: String, _ reason: String) -> BenchmarkError { .invalid(option: option, reason: reason) }
            guard dims.count >= 3 else { throw bad("dims", "needs at least input, one hidden and output width (e.g. 512,2048,512), found \(dims.count) value(s)") }
            guard dims.allSatisfy({ $0 > 0 }) else { throw bad("dims", "widths must be positive, found \(dims.map(String.init).joined(separator: ","))") }
            guard dims.last! >= 2 else { throw bad("dims", "the output (classes) must be at least 2 wide") }
            guard batchSize >= 1 else { throw bad("batch_size", "must be >= 1, found \(batchSize)") }
            if let g = globalBatch {
                guard g >= 1 else { throw bad("global_batch", "must be >= 1, found \(g)") }
                guard g % worldSize == 0 else { throw bad("global_batch", "\(g) rows do not divide evenly over \(worldSize) ranks") }
            }
            guard accumGrad >= 1 else { throw bad("accum_grad", "must be >= 1, found \(accumGrad)") }
            guard steps >= 1 else { throw bad("steps", "must be >= 1, found \(steps)") }
            guard steps % accumGrad == 0 else { throw bad("steps", "\(steps) is not a multiple of --accum_grad \(accumGrad) (whole updates are timed)") }
            guard warmup >= 0 else { throw bad("warmup", "must be >= 0, found \(warmup)") }
            guard warmup % accumGrad == 0 else { throw bad("warmup", "\(warmup) is not a multiple of --accum_grad \(accumGrad)") }
            guard lr > 0, lr.isFinite else { throw bad("lr", "must be a positive number, found \(lr)") }
            guard gemmSize >= 16 else { throw bad("gemm_size", "must be >= 16, found \(gemmSize)") }
            if let c = syncChunk { guard c >= 1 else { throw bad("sync_chunk", "must be >= 1, found \(c)") } }
        }
    }

    /// The workload's size in closed form (what the report's FLOP rates are computed from).
    public enum Workload {
        public static func parameterCount(dims: [Int]) -> Int {
            zip(dims, dims.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
        }
        public static func flopsPerSample(dims: [Int]) -> Double {
            let products = zip(dims, dims.dropFirst()).map { Double(2 * $0 * $1) }
            return products.reduce(0, +) * 2 + products.dropFirst().reduce(0, +)
        }
    }

    public struct AllreducePoint: Codable, Sendable, Equatable {
        public var bytes: Int
        public var ms: Double
    }

    /// What rank 0 reports (bench.json); times in milliseconds, rates per second.
    public struct Report: Codable, Sendable {
        /// Which benchmark wrote it: "mlp" here, "asr" for ASRBenchmark.Report (scripts/bench read both).
        public var workload = "mlp"
        public var date = ""
        public var host = ""
        public var cpu = ""
        public var cores = 0
        public var nodes = 0
        public var worldSize = 1
        public var blasThreads = 1
        /// The BLAS library, version and kernels in use (BLASKernels), and whether denormals are flushed.
        public var blas = ""
        public var flushDenormal = false
        /// The kernels of the float32 Linear forward and weight gradient (16–256 rows) and Conv2d forward, weight and input gradient (`Float32Kernels.selectedLine`).
        public var float32Kernels = ""
        /// How the ranks summed gradients (the trainer's start line says the same).
        public var gradientSum = ""
        public var configuration = Configuration()
        public var batchPerRank = 0
        public var globalBatch = 0
        public var parameters = 0
        public var flopsPerSample = 0.0
        /// Median over updates: samples of all ranks per second.
        public var samplesPerSecond = 0.0
        /// Total samples over the total timed wall time.
        public var samplesPerSecondMean = 0.0
        /// Median time of one micro-step (update time / accum_grad) and of one update.
        public var stepMs = 0.0
        public var updateMs = 0.0
        /// Per update, each the mean over ranks of the rank's median.
        public var forwardMs = 0.0
        public var backwardMs = 0.0
        public var computeMs = 0.0
        public var waitMs = 0.0
        public var syncMs = 0.0
        public var optimizerMs = 0.0
        /// Inside optimizerMs: the clipping norm's pass over the gradients (mean over ranks of the rank's median),
        /// and how many gradient values' squares the backward had summed already (GradientNormTally; all of them on
        /// one rank where Linear's own weight-gradient kernel runs, none where an allreduce comes between).
        public var gradNormMs = 0.0
        public var gradNormRecordedValues = 0
        /// The slowest rank's median of a raw MPI_Allreduce of the whole gradient buffer (one after every timed
        /// update), the synchronisation's slowest-rank median, and their ratio.
        public var rawAllreduceMs = 0.0
        public var syncMsSlowestRank = 0.0
        public var syncOverRaw: Double?
        /// A raw MPI_Allreduce of smaller sizes (slowest rank's best of 10 each) and of the whole gradient (as
        /// rawAllreduceMs), for a latency–bandwidth fit.
        public var allreduceCurve: [AllreducePoint] = []
        public var allreduceCalls = 0
        public var allreduceBytes = 0
        public var mpiCalls = 0
        /// Per rank: the step's FLOPs over the update time, over the compute time only, the square cblas_sgemm peak
        /// (all ranks measuring at once), and the step's own GEMM shapes alone.
        public var achievedGflopsPerRank = 0.0
        public var computeGflopsPerRank = 0.0
        public var sgemmPeakGflopsPerRank = 0.0
        public var sgemmShapesGflopsPerRank = 0.0
        public var fractionOfPeak = 0.0
        /// Adam's floor: the time of one pass with Adam's memory traffic and none of its arithmetic (four
        /// parameter-sized buffers; read θ, g, m, v, write θ, m, v), and the bandwidth that pass reached (7 streams).
        /// One buffer alone can sit in a large L3 (260 MiB on an Intel Xeon family 6 model 207), four rarely do.
        public var memoryGbPerSecond = 0.0
        public var adamFloorMs = 0.0
        public init() {}
    }

    /// Runs the benchmark on every rank of `communicator`; every rank returns the same report.
    public static func run(_ config: Configuration, communicator: Communicator,
                           progress: (String) -> Void = { _ in }) throws -> Report {
        let world = communicator.size
        try config.validate(worldSize: world)
        let batch = config.batchPerRank(worldSize: world)
        guard batch >= 1 else { throw BenchmarkError.invalid(option: "global_batch", reason: "gives less than one row per rank") }
        let mpi = communicator as? MPICommunicator
        if let chunk = config.syncChunk { mpi?.floatChunk = chunk }

        // The model and its OptimScheduler: Adam at a constant lr; grad_clip 0 measures the norm without clipping.
        let dims = config.dims
        let split = (dims.count + 1) / 2
        let model = try MLPClassifier(encoder: .init(dims: Array(dims[0..<split]), activation: "GELU"),
                                      decoder: .init(dims: Array(dims[(split - 1)...]), activation: "GELU"),
                                      seed: config.seed)
        try communicator.broadcast(model.parameters.values.pointer, count: model.parameters.count, root: 0)
        let options = TrainingOptions(accumGrad: config.accumGrad, gradClip: 0)
        let (inner, gradientSum) = try gradientSynchronizer(model.parameters, communicator, sharedMemory: config.sharedMemory)
        let sync = TimedSynchronizer(communicator: communicator, inner: inner)
        let scheduler = try OptimScheduler(
            name: "main", type: "const.ConstantLr",
            conf: ["optim_type": .string("Adam"), "optim_conf": .map(["lr": .double(config.lr)])],
            model: model, options: options, synchronizer: world > 1 ? sync : nil)

        // Synthetic data: one fixed batch per rank (features N(0,1), labels uniform), as the PyTorch baseline.
        var rng = Xoshiro256(seed: config.seed, stream: 0xB0 + UInt64(communicator.rank))
        let classes = dims.last!
        let input = Batch(features: (0..<(batch * dims[0])).map { _ in rng.normal() },
                          labels: (0..<batch).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(classes)) },
                          cols: dims[0])
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let context = ForwardContext(training: true)
        let timer = StepTimer()

        let updates = config.steps / config.accumGrad, warmupUpdates = config.warmup / config.accumGrad
        var cycle = [Double](), forward = [Double](), backward = [Double](), optim = [Double](), wait = [Double](), comm = [Double]()
        var raw = [Double](), norm = [Double]()
        var recordedValues = 0
        var stepNum = 0
        var timedStart: UInt64 = 0
        var callsBefore = 0, bytesBefore = 0, mpiCallsBefore = 0
        progress("bench: \(world) rank(s) × batch \(batch), accum_grad \(config.accumGrad), \(config.warmup) warmup + \(config.steps) timed steps")
        for u in 0..<(warmupUpdates + updates) {
            if u == warmupUpdates {
                try communicator.barrier()
                callsBefore = sync.inner.calls; bytesBefore = sync.inner.bytes; mpiCallsBefore = mpi?.floatAllreduceCalls ?? 0
                timedStart = DispatchTime.now().uptimeNanoseconds
            }
            timer.reset(); sync.resetTimes()
            let t0 = DispatchTime.now().uptimeNanoseconds
            var fwd = 0.0
            for _ in 0..<config.accumGrad {
                stepNum += 1
                let f0 = DispatchTime.now().uptimeNanoseconds
                try model.forward(input, context: context, losses: &losses, metrics: &metrics)
                fwd += seconds(since: f0)
                let report = try scheduler.step(losses: losses, timer: timer, stepNum: stepNum, epochNum: 1)
                if report.isUpdateStep { recordedValues = report.gradNormRecordedValues }
            }
            let total = seconds(since: t0)
            guard u >= warmupUpdates else { continue }
            guard losses.values[0].isFinite else {
                throw BenchmarkError.diverged(rank: communicator.rank, step: stepNum)
            }
            cycle.append(total)
            forward.append(fwd)
            backward.append(timer.total("loss_backward_time"))
            wait.append(sync.waitSeconds)
            comm.append(sync.syncSeconds)
            optim.append(timer.total("optim_time") - sync.waitSeconds - sync.syncSeconds)
            norm.append(timer.total("grad_norm_time"))
            // The reference, paired with every timed update so that both see the same machine: a raw MPI_Allreduce
            // of the same buffer, which the update has just zeroed (a sum of zeros leaves it zero).
            if let mpi, world > 1 {
                try communicator.barrier()
                raw.append(try mpi.rawAllreduceSum(model.parameters.gradients.pointer, count: model.parameters.gradients.count))
            }
        }
        try communicator.barrier()
        let timedWall = seconds(since: timedStart)

        var report = Report()
        report.configuration = config
        report.worldSize = world
        report.batchPerRank = batch
        report.globalBatch = batch * world
        report.parameters = model.parameters.count
        report.flopsPerSample = Workload.flopsPerSample(dims: dims)
        report.blasThreads = BLAS.threadCount
        report.blas = BLASKernels.current().description
        report.float32Kernels = Float32Kernels.selectedLine
        report.gradientSum = gradientSum
        report.flushDenormal = Denormals.flushed
        report.cores = ProcessInfo.processInfo.activeProcessorCount
        report.host = ProcessInfo.processInfo.hostName
        report.cpu = BenchSupport.cpuModel()
        report.date = ISO8601DateFormatter().string(from: Date())
        report.nodes = Set(try communicator.allgather(hostHash())).count
        report.allreduceCalls = sync.inner.calls - callsBefore
        report.allreduceBytes = sync.inner.bytes - bytesBefore
        report.mpiCalls = (mpi?.floatAllreduceCalls ?? 0) - mpiCallsBefore

        // Rank statistics: every rank's median, then the mean (or max) over ranks.
        func mean(_ values: [Double]) throws -> Double { try gatherMedians(values, communicator).reduce(0, +) / Double(world) }
        func slowest(_ values: [Double]) throws -> Double { try gatherMedians(values, communicator).max() ?? 0 }
        let updateSeconds = try slowest(cycle)
        let samplesPerUpdate = Double(batch * world * config.accumGrad)
        report.updateMs = updateSeconds * 1e3
        report.stepMs = report.updateMs / Double(config.accumGrad)
        report.samplesPerSecond = samplesPerUpdate / updateSeconds
        report.samplesPerSecondMean = samplesPerUpdate * Double(updates) / timedWall
        report.forwardMs = try mean(forward) * 1e3
        report.backwardMs = try mean(backward) * 1e3
        report.computeMs = report.forwardMs + report.backwardMs
        report.waitMs = try mean(wait) * 1e3
        report.syncMs = try mean(comm) * 1e3
        report.syncMsSlowestRank = try slowest(comm) * 1e3
        report.optimizerMs = try mean(optim) * 1e3
        report.gradNormMs = try mean(norm) * 1e3
        report.gradNormRecordedValues = recordedValues

        let flopsPerUpdate = report.flopsPerSample * Double(batch * config.accumGrad)
        report.achievedGflopsPerRank = flopsPerUpdate / updateSeconds / 1e9
        report.computeGflopsPerRank = flopsPerUpdate / (report.computeMs * 1e-3) / 1e9

        // References measured now, on every rank at once (as the ranks share the machine during training).
        progress("bench: measuring the sgemm peak, the step's GEMM shapes and the memory bandwidth")
        try communicator.barrier()
        let peak = sgemmRate(m: config.gemmSize, n: config.gemmSize, k: config.gemmSize, repeats: 5)
        report.sgemmPeakGflopsPerRank = try gatherMedians([peak], communicator).reduce(0, +) / Double(world) / 1e9
        try communicator.barrier()
        let shapes = stepShapesRate(dims: dims, batch: batch)
        report.sgemmShapesGflopsPerRank = try gatherMedians([shapes], communicator).reduce(0, +) / Double(world) / 1e9
        report.fractionOfPeak = report.achievedGflopsPerRank / report.sgemmPeakGflopsPerRank
        try communicator.barrier()
        let bandwidth = adamTrafficBandwidth(count: model.parameters.count)
        report.memoryGbPerSecond = try gatherMedians([bandwidth], communicator).reduce(0, +) / Double(world) / 1e9
        report.adamFloorMs = 7 * Double(model.parameters.count * 4) / (report.memoryGbPerSecond * 1e9) * 1e3

        if !raw.isEmpty {
            report.rawAllreduceMs = try slowest(raw) * 1e3
            report.syncOverRaw = report.syncMsSlowestRank / report.rawAllreduceMs
        }
        if let mpi, world > 1 {
            report.allreduceCurve = try allreduceCurve(mpi, communicator, gradients: model.parameters.gradients,
                                                       wholeMs: report.rawAllreduceMs)
        }
        return report
    }

    /// A raw MPI_Allreduce of 256, 4096, 65536 and 2²⁰ floats (those smaller than the gradient; each size every
    /// rank's best of 10 — the machine's cost, without the pauses other processes cause — then the slowest rank),
    /// and the whole gradient as measured during the run (`wholeMs`), for model.py's latency–bandwidth fit.
    static func allreduceCurve(_ mpi: MPICommunicator, _ communicator: Communicator, gradients grads: FloatBuffer,
                               wholeMs: Double) throws -> [AllreducePoint] {
        var curve: [AllreducePoint] = []
        for count in [256, 4096, 65536, 1 << 20] where count < grads.count {
            var best = Double.infinity
            for _ in 0..<10 {
                try communicator.barrier()
                best = min(best, try mpi.rawAllreduceSum(grads.pointer, count: count))
            }
            curve.append(.init(bytes: count * 4, ms: try gatherMedians([best], communicator).max()! * 1e3))
        }
        curve.append(.init(bytes: grads.count * 4, ms: wholeMs))
        return curve
    }

    @inline(__always) static func seconds(since start: UInt64) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
    }

    /// Every rank's median of `values`, in rank order (gathered bit for bit).
    static func gatherMedians(_ values: [Double], _ communicator: Communicator) throws -> [Double] {
        try gather(BenchSupport.median(values), communicator)
    }

    /// Every rank's `value`, in rank order (gathered bit for bit).
    static func gather(_ value: Double, _ communicator: Communicator) throws -> [Double] {
        try communicator.allgather(Int64(bitPattern: value.bitPattern)).map { Double(bitPattern: UInt64(bitPattern: $0)) }
    }

    /// FLOP/s of the best of `repeats` row-major C = A·B (after one untimed call).
    static func sgemmRate(m: Int, n: Int, k: Int, repeats: Int) -> Double {
        let a = FloatBuffer(count: m * k, repeating: 0.5), b = FloatBuffer(count: k * n, repeating: 0.25), c = FloatBuffer(count: m * n)
        var best = Double.infinity
        for i in 0...repeats {
            let t = DispatchTime.now().uptimeNanoseconds
            BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: n,
                       beta: 0, c: c.pointer, ldc: n)
            if i > 0 { best = min(best, seconds(since: t)) }
        }
        return 2 * Double(m * n * k) / best
    }

    /// FLOP/s of the step's own products (Linear forward, dW and dx with the transposes the layers use), best of 3.
    static func stepShapesRate(dims: [Int], batch: Int) -> Double {
        let widest = dims.max()!
        let x = FloatBuffer(count: batch * widest, repeating: 0.5), y = FloatBuffer(count: batch * widest, repeating: 0.25)
        let w = FloatBuffer(count: widest * widest, repeating: 0.125), g = FloatBuffer(count: widest * widest)
        var flops = 0.0, best = Double.infinity
        for pass in 0...3 {
            let t = DispatchTime.now().uptimeNanoseconds
            flops = 0
            for (i, (inW, outW)) in zip(dims, dims.dropFirst()).enumerated() {
                if batch <= Linear.transposedForwardMaxRows {   // the forward as Linear runs it
                    BLAS.sgemm(transposeA: false, transposeB: true, m: outW, n: batch, k: inW, a: w.pointer, lda: inW,
                               b: x.pointer, ldb: inW, beta: 0, c: y.pointer, ldc: batch)
                } else {
                    BLAS.sgemm(transposeA: false, transposeB: true, m: batch, n: outW, k: inW, a: x.pointer, lda: inW,
                               b: w.pointer, ldb: inW, beta: 0, c: y.pointer, ldc: outW)
                }
                BLAS.sgemm(transposeA: true, transposeB: false, m: outW, n: inW, k: batch, a: y.pointer, lda: outW,
                           b: x.pointer, ldb: inW, beta: 1, c: g.pointer, ldc: inW)
                flops += 4 * Double(batch * inW * outW)
                if i > 0 {
                    BLAS.sgemm(transposeA: false, transposeB: false, m: batch, n: inW, k: outW, a: y.pointer, lda: outW,
                               b: w.pointer, ldb: inW, beta: 0, c: x.pointer, ldc: inW)
                    flops += 2 * Double(batch * inW * outW)
                }
            }
            if pass > 0 { best = min(best, seconds(since: t)) }
            Kernels.fill(x.pointer, count: x.count, value: 0.5)   // keep the values bounded between passes
        }
        return flops / best
    }

    /// Bytes per second moved by a pass with Adam's traffic over `count` elements (best of 5): four buffers of their
    /// own (θ, g, m, v), all four read and θ, m, v written, with an add and a multiply per element on the CPU's
    /// vector path (CKernels `ck_adam_traffic`), so that only memory bounds it. The buffers (4 × the parameters'
    /// bytes per rank, 168 MB for the default MLP) live only during the measurement.
    static func adamTrafficBandwidth(count: Int) -> Double {
        let n = count
        guard n > 0 else { return .infinity }
        let p = FloatBuffer(count: n, repeating: 1), g = FloatBuffer(count: n, repeating: 0.25)
        let m = FloatBuffer(count: n, repeating: 0), v = FloatBuffer(count: n, repeating: 0)
        var best = Double.infinity
        for _ in 0..<5 {
            let t = DispatchTime.now().uptimeNanoseconds
            ck_adam_traffic(VectorPath.current.ck, p.pointer, g.pointer, m.pointer, v.pointer, n)
            best = min(best, seconds(since: t))
        }
        precondition(p.pointer[0].isFinite)   // the passes' results are used
        return 7 * Double(n * 4) / best
    }

    static func hostHash() -> Int64 {
        Int64(bitPattern: Array(ProcessInfo.processInfo.hostName.utf8).withUnsafeBytes(FNV1a.hash))
    }
}

/// The benchmarks' gradient sum, chosen as the trainer chooses it (collective): with `sharedMemory` a shared-memory
/// window on each node (SharedGradientWindow says when it cannot), else MPI_Allreduce; and the words for the report.
func gradientSynchronizer(_ store: ParameterStore, _ communicator: Communicator, sharedMemory: Bool) throws
    -> (GradientAllreduce, String) {
    let mpi = GradientAllreduce(communicator: communicator)
    guard communicator.size > 1, let world = communicator as? MPICommunicator else { return (mpi, "") }
    switch try SharedGradientWindow.make(for: store, communicator: world, enabled: sharedMemory) {
    case .success(let window): return (GradientAllreduce(communicator: communicator, window: window), window.description)
    case .failure(let why): return (mpi, "summed by MPI_Allreduce (\(why))")
    }
}

/// Wraps the gradient synchronisation of the benchmark: a barrier first, so that waiting for the slowest rank is
/// timed apart from the synchronisation itself.
final class TimedSynchronizer: GradientSynchronizer {
    let inner: GradientAllreduce
    let communicator: Communicator
    private(set) var waitSeconds = 0.0
    private(set) var syncSeconds = 0.0

    init(communicator: Communicator, inner: GradientAllreduce) {
        self.communicator = communicator
        self.inner = inner
    }

    func resetTimes() { waitSeconds = 0; syncSeconds = 0 }

    var averagingFactor: Float { inner.averagingFactor }

    func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try communicator.barrier()
        let t1 = DispatchTime.now().uptimeNanoseconds
        try inner.synchronize(gradients, ranges: ranges)
        waitSeconds += Double(t1 - t0) * 1e-9
        syncSeconds += Double(DispatchTime.now().uptimeNanoseconds - t1) * 1e-9
    }
}

/// A benchmark that cannot run as asked, one line naming the option.
extension ScalingBenchmark.Report {
    /// The human report rank 0 prints.
    public var text: String {
        func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
        let c = configuration
        let dims = c.dims.map(String.init).joined(separator: "→")
        let mb = Double(parameters * 4) / 1e6
        var lines = [
            "bench: MLP \(dims) (GELU, cross-entropy, Adam), \(parameters) parameters (\(f(mb, 2)) MB), \(f(flopsPerSample / 1e6, 2)) MFLOP per sample",
            "ranks:      \(worldSize) on \(nodes) node(s); \(host): \(cpu), \(cores) cores; \(blasThreads) BLAS thread(s) per rank",
            "blas:       \(blas); denormals \(flushDenormal ? "flushed to zero" : "kept (flush_denormal off)")"
                + (float32Kernels.isEmpty ? "" : "; \(float32Kernels)")
                + (worldSize > 1 ? "; gradients \(gradientSum)" : ""),
            "batch:      \(batchPerRank) per rank (global \(globalBatch)), accum_grad \(c.accumGrad), \(c.steps) timed steps after \(c.warmup) warmup",
            "throughput: \(f(samplesPerSecond)) samples/s (median update; \(f(samplesPerSecondMean)) over the whole timed run)",
            "step:       \(f(stepMs, 2)) ms per step, \(f(updateMs, 2)) ms per update = compute \(f(computeMs, 2)) (forward \(f(forwardMs, 2)) + backward \(f(backwardMs, 2)))"
                + " + wait \(f(waitMs, 2)) + sync \(f(syncMs, 2)) + optimizer \(f(optimizerMs, 2)) + other \(f(updateMs - computeMs - waitMs - syncMs - optimizerMs, 2))",
            "allreduce:  \(allreduceCalls) calls, \(allreduceBytes) bytes (\(mpiCalls) MPI_Iallreduce calls)",
            "compute:    \(f(achievedGflopsPerRank)) GFLOP/s per rank over the step, \(f(computeGflopsPerRank)) over forward+backward; "
                + "sgemm peak \(f(sgemmPeakGflopsPerRank)) (\(c.gemmSize)³), the step's GEMM shapes \(f(sgemmShapesGflopsPerRank)) → step at \(f(fractionOfPeak * 100))% of peak",
            "memory:     \(f(memoryGbPerSecond, 2)) GB/s in a pass with Adam's traffic → Adam's floor \(f(adamFloorMs, 2)) ms per update (optimizer took \(f(optimizerMs, 2)); "
                + "of it the clipping norm's pass \(f(gradNormMs, 2)), Σ g² of \(gradNormRecordedValues) of \(parameters) gradient values summed in the backward)",
        ]
        if let ratio = syncOverRaw {
            lines.append("sync/raw:   \(f(syncMsSlowestRank, 2)) ms vs a raw MPI_Allreduce of the same \(f(mb, 2)) MB \(f(rawAllreduceMs, 2)) ms (slowest rank, medians) → \(f(ratio, 3))×")
        }
        return lines.joined(separator: "\n")
    }
}
