import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi bench-asr`: the ASR training-step benchmark (ASRBenchmark), alone or under mpirun/srun; rank 0
/// prints the report and writes bench.json and bench.txt under --result_path.
struct BenchASRCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-asr",
        abstract: "Time training steps of ar_asr.ARASR at the workload of scripts/bench/asr_torch.py (its PyTorch twin), on one rank or many.",
        discussion: """
            Features [16, 300, 80] (16 utterances × 3 s), 40 tokens, vocabulary 32, conv prenet [256, 256] → 256, \
            6 encoder and 3 decoder layers (4 heads, FFN 1024), CTC weight 0.3, Adam; prints the median update split \
            into compute (forward + backward), wait for the slowest rank, gradient synchronisation and optimizer, and \
            the time inside sgemm against the 1024³ sgemm peak. Under mpirun or srun every rank trains the same model \
            on its own batches, gradients allreduced as the trainer does. --min_frames below --frames varies the \
            batch lengths (per rank and step with --lengths random, fixed per rank with --lengths by_rank), so that \
            the ranks wait for the slowest. One BLAS thread per rank unless --blas_threads is given.
            """)

    @Option(help: ArgumentHelp("Timed steps (multiple of --accum_grad).", valueName: "n")) var steps: OptionText = "10"
    @Option(help: ArgumentHelp("Untimed steps before (multiple of --accum_grad).", valueName: "n")) var warmup: OptionText = "2"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Utterances per rank and step (weak scaling). (default: 16)", valueName: "n"))
    var batchSize: OptionText?
    @Option(name: .customLong("global_batch"), help: ArgumentHelp("Utterances per step over all ranks (strong scaling; overrides --batch_size).", valueName: "n"))
    var globalBatch: OptionText?
    @Option(name: .customLong("accum_grad"), help: ArgumentHelp("Steps whose gradients accumulate before one update. (default: 1)", valueName: "n"))
    var accumGrad: OptionText?
    @Option(help: ArgumentHelp("Feature frames of the longest batch (10 ms each).", valueName: "n")) var frames: OptionText = "300"
    @Option(name: .customLong("min_frames"), help: ArgumentHelp("Frames of the shortest batch (default: --frames, every batch full length).", valueName: "n"))
    var minFrames: OptionText?
    @Option(help: ArgumentHelp("How lengths vary below --frames: random (per rank and step) or by_rank (fixed, rank 0 shortest).", valueName: "mode"))
    var lengths: OptionText = "random"
    @Option(help: ArgumentHelp("Tokens per sentence of --frames frames (shorter utterances get proportionally fewer).", valueName: "n")) var tokens: OptionText = "40"
    @Option(name: .customLong("d_model"), help: ArgumentHelp("Transformer width.", valueName: "n")) var dModel: OptionText = "256"
    @Option(help: ArgumentHelp("Attention heads.", valueName: "n")) var heads: OptionText = "4"
    @Option(help: ArgumentHelp("Feed-forward width.", valueName: "n")) var ffn: OptionText = "1024"
    @Option(name: .customLong("encoder_layers"), help: ArgumentHelp("Encoder layers.", valueName: "n")) var encoderLayers: OptionText = "6"
    @Option(name: .customLong("decoder_layers"), help: ArgumentHelp("Decoder layers.", valueName: "n")) var decoderLayers: OptionText = "3"
    @Option(name: .customLong("conv_dims"), help: ArgumentHelp("The conv prenet's two channel counts.", valueName: "c,c")) var convDims: OptionText = "256,256"
    @Option(help: "Adam's learning rate. (default: 0.001)") var lr: OptionText?
    @Option(help: "Seed of the weights and the synthetic data. (default: 0)") var seed: OptionText?
    @Option(name: .customLong("shared_memory"), help: ArgumentHelp("Sum gradients in a shared-memory window on each node, then by MPI between nodes (true), or by MPI_Allreduce alone (false).", valueName: "bool"))
    var sharedMemory: OptionText = "true"
    @Option(name: .customLong("amp_dtype"), help: ArgumentHelp("Train under autocast in this dtype (use_amp, the default GradScaler): float16 or bfloat16; none for float32. (default: none)", valueName: "dtype"))
    var ampDType: OptionText?
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads per rank.", valueName: "n")) var blasThreads: OptionText = "1"
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for rank 0's bench.json and bench.txt.", valueName: "dir"))
    var resultPath: String?

    func makeConfiguration() throws -> ASRBenchmark.Configuration {
        var c = ASRBenchmark.Configuration()
        c.steps = try OptionText.integer(steps, "steps")
        c.warmup = try OptionText.integer(warmup, "warmup")
        // the root command declares --batch_size, --accum_grad, --lr and --seed too: read them from after the
        // subcommand (see orArgument)
        c.batchSize = try OptionText.integer(batchSize.orArgument("batch_size", after: "bench-asr", default: "16"), "batch_size")
        c.globalBatch = try globalBatch.map { try OptionText.integer($0, "global_batch") }
        c.accumGrad = try OptionText.integer(accumGrad.orArgument("accum_grad", after: "bench-asr", default: "1"), "accum_grad")
        c.frames = try OptionText.integer(frames, "frames")
        c.minFrames = try minFrames.map { try OptionText.integer($0, "min_frames") }
        c.lengths = lengths.text
        c.tokens = try OptionText.integer(tokens, "tokens")
        c.dModel = try OptionText.integer(dModel, "d_model")
        c.heads = try OptionText.integer(heads, "heads")
        c.ffn = try OptionText.integer(ffn, "ffn")
        c.encoderLayers = try OptionText.integer(encoderLayers, "encoder_layers")
        c.decoderLayers = try OptionText.integer(decoderLayers, "decoder_layers")
        let dims = convDims.text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard dims.allSatisfy({ $0 != nil }) else {
            throw BenchmarkError.invalid(option: "conv_dims", reason: "must be comma-separated integers like 256,256, found '\(convDims.text)'")
        }
        c.convDims = dims.map { $0! }
        let lrText = lr.orArgument("lr", after: "bench-asr", default: "0.001").text
        let seedText = seed.orArgument("seed", after: "bench-asr", default: "0").text
        guard let rate = Double(lrText) else { throw BenchmarkError.invalid(option: "lr", reason: "must be a number, found '\(lrText)'") }
        c.lr = rate
        guard let s = UInt64(seedText) else { throw BenchmarkError.invalid(option: "seed", reason: "must be a non-negative integer, found '\(seedText)'") }
        c.seed = s
        c.sharedMemory = try OptionText.boolean(sharedMemory, "shared_memory")
        // the root command declares --amp_dtype too (see orArgument)
        let amp = ampDType.orArgument("amp_dtype", after: "bench-asr", default: "none").text
        if amp != "none" {
            guard let p = ReducedPrecision(rawValue: amp) else {
                throw BenchmarkError.invalid(option: "amp_dtype", reason: "must be none, float16 or bfloat16, found '\(amp)'")
            }
            c.ampDType = p
        }
        let threads = try OptionText.integer(blasThreads, "blas_threads")
        guard threads >= 1 else { throw BenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
        return c
    }

    func run() throws {
        let status = Launcher.run(program: "speechain-mpi bench-asr", setUp: { communicator in
            let config = try makeConfiguration()
            try config.validate(worldSize: communicator.size)
            BLAS.setThreadCount(Int(blasThreads.text.trimmingCharacters(in: .whitespaces))!)
            return config
        }, work: { config, communicator in
            let root = communicator.isRoot
            let result = try ASRBenchmark.run(config, communicator: communicator) { if root { print($0) } }
            if root {
                print(result.text)
                if let resultPath { try writeReport(result, text: result.text, name: "bench", to: URL(fileURLWithPath: resultPath, isDirectory: true)) }
            }
            try communicator.barrier()
        })
        if status != 0 { throw ExitCode(status) }
    }
}
