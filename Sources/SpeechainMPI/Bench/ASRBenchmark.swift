import Foundation

/// The ASR benchmark of `speechain-mpi bench-asr` (a measurement, not a test): training steps of ar_asr.ARASR at
/// the workload scripts/bench/asr_torch.py runs in PyTorch — features [16, 300, 80] (16 utterances × 3 s at a
/// 10 ms hop; no frontend, normalisation or SpecAugment, as the twin), 40 tokens + <sos>/<eos> per sentence,
/// vocabulary 32, conv prenet [256, 256] → 256, 6 encoder and 3 decoder layers (4 heads, FFN 1024, ReLU), CTC
/// weight 0.3, label smoothing 0.1, no dropout, Adam (lr 1e-3, betas 0.9/0.98) — with the step split into
/// forward, backward and optimizer, and the time spent inside sgemm against the machine's sgemm peak.
public enum ASRBenchmark {
    public struct Configuration: Sendable, Codable, Equatable {
        public var batchSize = 16
        public var frames = 300
        public var tokens = 40
        public var vocabulary = 32
        public var dModel = 256
        public var heads = 4
        public var ffn = 1024
        public var encoderLayers = 6
        public var decoderLayers = 3
        public var convDims = [256, 256]
        public var steps = 10
        public var warmup = 2
        public var seed: UInt64 = 0
        public init() {}

        public func validate() throws {
            func bad(_ option: String, _ reason: String) -> BenchmarkError { .invalid(option: option, reason: reason) }
            guard batchSize >= 1 else { throw bad("batch_size", "must be >= 1, found \(batchSize)") }
            guard frames >= 7 else { throw bad("frames", "must be >= 7 (the conv prenet's two stride-2 kernels), found \(frames)") }
            guard tokens >= 1 else { throw bad("tokens", "must be >= 1, found \(tokens)") }
            guard steps >= 1 else { throw bad("steps", "must be >= 1, found \(steps)") }
            guard warmup >= 0 else { throw bad("warmup", "must be >= 0, found \(warmup)") }
        }
    }

    public struct Report: Codable, Sendable {
        public var date = ""
        public var host = ""
        public var cpu = ""
        public var blas = ""
        public var blasThreads = 1
        public var flushDenormal = false
        public var configuration = Configuration()
        public var parameters = 0
        public var utterancesPerSecond = 0.0
        public var stepMs = 0.0
        public var forwardMs = 0.0
        public var backwardMs = 0.0
        public var optimizerMs = 0.0
        /// Median per step: time inside sgemm, its FLOPs, and their rate against the best of 1024³ sgemm.
        public var gemmMs = 0.0
        public var gemmGflop = 0.0
        public var gemmGflopsPerSecond = 0.0
        public var sgemmPeakGflopsPerSecond = 0.0
        public var gemmFractionOfPeak = 0.0
        public var gemmShareOfStep = 0.0
        public var firstLoss: Float = 0
        public var lastLoss: Float = 0
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

    /// Synthetic batch: N(0, 1) features, tokens uniform in 1…V−2 between <sos/eos> = V−1.
    public static func makeBatch(_ c: Configuration) -> Batch {
        var rng = Xoshiro256(seed: c.seed, stream: 0xB5)
        var batch = Batch()
        let f = batch.slot("feat"), x = batch.slot("text")
        batch.tensors[f].shape = [c.batchSize, c.frames, 80]
        batch.tensors[f].floats = (0..<(c.batchSize * c.frames * 80)).map { _ in rng.normal() }
        batch.tensors[f].lengths = [Int](repeating: c.frames, count: c.batchSize)
        let cols = c.tokens + 2, eos = Int32(c.vocabulary - 1)
        var ints: [Int32] = []
        for _ in 0..<c.batchSize {
            ints.append(eos)
            for _ in 0..<c.tokens { ints.append(1 + Int32(truncatingIfNeeded: rng.next() % UInt64(c.vocabulary - 2))) }
            ints.append(eos)
        }
        batch.tensors[x].shape = [c.batchSize, cols]; batch.tensors[x].ints = ints
        batch.tensors[x].lengths = [Int](repeating: cols, count: c.batchSize)
        return batch
    }

    public static func run(_ config: Configuration, progress: (String) -> Void = { _ in }) throws -> Report {
        try config.validate()
        var report = Report()
        report.configuration = config
        report.date = ISO8601DateFormatter().string(from: Date())
        report.host = ProcessInfo.processInfo.hostName
        report.cpu = BenchSupport.cpuModel()
        report.blas = BLASKernels.current().description
        report.blasThreads = BLAS.threadCount
        report.flushDenormal = Denormals.flushed
        let model = try makeModel(config)
        report.parameters = model.parameters.count
        let batch = makeBatch(config)
        let scheduler = try OptimScheduler(name: "main", type: "const.ConstantLr",
                                           conf: ["optim_type": .string("Adam"),
                                                  "optim_conf": .map(["lr": .double(1e-3), "betas": .list([.double(0.9), .double(0.98)])])],
                                           model: model, options: TrainingOptions())
        let context = ForwardContext(training: true, amp: nil)
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let timer = StepTimer()
        var step: [Double] = [], forward: [Double] = [], backward: [Double] = [], optimizer: [Double] = []
        var gemm: [Double] = [], gemmFlop: [Double] = []
        progress("bench-asr: \(config.warmup) warm-up + \(config.steps) timed steps, batch \(config.batchSize) × \(config.frames) frames, \(report.parameters) parameters")
        for s in 0..<(config.warmup + config.steps) {
            BLAS.profile = BLAS.Profile(isOn: true)
            let t0 = DispatchTime.now().uptimeNanoseconds
            try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
            let t1 = DispatchTime.now().uptimeNanoseconds
            timer.reset()
            _ = try scheduler.step(losses: losses, timer: timer, stepNum: s + 1, epochNum: 1)
            let t2 = DispatchTime.now().uptimeNanoseconds
            let profile = BLAS.profile
            BLAS.profile.isOn = false
            if s == 0 { report.firstLoss = losses["loss"]! }
            report.lastLoss = losses["loss"]!
            guard s >= config.warmup else { continue }
            step.append(Double(t2 - t0) * 1e-9); forward.append(Double(t1 - t0) * 1e-9)
            backward.append(timer.total("loss_backward_time")); optimizer.append(timer.total("optim_time"))
            gemm.append(profile.seconds); gemmFlop.append(profile.flops)
        }
        guard report.lastLoss.isFinite else { throw BenchmarkError.invalid(option: "steps", reason: "the loss diverged (\(report.lastLoss))") }
        let m = BenchSupport.median
        report.stepMs = m(step) * 1e3; report.forwardMs = m(forward) * 1e3
        report.backwardMs = m(backward) * 1e3; report.optimizerMs = m(optimizer) * 1e3
        report.utterancesPerSecond = Double(config.batchSize) / m(step)
        report.gemmMs = m(gemm) * 1e3
        report.gemmGflop = m(gemmFlop) / 1e9
        report.gemmGflopsPerSecond = report.gemmGflop / m(gemm)
        report.sgemmPeakGflopsPerSecond = ScalingBenchmark.sgemmRate(m: 1024, n: 1024, k: 1024, repeats: 5) / 1e9
        report.gemmFractionOfPeak = report.gemmGflopsPerSecond / report.sgemmPeakGflopsPerSecond
        report.gemmShareOfStep = m(gemm) / m(step)
        return report
    }
}

extension ASRBenchmark.Report {
    public var text: String {
        func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
        let c = configuration
        return [
            "bench-asr: ar_asr.ARASR, conv \(c.convDims) → \(c.dModel), \(c.encoderLayers)+\(c.decoderLayers) layers, \(c.heads) heads, FFN \(c.ffn), vocabulary \(c.vocabulary); \(parameters) parameters",
            "batch:     \(c.batchSize) × \(c.frames) frames × 80, \(c.tokens) tokens; \(c.steps) timed steps after \(c.warmup) warm-up; loss \(f(Double(firstLoss), 2)) → \(f(Double(lastLoss), 2))",
            "machine:   \(host): \(cpu); \(blas); \(blasThreads) BLAS thread(s); denormals \(flushDenormal ? "flushed" : "kept"); \(date)",
            "step:      \(f(stepMs, 1)) ms = \(f(utterancesPerSecond, 2)) utterances/s (forward \(f(forwardMs, 1)), backward \(f(backwardMs, 1)), optimizer \(f(optimizerMs, 1)) ms)",
            "sgemm:     \(f(gemmMs, 1)) ms of the step (\(f(100 * gemmShareOfStep, 0))%), \(f(gemmGflop, 2)) GFLOP at \(f(gemmGflopsPerSecond, 1)) GFLOP/s = \(f(100 * gemmFractionOfPeak, 0))% of the 1024³ peak \(f(sgemmPeakGflopsPerSecond, 1)) GFLOP/s",
        ].joined(separator: "\n")
    }
}
