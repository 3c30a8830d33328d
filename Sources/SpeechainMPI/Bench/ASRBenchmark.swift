import Foundation

/// The ASR benchmark of `speechain-mpi bench-asr` (a measurement, not a test): training steps of ar_asr.ARASR at
/// the workload scripts/bench/asr_torch.py runs in PyTorch — features [16, 300, 80] (16 utterances × 3 s at a
/// 10 ms hop; no frontend, normalisation or SpecAugment, as the twin), 40 tokens + <sos>/<eos> per sentence,
/// vocabulary 32, conv prenet [256, 256] → 256, 6 encoder and 3 decoder layers (4 heads, FFN 1024, ReLU), CTC
/// weight 0.3, label smoothing 0.1, no dropout, Adam (lr 1e-3, betas 0.9/0.98) — alone or on every rank of an
/// mpirun/srun job, data parallel as the trainer runs it (the same OptimScheduler, its gradient synchronisation
/// with accum_grad), the time of an update split as `speechain-mpi bench` splits it (ScalingBenchmark): compute
/// (forward + backward), wait for the slowest rank (a barrier before the allreduce), sync (the allreduce) and
/// optimizer, next to the time spent inside sgemm and the sgemm peak measured in the same run.
///
/// Batch lengths: by default every batch is [B, frames, 80] with every utterance `frames` long (the README's
/// compare_asr.sh workload, rank 0's batch the same one every step). With `minFrames` < `frames` the lengths vary,
/// so that the ranks reach the allreduce at different times:
/// - `lengths: random`: every rank, every step, pads its batch to a length L drawn uniformly from
///   minFrames…frames (a length-sorted bucket, as SpeeChain's batches are): one utterance is L frames, the others
///   uniform in ⌈0.9·L⌉…L; its own seeded stream per rank, so the ranks' batches differ;
/// - `lengths: by_rank`: rank r of p always has L = minFrames + (frames − minFrames)·r/(p − 1), every utterance
///   that long (a fixed imbalance: rank 0 the shortest, the last rank the longest).
/// Each sentence has round(tokens·length/frames) tokens (at least 1), so the CTC stays feasible.
public enum ASRBenchmark {
    public struct Configuration: Sendable, Codable, Equatable {
        /// Utterances per rank and micro-step (weak scaling).
        public var batchSize = 16
        /// Strong scaling: utterances per micro-step over all ranks (batch per rank = globalBatch / ranks).
        public var globalBatch: Int?
        public var accumGrad = 1
        public var frames = 300
        /// The shortest batch length of the spread (nil: frames, every batch full length).
        public var minFrames: Int?
        /// How lengths vary when minFrames < frames: "random" or "by_rank".
        public var lengths = "random"
        public var tokens = 40
        public var vocabulary = 32
        public var dModel = 256
        public var heads = 4
        public var ffn = 1024
        public var encoderLayers = 6
        public var decoderLayers = 3
        public var convDims = [256, 256]
        /// Timed micro-steps after `warmup` untimed ones; both multiples of accum_grad.
        public var steps = 10
        public var warmup = 2
        public var lr = 1e-3
        public var seed: UInt64 = 0
        /// Sum the gradients in a shared-memory window on each node, then by MPI between nodes (as the trainer does).
        public var sharedMemory = true
        /// Autocast of the forward (use_amp with this amp_dtype; nil: float32), with the trainer's default GradScaler.
        public var ampDType: ReducedPrecision?
        public init() {}

        public static let lengthModes = ["random", "by_rank"]

        public func batchPerRank(worldSize: Int) -> Int { globalBatch.map { $0 / worldSize } ?? batchSize }

        /// Everything a user can get wrong, as one line naming the option.
        public func validate(worldSize: Int = 1) throws {
            func bad(_ option: String, _ reason: String) -> BenchmarkError { .invalid(option: option, reason: reason) }
            guard batchSize >= 1 else { throw bad("batch_size", "must be >= 1, found \(batchSize)") }
            if let g = globalBatch {
                guard g >= 1 else { throw bad("global_batch", "must be >= 1, found \(g)") }
                guard g % worldSize == 0 else { throw bad("global_batch", "\(g) utterances do not divide evenly over \(worldSize) ranks") }
            }
            guard accumGrad >= 1 else { throw bad("accum_grad", "must be >= 1, found \(accumGrad)") }
            guard frames >= 7 else { throw bad("frames", "must be >= 7 (the conv prenet's two stride-2 kernels), found \(frames)") }
            if let m = minFrames {
                guard m >= 7, m <= frames else { throw bad("min_frames", "must be between 7 and --frames \(frames), found \(m)") }
            }
            guard Self.lengthModes.contains(lengths) else {
                throw bad("lengths", "must be \(Self.lengthModes.joined(separator: " or ")), found '\(lengths)'")
            }
            guard tokens >= 1 else { throw bad("tokens", "must be >= 1, found \(tokens)") }
            guard dModel >= 1 else { throw bad("d_model", "must be >= 1, found \(dModel)") }
            guard heads >= 1, dModel % heads == 0 else { throw bad("heads", "must be >= 1 and divide --d_model \(dModel), found \(heads)") }
            guard ffn >= 1 else { throw bad("ffn", "must be >= 1, found \(ffn)") }
            guard encoderLayers >= 1 else { throw bad("encoder_layers", "must be >= 1, found \(encoderLayers)") }
            guard decoderLayers >= 1 else { throw bad("decoder_layers", "must be >= 1, found \(decoderLayers)") }
            guard convDims.count == 2, convDims.allSatisfy({ $0 >= 1 }) else {
                throw bad("conv_dims", "must be two positive channel counts like 256,256, found \(convDims.map(String.init).joined(separator: ","))")
            }
            guard steps >= 1 else { throw bad("steps", "must be >= 1, found \(steps)") }
            guard steps % accumGrad == 0 else { throw bad("steps", "\(steps) is not a multiple of --accum_grad \(accumGrad) (whole updates are timed)") }
            guard warmup >= 0 else { throw bad("warmup", "must be >= 0, found \(warmup)") }
            guard warmup % accumGrad == 0 else { throw bad("warmup", "\(warmup) is not a multiple of --accum_grad \(accumGrad)") }
            guard lr > 0, lr.isFinite else { throw bad("lr", "must be a positive number, found \(lr)") }
        }
    }

    /// What rank 0 reports (bench.json): the fields of ScalingBenchmark.Report that scripts/bench/table.py,
    /// plot.py and model.py read, under the same names, and the ASR bench's own. Times in milliseconds per update
    /// (= per step at accum_grad 1), each rank's median over the timed updates, then the mean over ranks.
    public struct Report: Codable, Sendable {
        public var workload = "asr"
        public var date = ""
        public var host = ""
        public var cpu = ""
        public var cores = 0
        public var nodes = 0
        public var worldSize = 1
        public var blas = ""
        /// The kernels of the float32 Linear forward and weight gradient (16–256 rows) and Conv2d forward, weight and input gradient (`Float32Kernels.selectedLine`).
        public var float32Kernels = ""
        /// How the ranks summed gradients (the trainer's start line says the same).
        public var gradientSum = ""
        /// "float32", or the autocast dtype and how its products run ("bfloat16, native (AVX512_BF16) products").
        public var precision = "float32"
        public var blasThreads = 1
        public var flushDenormal = false
        public var configuration = Configuration()
        public var parameters = 0
        public var batchPerRank = 0
        public var globalBatch = 0
        /// Utterances of all ranks per second: over the slowest rank's median update, and over the whole timed run.
        public var samplesPerSecond = 0.0
        public var samplesPerSecondMean = 0.0
        /// The same as samplesPerSecond (the name compare_asr.sh reads).
        public var utterancesPerSecond = 0.0
        /// The slowest rank's median update, and it over accum_grad.
        public var updateMs = 0.0
        public var stepMs = 0.0
        public var forwardMs = 0.0
        public var backwardMs = 0.0
        public var computeMs = 0.0
        public var waitMs = 0.0
        public var syncMs = 0.0
        public var optimizerMs = 0.0
        /// Per rank (in rank order): its median compute and wait, and the mean padded frames of its timed steps.
        public var perRankComputeMs: [Double] = []
        public var perRankWaitMs: [Double] = []
        public var perRankFrames: [Double] = []
        /// Per update the slowest rank's compute minus the fastest's, median over the timed updates (0 alone).
        public var computeSpreadMs = 0.0
        /// Mean padded frames per step over all ranks' timed steps.
        public var meanFrames = 0.0
        /// As in ScalingBenchmark.Report: the raw MPI_Allreduce of the gradient after every timed update, the sync's
        /// slowest-rank median, their ratio, and a curve of smaller sizes for model.py's fit.
        public var rawAllreduceMs = 0.0
        public var syncMsSlowestRank = 0.0
        public var syncOverRaw: Double?
        public var allreduceCurve: [ScalingBenchmark.AllreducePoint] = []
        public var allreduceCalls = 0
        public var allreduceBytes = 0
        public var mpiCalls = 0
        /// Per update: time inside the matrix products (sgemm and our own kernels, `BLAS.profile`) and their FLOPs
        /// (median), their rate, and the 1024³ sgemm peak measured by all ranks at once after the run (mean over ranks).
        public var gemmMs = 0.0
        public var gemmGflop = 0.0
        public var gemmGflopsPerSecond = 0.0
        public var sgemmPeakGflopsPerSecond = 0.0
        public var gemmFractionOfPeak = 0.0
        public var gemmShareOfStep = 0.0
        /// Rank 0's products by shape, summed over the timed updates and given per update: the ten that take the
        /// most time, slowest first (m×n×k and the transposes as called, row-major).
        public var gemmByShape: [ShapeReport] = []
        public struct ShapeReport: Codable, Sendable {
            public var shape: String
            public var msPerUpdate: Double
            public var callsPerUpdate: Double
            public var gflopsPerSecond: Double
        }
        /// The sgemm FLOPs per utterance, and per rank their rate over the update, over compute, and the peak again
        /// (ScalingBenchmark's names).
        public var flopsPerSample = 0.0
        public var achievedGflopsPerRank = 0.0
        public var computeGflopsPerRank = 0.0
        public var sgemmPeakGflopsPerRank = 0.0
        public var fractionOfPeak = 0.0
        public var firstLoss: Float = 0
        public var lastLoss: Float = 0
        /// FNV-1a of every rank's parameters after the run (hex, rank order): one value when the replicas agree.
        public var parameterChecksums: [String] = []
        public init() {}
    }

    public static func makeModel(_ c: Configuration) throws -> ARASR {
        var p = ARASR.Parts(vocabSize: c.vocabulary)
        p.ctcWeight = 0.3; p.labelSmoothing = 0.1
        p.featDim = 80; p.convDims = c.convDims; p.convBatchNorm = false; p.convActivation = "ReLU"; p.lnrDims = [c.dModel]
        for conf in [\ARASR.Parts.encoder, \ARASR.Parts.decoder] {
            p[keyPath: conf].dModel = c.dModel; p[keyPath: conf].heads = c.heads; p[keyPath: conf].ffnSize = c.ffn
            p[keyPath: conf].ffnActivation = "ReLU"
            p[keyPath: conf].posencDropout = 0; p[keyPath: conf].attDropout = 0; p[keyPath: conf].ffnDropout = 0; p[keyPath: conf].resDropout = 0
        }
        p.encoder.layers = c.encoderLayers; p.decoder.layers = c.decoderLayers
        p.encoder.embScale = false; p.decoder.embScale = true
        return try ARASR(p, seed: c.seed)
    }

    /// The batch of every step when all utterances are `frames` long: N(0, 1) features, tokens uniform in 1…V−2
    /// between <sos/eos> = V−1 (rank 0's is the one-process bench's batch).
    public static func makeBatch(_ c: Configuration, rank: Int = 0) -> Batch {
        var rng = Xoshiro256(seed: c.seed, stream: 0xB5 &+ UInt64(rank) << 32)
        return makeBatch(c, lengths: [Int](repeating: c.frames, count: c.batchSize), rng: &rng)
    }

    /// A batch of utterances of `lengths` frames (padded to the longest), N(0, 1) features, each sentence
    /// round(tokens·length/frames) tokens (at least 1) between <sos/eos>.
    public static func makeBatch(_ c: Configuration, lengths: [Int], rng: inout Xoshiro256) -> Batch {
        var batch = Batch()
        let b = lengths.count, longest = lengths.max() ?? 0
        let f = batch.slot("feat"), x = batch.slot("text")
        batch.tensors[f].shape = [b, longest, 80]
        var feats = [Float](repeating: 0, count: b * longest * 80)
        for i in 0..<b { for k in 0..<(lengths[i] * 80) { feats[i * longest * 80 + k] = rng.normal() } }
        batch.tensors[f].floats = feats
        batch.tensors[f].lengths = lengths
        let counts = lengths.map { max(1, Int((Double(c.tokens) * Double($0) / Double(c.frames)).rounded())) }
        let cols = counts.max()! + 2, eos = Int32(c.vocabulary - 1)
        var ints = [Int32](repeating: 0, count: b * cols)
        for i in 0..<b {
            ints[i * cols] = eos
            for t in 0..<counts[i] { ints[i * cols + 1 + t] = 1 + Int32(truncatingIfNeeded: rng.next() % UInt64(c.vocabulary - 2)) }
            ints[i * cols + counts[i] + 1] = eos
        }
        batch.tensors[x].shape = [b, cols]; batch.tensors[x].ints = ints
        batch.tensors[x].lengths = counts.map { $0 + 2 }
        return batch
    }

    /// The lengths of one batch of `size` utterances on `rank` of `world` (see the type's comment); `rng` is the
    /// rank's own length stream, drawn from only in the random mode.
    public static func batchLengths(_ c: Configuration, size: Int, rank: Int, world: Int, rng: inout Xoshiro256) -> [Int] {
        let lo = c.minFrames ?? c.frames, hi = c.frames
        guard lo < hi else { return [Int](repeating: hi, count: size) }
        if c.lengths == "by_rank" {
            let l = world > 1 ? lo + (hi - lo) * rank / (world - 1) : hi
            return [Int](repeating: l, count: size)
        }
        let l = lo + Int(rng.next() % UInt64(hi - lo + 1))
        let shortest = max(7, (9 * l + 9) / 10)
        return (0..<size).map { $0 == 0 ? l : shortest + Int(rng.next() % UInt64(l - shortest + 1)) }
    }

    /// Runs the benchmark alone (a world of one).
    public static func run(_ config: Configuration, progress: (String) -> Void = { _ in }) throws -> Report {
        try run(config, communicator: LocalCommunicator(), progress: progress)
    }

    /// Runs the benchmark on every rank of `communicator`; every rank returns the same report.
    public static func run(_ config: Configuration, communicator: Communicator, progress: (String) -> Void = { _ in }) throws -> Report {
        let world = communicator.size, rank = communicator.rank
        try config.validate(worldSize: world)
        var config = config
        config.minFrames = config.minFrames ?? config.frames
        let batchSize = config.batchPerRank(worldSize: world)
        guard batchSize >= 1 else { throw BenchmarkError.invalid(option: "global_batch", reason: "gives less than one utterance per rank") }
        let mpi = communicator as? MPICommunicator
        var report = Report()
        report.configuration = config
        report.worldSize = world
        report.batchPerRank = batchSize
        report.globalBatch = batchSize * world
        report.date = ISO8601DateFormatter().string(from: Date())
        report.host = ProcessInfo.processInfo.hostName
        report.cpu = BenchSupport.cpuModel()
        report.cores = ProcessInfo.processInfo.activeProcessorCount
        report.blas = BLASKernels.current().description
        report.float32Kernels = Float32Kernels.selectedLine
        report.blasThreads = BLAS.threadCount
        report.flushDenormal = Denormals.flushed
        report.nodes = Set(try communicator.allgather(ScalingBenchmark.hostHash())).count

        // Every rank builds the same model from the same seed; the checksums at the end show the replicas agree.
        let model = try makeModel(config)
        report.parameters = model.parameters.count
        let (inner, gradientSum) = try gradientSynchronizer(model.parameters, communicator, sharedMemory: config.sharedMemory)
        report.gradientSum = gradientSum
        let sync = TimedSynchronizer(communicator: communicator, inner: inner)
        let scheduler = try OptimScheduler(name: "main", type: "const.ConstantLr",
                                           conf: ["optim_type": .string("Adam"),
                                                  "optim_conf": .map(["lr": .double(config.lr), "betas": .list([.double(0.9), .double(0.98)])])],
                                           model: model,
                                           options: TrainingOptions(accumGrad: config.accumGrad, useAMP: config.ampDType != nil,
                                                                    ampDType: config.ampDType ?? .float16),
                                           synchronizer: world > 1 ? sync : nil)
        let context = ForwardContext(training: true, amp: config.ampDType)
        report.precision = config.ampDType.map {
            $0 == .bfloat16 ? "bfloat16, \(BF16GEMM.effective(BF16GEMM.defaultProducts) == .native ? BF16GEMM.kernelName : "emulated") products"
                            : "\($0), emulated products"
        } ?? "float32"
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let timer = StepTimer()

        // The batches: one fixed batch per rank when every length is the same, else drawn per step.
        var perRank = config; perRank.batchSize = batchSize; perRank.globalBatch = nil
        let varying = config.minFrames! < config.frames
        let fixed: Batch? = varying && config.lengths == "random" ? nil
            : { var rng = Xoshiro256(seed: config.seed, stream: 0xB5 &+ UInt64(rank) << 32)
                return makeBatch(perRank, lengths: batchLengths(perRank, size: batchSize, rank: rank, world: world, rng: &rng), rng: &rng) }()
        var lengthRNG = Xoshiro256(seed: config.seed, stream: 0x1E46 &+ UInt64(rank))
        var dataRNG = Xoshiro256(seed: config.seed, stream: 0xB5 &+ UInt64(rank) << 32 &+ 1)
        var batches = [Batch](repeating: Batch(), count: config.accumGrad)

        let updates = config.steps / config.accumGrad, warmupUpdates = config.warmup / config.accumGrad
        var cycle = [Double](), forward = [Double](), backward = [Double](), compute = [Double](), optim = [Double]()
        var wait = [Double](), comm = [Double](), raw = [Double](), spread = [Double](), gemm = [Double](), gemmFlop = [Double]()
        var framesSum = 0.0, framesCount = 0
        var stepNum = 0
        var timedStart: UInt64 = 0
        var callsBefore = 0, bytesBefore = 0, mpiCallsBefore = 0
        progress("bench-asr: \(world) rank(s) × batch \(batchSize) × \(config.minFrames! == config.frames ? "\(config.frames)" : "\(config.minFrames!)…\(config.frames) (\(config.lengths))") frames, "
                 + "accum_grad \(config.accumGrad), \(config.warmup) warm-up + \(config.steps) timed steps, \(report.parameters) parameters")
        for u in 0..<(warmupUpdates + updates) {
            // this update's batches, made before its clock starts
            for k in 0..<config.accumGrad {
                if let fixed { batches[k] = fixed; continue }
                let lengths = batchLengths(perRank, size: batchSize, rank: rank, world: world, rng: &lengthRNG)
                batches[k] = makeBatch(perRank, lengths: lengths, rng: &dataRNG)
            }
            if u == warmupUpdates {
                try communicator.barrier()
                callsBefore = sync.inner.calls; bytesBefore = sync.inner.bytes; mpiCallsBefore = mpi?.floatAllreduceCalls ?? 0
                timedStart = DispatchTime.now().uptimeNanoseconds
            }
            timer.reset(); sync.resetTimes()
            // rank 0's products by shape, one table kept from update to update: the warm-up fills its keys, the
            // timed updates start from zero totals and insert, inside their clock, only shapes the warm-up did not
            // see (another padded length)
            if u == 0 { BLAS.profile.shapes = rank == 0 ? [:] : nil }
            if u == warmupUpdates { BLAS.profile.shapes = BLAS.profile.shapes?.mapValues { _ in BLAS.Totals() } }
            BLAS.profile.start()
            let t0 = DispatchTime.now().uptimeNanoseconds
            var fwd = 0.0
            for k in 0..<config.accumGrad {
                stepNum += 1
                let f0 = DispatchTime.now().uptimeNanoseconds
                try model.forward(batches[k], context: context, losses: &losses, metrics: &metrics)
                fwd += ScalingBenchmark.seconds(since: f0)
                try scheduler.step(losses: losses, timer: timer, stepNum: stepNum, epochNum: 1)
            }
            let total = ScalingBenchmark.seconds(since: t0)
            let gemmSeconds = BLAS.profile.seconds, gemmFlops = BLAS.profile.flops
            BLAS.profile.isOn = false
            if u == 0 { report.firstLoss = losses["loss"]! }
            report.lastLoss = losses["loss"]!
            guard report.lastLoss.isFinite else { throw BenchmarkError.diverged(rank: rank, step: stepNum) }
            guard u >= warmupUpdates else { continue }
            let bwd = timer.total("loss_backward_time")
            cycle.append(total); forward.append(fwd); backward.append(bwd); compute.append(fwd + bwd)
            wait.append(sync.waitSeconds); comm.append(sync.syncSeconds)
            optim.append(timer.total("optim_time") - sync.waitSeconds - sync.syncSeconds)
            gemm.append(gemmSeconds); gemmFlop.append(gemmFlops)
            for k in 0..<config.accumGrad { framesSum += Double(batches[k]["feat"]!.shape[1]); framesCount += 1 }
            // Outside the update's clock: every rank's compute of this update (its spread), and the reference raw
            // MPI_Allreduce of the gradient buffer the update has just zeroed (a sum of zeros leaves it zero).
            if let mpi, world > 1 {
                let all = try ScalingBenchmark.gather(fwd + bwd, communicator)
                spread.append(all.max()! - all.min()!)
                try communicator.barrier()
                raw.append(try mpi.rawAllreduceSum(model.parameters.gradients.pointer, count: model.parameters.gradients.count))
            }
        }
        try communicator.barrier()
        let timedWall = ScalingBenchmark.seconds(since: timedStart)
        report.allreduceCalls = sync.inner.calls - callsBefore
        report.allreduceBytes = sync.inner.bytes - bytesBefore
        report.mpiCalls = (mpi?.floatAllreduceCalls ?? 0) - mpiCallsBefore

        func medians(_ values: [Double]) throws -> [Double] { try ScalingBenchmark.gatherMedians(values, communicator) }
        func mean(_ values: [Double]) throws -> Double { try medians(values).reduce(0, +) / Double(world) }
        func slowest(_ values: [Double]) throws -> Double { try medians(values).max() ?? 0 }
        let m = BenchSupport.median
        let updateSeconds = try slowest(cycle)
        let utterancesPerUpdate = Double(batchSize * world * config.accumGrad)
        report.updateMs = updateSeconds * 1e3
        report.stepMs = report.updateMs / Double(config.accumGrad)
        report.samplesPerSecond = utterancesPerUpdate / updateSeconds
        report.utterancesPerSecond = report.samplesPerSecond
        report.samplesPerSecondMean = utterancesPerUpdate * Double(updates) / timedWall
        report.forwardMs = try mean(forward) * 1e3
        report.backwardMs = try mean(backward) * 1e3
        report.perRankComputeMs = try medians(compute).map { $0 * 1e3 }
        report.computeMs = report.perRankComputeMs.reduce(0, +) / Double(world)
        report.perRankWaitMs = try medians(wait).map { $0 * 1e3 }
        report.waitMs = report.perRankWaitMs.reduce(0, +) / Double(world)
        report.syncMs = try mean(comm) * 1e3
        report.syncMsSlowestRank = try slowest(comm) * 1e3
        report.optimizerMs = try mean(optim) * 1e3
        report.computeSpreadMs = m(spread) * 1e3
        report.perRankFrames = try ScalingBenchmark.gather(framesSum / Double(max(framesCount, 1)), communicator)
        report.meanFrames = report.perRankFrames.reduce(0, +) / Double(world)

        report.gemmMs = try mean(gemm) * 1e3
        report.gemmGflop = try mean(gemmFlop) / 1e9
        report.gemmGflopsPerSecond = report.gemmGflop / (report.gemmMs * 1e-3)
        report.gemmShareOfStep = report.gemmMs / report.updateMs
        let timedUpdates = Double(max(1, cycle.count)), shapeTotals = BLAS.profile.shapes ?? [:]
        BLAS.profile = BLAS.Profile()
        report.gemmByShape = shapeTotals.sorted { $0.value.seconds > $1.value.seconds }.prefix(10).map {
            Report.ShapeReport(shape: $0.key.description, msPerUpdate: $0.value.seconds / timedUpdates * 1e3,
                               callsPerUpdate: Double($0.value.calls) / timedUpdates,
                               gflopsPerSecond: $0.value.flops / $0.value.seconds / 1e9)
        }
        report.flopsPerSample = report.gemmGflop * 1e9 / Double(batchSize * config.accumGrad)
        report.achievedGflopsPerRank = report.gemmGflop / updateSeconds
        report.computeGflopsPerRank = report.gemmGflop / (report.computeMs * 1e-3)

        // The reference, measured now on every rank at once (as the ranks shared the machine while training).
        progress("bench-asr: measuring the sgemm peak")
        try communicator.barrier()
        let peak = ScalingBenchmark.sgemmRate(m: 1024, n: 1024, k: 1024, repeats: 5)
        report.sgemmPeakGflopsPerRank = try mean([peak]) / 1e9
        report.sgemmPeakGflopsPerSecond = report.sgemmPeakGflopsPerRank
        report.gemmFractionOfPeak = report.gemmGflopsPerSecond / report.sgemmPeakGflopsPerRank
        report.fractionOfPeak = report.achievedGflopsPerRank / report.sgemmPeakGflopsPerRank

        if let mpi, world > 1, !raw.isEmpty {
            report.rawAllreduceMs = try slowest(raw) * 1e3
            report.syncOverRaw = report.syncMsSlowestRank / report.rawAllreduceMs
            report.allreduceCurve = try ScalingBenchmark.allreduceCurve(mpi, communicator, gradients: model.parameters.gradients,
                                                                        wholeMs: report.rawAllreduceMs)
        }
        let checksum = FNV1a.hash(UnsafeRawBufferPointer(start: model.parameters.values.pointer, count: model.parameters.count * 4))
        report.parameterChecksums = try communicator.allgather(Int64(bitPattern: checksum)).map { String(UInt64(bitPattern: $0), radix: 16) }
        return report
    }
}

extension ASRBenchmark.Report {
    public var text: String {
        func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
        let c = configuration
        let lengths = c.minFrames.map { $0 < c.frames ? "\($0)…\(c.frames) frames (\(c.lengths))" : "\(c.frames) frames" } ?? "\(c.frames) frames"
        var lines = [
            "bench-asr: ar_asr.ARASR, conv \(c.convDims) → \(c.dModel), \(c.encoderLayers)+\(c.decoderLayers) layers, \(c.heads) heads, FFN \(c.ffn), vocabulary \(c.vocabulary); \(parameters) parameters",
            "ranks:     \(worldSize) on \(nodes) node(s); \(host): \(cpu), \(cores) cores; \(blasThreads) BLAS thread(s) per rank",
            "machine:   \(blas); denormals \(flushDenormal ? "flushed" : "kept"); \(precision); \(date)"
                + (float32Kernels.isEmpty ? "" : "; \(float32Kernels)")
                + (worldSize > 1 ? "; gradients \(gradientSum)" : ""),
            "batch:     \(batchPerRank) per rank (global \(globalBatch)) × \(lengths) × 80 (mean \(f(meanFrames)) padded), \(c.tokens) tokens at \(c.frames) frames; "
                + "accum_grad \(c.accumGrad), \(c.steps) timed steps after \(c.warmup) warm-up; loss \(f(Double(firstLoss), 2)) → \(f(Double(lastLoss), 2))",
            "step:      \(f(stepMs, 1)) ms = \(f(utterancesPerSecond, 2)) utterances/s (\(f(samplesPerSecondMean, 2)) over the whole timed run); per update \(f(updateMs, 1)) ms = "
                + "compute \(f(computeMs, 1)) (forward \(f(forwardMs, 1)), backward \(f(backwardMs, 1))) + wait \(f(waitMs, 1)) + sync \(f(syncMs, 1)) + optimizer \(f(optimizerMs, 1))",
            "gemm:      \(f(gemmMs, 1)) ms of the update (\(f(100 * gemmShareOfStep, 0))%), \(f(gemmGflop, 2)) GFLOP at \(f(gemmGflopsPerSecond, 1)) GFLOP/s = \(f(100 * gemmFractionOfPeak, 0))% of the 1024³ peak \(f(sgemmPeakGflopsPerSecond, 1)) GFLOP/s",
        ]
        for (i, g) in gemmByShape.enumerated() {
            lines.append("\(i == 0 ? "products:  " : "           ")\(g.shape): \(f(g.msPerUpdate, 1)) ms per update in \(f(g.callsPerUpdate, 0)) calls, \(f(g.gflopsPerSecond, 1)) GFLOP/s")
        }
        if worldSize > 1 {
            let list = { (v: [Double]) in v.map { f($0, 1) }.joined(separator: ", ") }
            lines.append("ranks:     compute [\(list(perRankComputeMs))] ms, wait [\(list(perRankWaitMs))] ms, frames [\(list(perRankFrames))]; "
                         + "compute spread \(f(computeSpreadMs, 1)) ms per update (median)")
            lines.append("allreduce: \(allreduceCalls) calls, \(allreduceBytes) bytes; sync \(f(syncMsSlowestRank, 2)) ms vs a raw MPI_Allreduce \(f(rawAllreduceMs, 2)) ms (slowest rank)"
                         + (syncOverRaw.map { " → \(f($0, 3))×" } ?? ""))
            lines.append("replicas:  \(Set(parameterChecksums).count == 1 ? "identical" : "DIFFER") (parameter checksums \(parameterChecksums.joined(separator: ", ")))")
        }
        return lines.joined(separator: "\n")
    }
}
