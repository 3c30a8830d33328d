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

    @Option(help: ArgumentHelp("Timed rounds (one step of each variant per round).", valueName: "n")) var steps: Text = "15"
    @Option(help: ArgumentHelp("Untimed rounds before.", valueName: "n")) var warmup: Text = "3"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Rows per step.", valueName: "rows")) var batchSize: Text = "64"
    @Option(help: ArgumentHelp("Layer widths, input,hidden…,classes.", valueName: "w,w,…")) var dims: Text = "512,2048,2048,2048,512"
    @Option(help: "Adam's learning rate.") var lr: Text = "0.001"
    @Option(help: "Seed of the weights and the synthetic data.") var seed: Text = "0"
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads.", valueName: "n")) var blasThreads: Text = "1"
    @Option(name: .customLong("kernel_mib"), help: ArgumentHelp("Size of the kernel measurement's source buffer.", valueName: "MiB"))
    var kernelMiB: Text = "64"
    @Option(name: .customLong("kernel_repeats"), help: ArgumentHelp("Timed passes of each kernel.", valueName: "n")) var kernelRepeats: Text = "15"
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for bench_amp.json and bench_amp.txt.", valueName: "dir"))
    var resultPath: String?

    /// Values stay text until `run`, so that a bad one is reported in one line rather than a usage screen.
    struct Text: ExpressibleByArgument, ExpressibleByStringLiteral {
        let text: String
        init(argument: String) { text = argument }
        init(stringLiteral value: String) { text = value }
        var defaultValueDescription: String { text }
    }

    private func integer(_ value: Text, _ option: String) throws -> Int {
        guard let v = Int(value.text.trimmingCharacters(in: .whitespaces)) else {
            throw AMPBenchmarkError.invalid(option: option, reason: "must be an integer, found '\(value.text)'")
        }
        return v
    }

    func makeConfiguration() throws -> (AMPBenchmark.Configuration, threads: Int) {
        var c = AMPBenchmark.Configuration()
        c.steps = try integer(steps, "steps")
        c.warmup = try integer(warmup, "warmup")
        c.batchSize = try integer(batchSize, "batch_size")
        let widths = dims.text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard widths.allSatisfy({ $0 != nil }) else {
            throw AMPBenchmarkError.invalid(option: "dims", reason: "must be comma-separated integers like 512,2048,512, found '\(dims.text)'")
        }
        c.dims = widths.map { $0! }
        guard let rate = Double(lr.text) else { throw AMPBenchmarkError.invalid(option: "lr", reason: "must be a number, found '\(lr.text)'") }
        c.lr = rate
        guard let s = UInt64(seed.text) else { throw AMPBenchmarkError.invalid(option: "seed", reason: "must be a non-negative integer, found '\(seed.text)'") }
        c.seed = s
        let mib = try integer(kernelMiB, "kernel_mib")
        guard mib >= 1, mib <= 16384 else { throw AMPBenchmarkError.invalid(option: "kernel_mib", reason: "must be in 1...16384, found \(mib)") }
        c.kernelFloats = mib << 18
        c.kernelRepeats = try integer(kernelRepeats, "kernel_repeats")
        let threads = try integer(blasThreads, "blas_threads")
        guard threads >= 1 else { throw AMPBenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
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
                let dir = URL(fileURLWithPath: resultPath, isDirectory: true)
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.keyEncodingStrategy = .convertToSnakeCase
                try encoder.encode(result).write(to: dir.appendingPathComponent("bench_amp.json"), options: .atomic)
                try Data((result.text + "\n").utf8).write(to: dir.appendingPathComponent("bench_amp.txt"), options: .atomic)
            }
        } catch {
            FileHandle.standardError.write(Data("speechain-mpi bench-amp: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
