import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi bench-amp`: the mixed-precision benchmark (AMPBenchmark), one process.
struct BenchAMPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-amp",
        abstract: "Time a training step with use_amp off, float16 and bfloat16, and the rounding kernels against memcpy.",
        discussion: """
            Trains three copies of MLP 512→2048→2048→2048→512 (GELU, cross-entropy, Adam, batch 64, synthetic data) \
            side by side, one step of each per round, and prints the median step time of each with its ratio to \
            float32; then the float32→float16→float32 and float32→bfloat16→float32 rounding kernels' bandwidth next \
            to memcpy's, measured in the same run. One BLAS thread unless --blas_threads is given.
            """)

    @Option(help: ArgumentHelp("Timed rounds (one step of each variant per round).", valueName: "n")) var steps: OptionText = "15"
    @Option(help: ArgumentHelp("Untimed rounds before.", valueName: "n")) var warmup: OptionText = "3"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Rows per step.", valueName: "rows")) var batchSize: OptionText?
    @Option(help: ArgumentHelp("Layer widths, input,hidden…,classes.", valueName: "w,w,…")) var dims: OptionText = "512,2048,2048,2048,512"
    @Option(help: "Adam's learning rate.") var lr: OptionText?
    @Option(help: "Seed of the weights and the synthetic data.") var seed: OptionText?
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads.", valueName: "n")) var blasThreads: OptionText = "1"
    @Option(name: .customLong("kernel_mib"), help: ArgumentHelp("Size of the kernel measurement's source buffer.", valueName: "MiB"))
    var kernelMiB: OptionText = "64"
    @Option(name: .customLong("kernel_repeats"), help: ArgumentHelp("Timed passes of each kernel.", valueName: "n")) var kernelRepeats: OptionText = "15"
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for bench_amp.json and bench_amp.txt.", valueName: "dir"))
    var resultPath: String?

    func makeConfiguration() throws -> (AMPBenchmark.Configuration, threads: Int) {
        var c = AMPBenchmark.Configuration()
        c.steps = try OptionText.integer(steps, "steps")
        c.warmup = try OptionText.integer(warmup, "warmup")
        c.batchSize = try OptionText.integer(batchSize.orArgument("batch_size", after: "bench-amp", default: "64"), "batch_size")
        let widths = dims.text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard widths.allSatisfy({ $0 != nil }) else {
            throw BenchmarkError.invalid(option: "dims", reason: "must be comma-separated integers like 512,2048,512, found '\(dims.text)'")
        }
        c.dims = widths.map { $0! }
        let lrText = lr.orArgument("lr", after: "bench-amp", default: "0.001").text
        guard let rate = Double(lrText) else { throw BenchmarkError.invalid(option: "lr", reason: "must be a number, found '\(lrText)'") }
        c.lr = rate
        let seedText = seed.orArgument("seed", after: "bench-amp", default: "0").text
        guard let s = UInt64(seedText) else { throw BenchmarkError.invalid(option: "seed", reason: "must be a non-negative integer, found '\(seedText)'") }
        c.seed = s
        let mib = try OptionText.integer(kernelMiB, "kernel_mib")
        guard mib >= 1, mib <= 16384 else { throw BenchmarkError.invalid(option: "kernel_mib", reason: "must be in 1...16384, found \(mib)") }
        c.kernelFloats = mib << 18
        c.kernelRepeats = try OptionText.integer(kernelRepeats, "kernel_repeats")
        let threads = try OptionText.integer(blasThreads, "blas_threads")
        guard threads >= 1 else { throw BenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
        try c.validate()
        return (c, threads)
    }

    func run() throws {
        do {
            let (config, threads) = try makeConfiguration()
            BLAS.setThreadCount(threads)
            let result = try AMPBenchmark.run(config) { print($0) }
            print(result.text)
            if let resultPath {
                try writeReport(result, text: result.text, name: "bench_amp", to: URL(fileURLWithPath: resultPath, isDirectory: true))
            }
        } catch {
            Launcher.report(error, nil, "speechain-mpi bench-amp")
            throw ExitCode(1)
        }
    }
}
