import Foundation

/// The mixed-precision benchmark of `speechain-mpi bench-amp` (a measurement, not a test): the training step of the
/// benchmark MLP (default 512→2048→2048→2048→512, GELU, cross-entropy, Adam, batch 64, synthetic data) with use_amp
/// off, float16, bfloat16 (native products where the CPU has AVX512_BF16) and bfloat16 with emulated products, and
/// the float32→float16→float32 / float32→bfloat16→float32 rounding kernels next to memcpy — all in one run,
/// interleaved round by round so that the machine's noise hits every variant alike, each reported as a median.
///
/// Kernel bandwidth = bytes of float32 source per second for an out-of-place pass over `kernelFloats` values
/// (each also writes as many bytes, exactly as memcpy does), so the kernels and memcpy are measured in one unit.
public enum AMPBenchmark {
    public struct Configuration: Sendable, Codable, Equatable {
        /// Layer widths: input, hidden…, classes; GELU after every hidden layer.
        public var dims = [512, 2048, 2048, 2048, 512]
        public var batchSize = 64
        /// Timed rounds (each times one step of every variant) after `warmup` untimed ones.
        public var steps = 15
        public var warmup = 3
        public var lr = 1e-3
        public var seed: UInt64 = 0
        /// Floats per buffer of the kernel measurement (16 Mi floats = 64 MiB, far beyond the caches).
        public var kernelFloats = 1 << 24
        public var kernelRepeats = 15
        public init() {}

        public func validate() throws {
            func bad(_ option: String, _ reason: String) -> BenchmarkError { .invalid(option: option, reason: reason) }
            guard dims.count >= 3 else { throw bad("dims", "needs at least input, one hidden and output width (e.g. 512,2048,512), found \(dims.count) value(s)") }
            guard dims.allSatisfy({ $0 > 0 }) else { throw bad("dims", "widths must be positive, found \(dims.map(String.init).joined(separator: ","))") }
            guard dims.last! >= 2 else { throw bad("dims", "the output (classes) must be at least 2 wide") }
            guard batchSize >= 1 else { throw bad("batch_size", "must be >= 1, found \(batchSize)") }
            guard steps >= 1 else { throw bad("steps", "must be >= 1, found \(steps)") }
            guard warmup >= 0 else { throw bad("warmup", "must be >= 0, found \(warmup)") }
            guard lr > 0, lr.isFinite else { throw bad("lr", "must be a positive number, found \(lr)") }
            guard kernelFloats >= 1 else { throw bad("kernel_floats", "must be >= 1, found \(kernelFloats)") }
            guard kernelRepeats >= 1 else { throw bad("kernel_repeats", "must be >= 1, found \(kernelRepeats)") }
        }
    }

    /// One training variant's result.
    public struct StepResult: Codable, Sendable {
        public var name = ""
        /// Median step (forward + OptimScheduler.step: backward, unscale, clip, Adam) in milliseconds.
        public var stepMs = 0.0
        /// Medians of the step's parts: forward, backward (loss scaling included), and the rest of
        /// OptimScheduler.step (unscale and inf check, clipping, Adam, zeroing).
        public var forwardMs = 0.0
        public var backwardMs = 0.0
        public var optimizerMs = 0.0
        /// This step over the float32 step.
        public var ratio = 1.0
        /// Updates the GradScaler skipped during the whole run (warm-up included) and its final scale.
        public var skipped = 0
        public var lossScale: Float?
    }

    public struct Report: Codable, Sendable {
        public var date = ""
        public var host = ""
        public var cpu = ""
        public var blasThreads = 1
        public var configuration = Configuration()
        public var parameters = 0
        /// The rounding kernels the dispatcher chose on this CPU ("f16c+avx2" or "portable").
        public var kernel = ""
        /// How the "bfloat16" variant's Linear layers multiply; "bfloat16-emulated" always emulates.
        public var bfloat16Products = ""
        public var memcpyGBPerSecond = 0.0
        public var float16GBPerSecond = 0.0
        public var bfloat16GBPerSecond = 0.0
        /// The portable kernels on the same CPU (what a CPU without F16C/AVX2 would run).
        public var float16PortableGBPerSecond = 0.0
        public var bfloat16PortableGBPerSecond = 0.0
        public var steps: [StepResult] = []
        public init() {}
    }

    public static func run(_ config: Configuration, progress: (String) -> Void = { _ in }) throws -> Report {
        try config.validate()
        var report = Report()
        report.configuration = config
        report.date = ISO8601DateFormatter().string(from: Date())
        report.host = ProcessInfo.processInfo.hostName
        report.cpu = BenchSupport.cpuModel()
        report.blasThreads = BLAS.threadCount
        report.kernel = ReducedPrecision.kernelName
        report.bfloat16Products = BF16GEMM.isSupported && BF16GEMM.defaultProducts == .emulated
            ? "emulated (SPEECHAIN_BF16_PRODUCTS=emulated)" : BF16GEMM.kernelName

        progress("bench-amp: rounding kernels over \(config.kernelFloats) floats (\((config.kernelFloats * 4) >> 20) MiB), \(config.kernelRepeats) rounds")
        let k = measureKernels(floats: config.kernelFloats, repeats: config.kernelRepeats)
        report.memcpyGBPerSecond = k[0]
        report.float16GBPerSecond = k[1]
        report.bfloat16GBPerSecond = k[2]
        report.float16PortableGBPerSecond = k[3]
        report.bfloat16PortableGBPerSecond = k[4]

        // Identical models (same seed, same data), one per variant; bfloat16 twice, with the products this process
        // uses by default (native where the CPU has AVX512_BF16) and with the emulated ones.
        let variants: [(String, ReducedPrecision?, BFloat16Products)] = [
            ("float32", nil, .emulated), ("float16", .float16, .emulated),
            ("bfloat16", .bfloat16, BF16GEMM.defaultProducts), ("bfloat16-emulated", .bfloat16, .emulated),
        ]
        var runs: [Run] = []
        for (name, amp, products) in variants { runs.append(try Run(name: name, amp: amp, products: products, config: config)) }
        report.parameters = runs[0].model.parameters.count
        progress("bench-amp: \(config.warmup) warm-up + \(config.steps) timed rounds of one step per variant (use_amp off, float16, bfloat16, bfloat16-emulated)")
        var stepNum = 0
        for round in 0..<(config.warmup + config.steps) {
            stepNum += 1
            // rotate the order so that no variant always runs right after the same one
            for i in 0..<runs.count {
                let run = runs[(i + round) % runs.count]
                try run.step(stepNum: stepNum, timed: round >= config.warmup)
            }
        }
        for run in runs {
            var r = StepResult()
            r.name = run.name
            r.stepMs = BenchSupport.median(run.stepSeconds) * 1e3
            r.forwardMs = BenchSupport.median(run.forwardSeconds) * 1e3
            r.backwardMs = BenchSupport.median(run.backwardSeconds) * 1e3
            r.optimizerMs = BenchSupport.median(run.optimizerSeconds) * 1e3
            r.ratio = r.stepMs / (BenchSupport.median(runs[0].stepSeconds) * 1e3)
            r.skipped = run.skipped
            r.lossScale = run.scheduler.scaler?.scale
            guard run.model.parameters.values.toArray().allSatisfy({ $0.isFinite }) else {
                throw BenchmarkError.divergedVariant(run.name)
            }
            report.steps.append(r)
        }
        return report
    }

    /// One training variant: its model, OptimScheduler and timings.
    final class Run {
        let name: String
        let model: MLPClassifier
        let scheduler: OptimScheduler
        let context: ForwardContext
        let batch: Batch
        var losses: NamedValues
        var metrics: NamedValues
        var stepSeconds: [Double] = []
        var forwardSeconds: [Double] = []
        var backwardSeconds: [Double] = []
        var optimizerSeconds: [Double] = []
        var skipped = 0
        let timer = StepTimer()

        init(name: String, amp: ReducedPrecision?, products: BFloat16Products, config: Configuration) throws {
            self.name = name
            let dims = config.dims
            let split = (dims.count + 1) / 2
            model = try MLPClassifier(encoder: .init(dims: Array(dims[0..<split]), activation: "GELU"),
                                      decoder: .init(dims: Array(dims[(split - 1)...]), activation: "GELU"),
                                      seed: config.seed)
            for case let linear as Linear in model.encoder.layers + model.decoder.layers { linear.bfloat16Products = products }
            var options = TrainingOptions()
            options.useAMP = amp != nil
            if let amp { options.ampDType = amp }
            scheduler = try OptimScheduler(name: "main", type: "const.ConstantLr",
                                           conf: ["optim_type": .string("Adam"), "optim_conf": .map(["lr": .double(config.lr)])],
                                           model: model, options: options)
            context = ForwardContext(training: true, amp: options.autocast)
            var rng = Xoshiro256(seed: config.seed, stream: 0xA3)
            let classes = dims.last!
            batch = Batch(features: (0..<(config.batchSize * dims[0])).map { _ in rng.normal() },
                          labels: (0..<config.batchSize).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(classes)) },
                          cols: dims[0])
            losses = NamedValues(names: model.lossNames)
            metrics = NamedValues(names: model.metricNames)
        }

        func step(stepNum: Int, timed: Bool) throws {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try model.forward(batch, context: context, losses: &losses, metrics: &metrics)
            let t1 = DispatchTime.now().uptimeNanoseconds
            timer.reset()
            let report = try scheduler.step(losses: losses, timer: timer, stepNum: stepNum, epochNum: 1)
            let t2 = DispatchTime.now().uptimeNanoseconds
            if report.skipped { skipped += 1 }
            guard timed else { return }
            stepSeconds.append(Double(t2 - t0) * 1e-9)
            forwardSeconds.append(Double(t1 - t0) * 1e-9)
            backwardSeconds.append(timer.total("loss_backward_time"))
            optimizerSeconds.append(timer.total("optim_time"))
        }
    }

    /// Median GB/s of memcpy, the dispatched float16 and bfloat16 kernels and the portable ones, interleaved.
    static func measureKernels(floats n: Int, repeats: Int) -> [Double] {
        let src = FloatBuffer(count: n), dst = FloatBuffer(count: n)
        var rng = Xoshiro256(seed: 7)
        for i in 0..<n { src.pointer[i] = rng.normal() * 100 }
        dst.fill(0)   // fault the pages in before timing
        let bytes = Double(n * 4)
        let kernels: [(UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void] = [
            { s, d, n in _ = memcpy(d, s, n * 4) },
            { s, d, n in ReducedPrecision.float16.round(s, into: d, count: n) },
            { s, d, n in ReducedPrecision.bfloat16.round(s, into: d, count: n) },
            { s, d, n in ReducedPrecision.float16.round(s, into: d, count: n, kernel: .portable) },
            { s, d, n in ReducedPrecision.bfloat16.round(s, into: d, count: n, kernel: .portable) },
        ]
        var times = kernels.map { _ in [Double]() }
        for round in 0...repeats {
            for (i, kernel) in kernels.enumerated() {
                let t = DispatchTime.now().uptimeNanoseconds
                kernel(src.pointer, dst.pointer, n)
                if round > 0 { times[i].append(Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9) }
            }
        }
        return times.map { bytes / BenchSupport.median($0) / 1e9 }
    }
}

/// A mixed-precision benchmark that cannot run as asked, one line naming the option or the variant.
extension AMPBenchmark.Report {
    /// The human report.
    public var text: String {
        func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
        let c = configuration
        let dims = c.dims.map(String.init).joined(separator: "→")
        func pct(_ v: Double) -> String { f(v / memcpyGBPerSecond * 100, 0) + "% of memcpy" }
        var lines = [
            "bench-amp: MLP \(dims) (GELU, cross-entropy, Adam), batch \(c.batchSize), \(parameters) parameters; \(c.steps) timed rounds after \(c.warmup) warm-up",
            "machine:   \(host): \(cpu); \(blasThreads) BLAS thread(s); \(date)",
            "kernels:   \((c.kernelFloats * 4) >> 20) MiB float32 → reduced → float32, out of place, median of \(c.kernelRepeats); dispatched to \(kernel)",
            "  memcpy             \(f(memcpyGBPerSecond)) GB/s",
            "  float16  (\(kernel)) \(f(float16GBPerSecond)) GB/s  (\(pct(float16GBPerSecond)))",
            "  bfloat16 (\(kernel)) \(f(bfloat16GBPerSecond)) GB/s  (\(pct(bfloat16GBPerSecond)))",
            "  float16  (portable)  \(f(float16PortableGBPerSecond)) GB/s  (\(pct(float16PortableGBPerSecond)))",
            "  bfloat16 (portable)  \(f(bfloat16PortableGBPerSecond)) GB/s  (\(pct(bfloat16PortableGBPerSecond)))",
            "bfloat16:  products \(bfloat16Products)",
            "steps:     median ms per step (forward + backward + unscale/clip/Adam)",
        ]
        for s in steps {
            let scale = s.lossScale.map { ", loss scale \(Int($0))" } ?? ""
            lines.append("  \(s.name.padding(toLength: 17, withPad: " ", startingAt: 0)) \(f(s.stepMs, 2)) ms  ×\(f(s.ratio, 3)) of float32"
                         + "  (forward \(f(s.forwardMs, 2)), backward \(f(s.backwardMs, 2)), optimizer \(f(s.optimizerMs, 2)));"
                         + " \(s.skipped) skipped\(scale)")
        }
        return lines.joined(separator: "\n")
    }
}
