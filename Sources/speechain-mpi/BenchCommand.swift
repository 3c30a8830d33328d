import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi bench`: the scaling benchmark (ScalingBenchmark), alone or under mpirun/srun; rank 0 prints
/// the report and writes bench.json and bench.txt under --result_path.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time the training step of the benchmark MLP and compare it with sgemm and MPI_Allreduce.",
        discussion: """
            Trains MLP 512→2048→2048→2048→512 (GELU, cross-entropy, Adam, batch 64 per rank, synthetic data) for \
            --steps steps after --warmup and reports from rank 0: samples/s; the time per step split into compute, \
            waiting, gradient synchronisation and optimizer; allreduce calls and bytes; the achieved GFLOP/s next to \
            a cblas_sgemm peak measured in the same run; and a raw MPI_Allreduce of the same buffer. Run it under \
            mpirun or srun for several ranks. One BLAS thread per rank unless --blas_threads is given.
            """)

    @Option(help: ArgumentHelp("Timed training steps (multiple of --accum_grad).", valueName: "n")) var steps: Text = "32"
    @Option(help: ArgumentHelp("Untimed steps before (multiple of --accum_grad).", valueName: "n")) var warmup: Text = "4"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Rows per rank and step (weak scaling). (default: 64)", valueName: "rows"))
    var batchSize: Text?
    @Option(name: .customLong("global_batch"), help: ArgumentHelp("Rows per step over all ranks (strong scaling; overrides --batch_size).", valueName: "rows"))
    var globalBatch: Text?
    @Option(name: .customLong("accum_grad"), help: ArgumentHelp("Steps whose gradients accumulate before one update. (default: 1)", valueName: "n"))
    var accumGrad: Text?
    @Option(help: ArgumentHelp("Layer widths, input,hidden…,classes.", valueName: "w,w,…")) var dims: Text = "512,2048,2048,2048,512"
    @Option(help: "Adam's learning rate. (default: 0.001)") var lr: Text?
    @Option(help: "Seed of the weights and the synthetic data. (default: 0)") var seed: Text?
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads per rank.", valueName: "n")) var blasThreads: Text = "1"
    @Option(name: .customLong("gemm_size"), help: ArgumentHelp("Side of the square sgemm measuring the peak.", valueName: "n"))
    var gemmSize: Text = "1024"
    @Option(name: .customLong("sync_chunk"), help: ArgumentHelp("Floats per MPI_Allreduce in the gradient synchronisation (default: the communicator's).", valueName: "n"))
    var syncChunk: Text?
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for rank 0's bench.json and bench.txt.", valueName: "dir"))
    var resultPath: String?

    /// Values stay text until `run`, so that a bad one is reported in one line rather than a usage screen.
    struct Text: ExpressibleByArgument, ExpressibleByStringLiteral {
        let text: String
        init(argument: String) { text = argument }
        init(stringLiteral value: String) { text = value }
        var defaultValueDescription: String { text }
    }

    /// --batch_size, --accum_grad, --lr and --seed are also options of the root command, and argument-parser hands
    /// a name both declare to the parent even after `bench`; so their text is read from the command line here.
    private func given(_ parsed: Text?, _ option: String, default value: String) -> Text {
        if let parsed { return parsed }
        let args = CommandLine.arguments
        guard let start = args.firstIndex(of: "bench") else { return Text(argument: value) }
        var found: String?
        var i = start + 1
        while i < args.count {
            if args[i] == "--\(option)", i + 1 < args.count { found = args[i + 1]; i += 2; continue }
            if args[i].hasPrefix("--\(option)=") { found = String(args[i].dropFirst(option.count + 3)) }
            i += 1
        }
        return Text(argument: found ?? value)
    }

    private func integer(_ value: Text, _ option: String) throws -> Int {
        guard let v = Int(value.text.trimmingCharacters(in: .whitespaces)) else {
            throw BenchmarkError.invalid(option: option, reason: "must be an integer, found '\(value.text)'")
        }
        return v
    }

    func makeConfiguration() throws -> ScalingBenchmark.Configuration {
        var c = ScalingBenchmark.Configuration()
        c.steps = try integer(steps, "steps")
        c.warmup = try integer(warmup, "warmup")
        c.batchSize = try integer(given(batchSize, "batch_size", default: "64"), "batch_size")
        c.globalBatch = try globalBatch.map { try integer($0, "global_batch") }
        c.accumGrad = try integer(given(accumGrad, "accum_grad", default: "1"), "accum_grad")
        let widths = dims.text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard widths.allSatisfy({ $0 != nil }) else {
            throw BenchmarkError.invalid(option: "dims", reason: "must be comma-separated integers like 512,2048,512, found '\(dims.text)'")
        }
        c.dims = widths.map { $0! }
        let lrText = given(lr, "lr", default: "0.001").text, seedText = given(seed, "seed", default: "0").text
        guard let rate = Double(lrText) else { throw BenchmarkError.invalid(option: "lr", reason: "must be a number, found '\(lrText)'") }
        c.lr = rate
        guard let s = UInt64(seedText) else { throw BenchmarkError.invalid(option: "seed", reason: "must be a non-negative integer, found '\(seedText)'") }
        c.seed = s
        c.gemmSize = try integer(gemmSize, "gemm_size")
        c.syncChunk = try syncChunk.map { try integer($0, "sync_chunk") }
        let threads = try integer(blasThreads, "blas_threads")
        guard threads >= 1 else { throw BenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
        return c
    }

    func run() throws {
        // Local checks first; then the ranks agree, so that bad input ends every rank with its own line.
        var config: ScalingBenchmark.Configuration?
        var problem: Error?
        do { config = try makeConfiguration() } catch { problem = error }
        var communicator: Communicator = LocalCommunicator()
        do {
            if MPICommunicator.launchedByMPI { communicator = try MPICommunicator() }
        } catch {
            fail(error, communicator)
        }
        if let threads = Int(blasThreads.text), threads >= 1 { BLAS.setThreadCount(threads) }
        if problem == nil {
            do { try config?.validate(worldSize: communicator.size) } catch { problem = error }
        }
        let allReady: Bool
        do { allReady = try communicator.allreduceMin(problem == nil ? 1 : 0) == 1 } catch { fail(error, communicator) }
        guard allReady, let config else {
            if let problem { report(problem, communicator) }
            (communicator as? MPICommunicator)?.finalize()
            throw ExitCode(1)
        }
        do {
            let root = communicator.isRoot
            let result = try ScalingBenchmark.run(config, communicator: communicator) { if root { print($0) } }
            if root {
                print(result.text)
                if let resultPath { try write(result, to: URL(fileURLWithPath: resultPath, isDirectory: true)) }
            }
            try communicator.barrier()
        } catch {
            fail(error, communicator)
        }
        (communicator as? MPICommunicator)?.finalize()
    }

    private func write(_ result: ScalingBenchmark.Report, to dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try encoder.encode(result).write(to: dir.appendingPathComponent("bench.json"), options: .atomic)
        try Data((result.text + "\n").utf8).write(to: dir.appendingPathComponent("bench.txt"), options: .atomic)
    }

    private func report(_ error: Error, _ communicator: Communicator) {
        let who = communicator.size > 1 ? "rank \(communicator.rank): " : ""
        FileHandle.standardError.write(Data("speechain-mpi bench: error: \(who)\(error)\n".utf8))
    }

    private func fail(_ error: Error, _ communicator: Communicator) -> Never {
        report(error, communicator)
        if communicator.size > 1 { communicator.abort(code: 1) }
        Foundation.exit(1)
    }
}
