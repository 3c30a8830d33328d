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
