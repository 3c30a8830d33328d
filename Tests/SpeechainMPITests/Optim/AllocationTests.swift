import MallocCounter
#if DEBUG
let optimizedBuild = false
#else
let optimizedBuild = true
#endif
import Testing
@testable import SpeechainMPI

/// Once warmed up, a training step — forward, backward, clipping, the optimizer, the scaler, the timer — allocates
/// nothing on the heap. Checked in optimised builds (scripts/test.sh runs the suite in release): unoptimised code
/// allocates boxes and closure contexts the optimiser removes, which says nothing about the shipped binary.
@Suite(.enabled(if: optimizedBuild, "allocation counts are only meaningful in optimised builds"))
struct AllocationTests {
    @Test(arguments: ["Adam", "AdamW", "SGD", "Adagrad", "RMSprop"])
    func aWarmTrainingStepAllocatesNothing(optimType: String) throws {
        let data = try ReferenceData(directory: "torch_refs/adam_noam_accum4")
        let model = try MLPClassifier(encoder: .init(dims: [16, 32, 32], activation: "GELU"), decoder: .init(dims: [32, 16, 4]))
        let schedulers = try OptimSchedulers.make(.map([
            "enc": .map(["type": "noam.NoamLr", "conf": .map(["optim_type": .string(optimType), "updated_modules": "encoder", "warmup_steps": 3])]),
            "dec": .map(["type": "cosine.WarmupCosineLr", "conf": .map(["optim_type": "Adam", "updated_modules": "decoder", "total_steps": 100,
                                                                       "optim_conf": .map(["amsgrad": true])])]),
        ]), model: model, options: TrainingOptions(accumGrad: 2, gradClip: 1, gradNormType: 3, useAMP: true))
        let batches = (0..<8).map { data.batch($0) }
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let context = ForwardContext(training: true)
        let timer = StepTimer()
        var reports: [StepReport] = []   // the runner's path: every backward, then every update, reports reused
        func step(_ n: Int) throws {
            try model.forward(batches[(n - 1) % 8], context: context, losses: &losses, metrics: &metrics)
            try OptimSchedulers.step(schedulers, losses: losses, into: &reports, timer: timer, stepNum: n, epochNum: 1)
        }
        for n in 1...4 { try step(n) }
        malloc_counter_start()
        for n in 5...20 { try step(n) }
        let allocations = malloc_counter_stop()
        #expect(allocations == 0)
        // the counter itself works: an array that grows allocates
        malloc_counter_start()
        var grow: [Int] = []
        for i in 0..<100 { grow.append(i) }
        #expect(malloc_counter_stop() > 0 && grow.count == 100)
    }

    /// ar_asr.ARASR (conv prenet with BatchNorm, encoder, CTC, decoder, dropout) at its largest batch, then at smaller
    /// ones: once the buffers have the largest shape, steps of that or smaller shapes allocate nothing. One BLAS
    /// thread, as when the ranks fill the cores (OpenBLAS's thread hand-off allocates otherwise), and widths that
    /// are multiples of 16 (head size 16, FFN 32): OpenBLAS 0.3.21's small-matrix kernel for untransposed products
    /// mallocs on every call when n is not a multiple of 16 (attention's P·V with head size 8, 24 or 36 — the
    /// recipe's 144/4 — but not 16, 32 or 64; a Linear's dx with 24 inputs; scripts/bench/small_gemm_mallocs.c
    /// shows it), which is OpenBLAS's allocation, not ours.
    @Test func aWarmASRStepAllocatesNothing() throws {
        let threads = BLAS.threadCount
        BLAS.setThreadCount(1)
        defer { BLAS.setThreadCount(threads) }
        var c = ASRBenchmark.Configuration()
        c.batchSize = 3; c.frames = 240; c.tokens = 6; c.dModel = 32; c.heads = 2; c.ffn = 32; c.convDims = [16, 16]
        c.encoderLayers = 2; c.decoderLayers = 1
        let large = ASRBenchmark.makeBatch(c)
        c.batchSize = 2; c.frames = 200; c.tokens = 4
        let small = ASRBenchmark.makeBatch(c)
        var p = ARASR.Parts(vocabSize: 32)
        p.featDim = 80; p.convDims = [16, 16]; p.convBatchNorm = true; p.lnrDims = [32]
        for conf in [\ARASR.Parts.encoder, \ARASR.Parts.decoder] {
            p[keyPath: conf].dModel = 32; p[keyPath: conf].heads = 2; p[keyPath: conf].ffnSize = 32; p[keyPath: conf].layers = 1
        }
        let model = try ARASR(p, seed: 3)
        let schedulers = try OptimSchedulers.make(.map([
            "main": .map(["type": "noam.NoamLr", "conf": .map(["optim_type": "Adam", "warmup_steps": 3])]),
        ]), model: model, options: TrainingOptions(gradClip: 1))
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let context = ForwardContext(training: true)
        let timer = StepTimer()
        var reports: [StepReport] = []
        func step(_ n: Int) throws {
            try model.forward(n % 3 == 0 ? large : small, context: context, losses: &losses, metrics: &metrics)
            try OptimSchedulers.step(schedulers, losses: losses, into: &reports, timer: timer, stepNum: n, epochNum: 1)
        }
        for n in 1...3 { try step(n) }
        malloc_counter_start()
        for n in 4...12 { try step(n) }
        let allocations = malloc_counter_stop()
        #expect(allocations == 0)
        #expect(losses["loss"]!.isFinite)
    }

    /// The same under use_amp's emulation (float16 and bfloat16, with layer norm and dropout in the graph): the
    /// rounding workspaces are sized once, in the warm-up.
    @Test(arguments: ReducedPrecision.allCases)
    func aWarmMixedPrecisionStepAllocatesNothing(amp: ReducedPrecision) throws {
        let data = try ReferenceData(directory: "torch_refs/adam_noam_accum4")
        var encoder = MLPClassifier.ModuleConf(dims: [16, 32, 32], activation: "GELU")
        encoder.layerNorm = true
        encoder.dropout = 0.1
        let model = try MLPClassifier(encoder: encoder, decoder: .init(dims: [32, 16, 4]))
        let scheduler = try OptimScheduler(type: "noam.NoamLr", conf: ["optim_type": "Adam", "warmup_steps": 3], model: model,
                                           options: TrainingOptions(accumGrad: 2, useAMP: true, ampDType: amp))
        let batches = (0..<8).map { data.batch($0) }
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let context = ForwardContext(training: true, amp: amp)
        let timer = StepTimer()
        func step(_ n: Int) throws {
            try model.forward(batches[(n - 1) % 8], context: context, losses: &losses, metrics: &metrics)
            try scheduler.step(losses: losses, timer: timer, stepNum: n, epochNum: 1)
        }
        for n in 1...4 { try step(n) }
        malloc_counter_start()
        for n in 5...20 { try step(n) }
        #expect(malloc_counter_stop() == 0)
    }
}
