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

    @Option(help: ArgumentHelp("Timed training steps (multiple of --accum_grad).", valueName: "n")) var steps: OptionText = "32"
    @Option(help: ArgumentHelp("Untimed steps before (multiple of --accum_grad).", valueName: "n")) var warmup: OptionText = "4"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Rows per rank and step (weak scaling). (default: 64)", valueName: "rows"))
    var batchSize: OptionText?
    @Option(name: .customLong("global_batch"), help: ArgumentHelp("Rows per step over all ranks (strong scaling; overrides --batch_size).", valueName: "rows"))
    var globalBatch: OptionText?
    @Option(name: .customLong("accum_grad"), help: ArgumentHelp("Steps whose gradients accumulate before one update. (default: 1)", valueName: "n"))
    var accumGrad: OptionText?
    @Option(help: ArgumentHelp("Layer widths, input,hidden…,classes.", valueName: "w,w,…")) var dims: OptionText = "512,2048,2048,2048,512"
    @Option(help: "Adam's learning rate. (default: 0.001)") var lr: OptionText?
    @Option(help: "Seed of the weights and the synthetic data. (default: 0)") var seed: OptionText?
    @Option(name: .customLong("shared_memory"), help: ArgumentHelp("Sum gradients in a shared-memory window on each node, then by MPI between nodes (true), or by MPI_Allreduce alone (false).", valueName: "bool"))
    var sharedMemory: OptionText = "true"
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads per rank.", valueName: "n")) var blasThreads: OptionText = "1"
    @Option(name: .customLong("gemm_size"), help: ArgumentHelp("Side of the square sgemm measuring the peak.", valueName: "n"))
    var gemmSize: OptionText = "1024"
    @Option(name: .customLong("sync_chunk"), help: ArgumentHelp("Floats per MPI_Iallreduce in the gradient synchronisation (default: the communicator's).", valueName: "n"))
    var syncChunk: OptionText?
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for rank 0's bench.json and bench.txt.", valueName: "dir"))
    var resultPath: String?

    func makeConfiguration() throws -> ScalingBenchmark.Configuration {
        var c = ScalingBenchmark.Configuration()
        c.steps = try OptionText.integer(steps, "steps")
        c.warmup = try OptionText.integer(warmup, "warmup")
        c.batchSize = try OptionText.integer(batchSize.orArgument("batch_size", after: "bench", default: "64"), "batch_size")
        c.globalBatch = try globalBatch.map { try OptionText.integer($0, "global_batch") }
        c.accumGrad = try OptionText.integer(accumGrad.orArgument("accum_grad", after: "bench", default: "1"), "accum_grad")
        let widths = dims.text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard widths.allSatisfy({ $0 != nil }) else {
            throw BenchmarkError.invalid(option: "dims", reason: "must be comma-separated integers like 512,2048,512, found '\(dims.text)'")
        }
        c.dims = widths.map { $0! }
        let lrText = lr.orArgument("lr", after: "bench", default: "0.001").text, seedText = seed.orArgument("seed", after: "bench", default: "0").text
        guard let rate = Double(lrText) else { throw BenchmarkError.invalid(option: "lr", reason: "must be a number, found '\(lrText)'") }
        c.lr = rate
        guard let s = UInt64(seedText) else { throw BenchmarkError.invalid(option: "seed", reason: "must be a non-negative integer, found '\(seedText)'") }
        c.seed = s
        c.gemmSize = try OptionText.integer(gemmSize, "gemm_size")
        c.syncChunk = try syncChunk.map { try OptionText.integer($0, "sync_chunk") }
        c.sharedMemory = try OptionText.boolean(sharedMemory, "shared_memory")
        let threads = try OptionText.integer(blasThreads, "blas_threads")
        guard threads >= 1 else { throw BenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
        return c
    }

    func run() throws {
        let status = Launcher.run(program: "speechain-mpi bench", setUp: { communicator in
            if let threads = Int(blasThreads.text), threads >= 1 { BLAS.setThreadCount(threads) }
            let config = try makeConfiguration()
            try config.validate(worldSize: communicator.size)
            return config
        }, work: { config, communicator in
            let root = communicator.isRoot
            let result = try ScalingBenchmark.run(config, communicator: communicator) { if root { print($0) } }
            if root {
                print(result.text)
                if let resultPath { try writeReport(result, text: result.text, name: "bench", to: URL(fileURLWithPath: resultPath, isDirectory: true)) }
            }
            try communicator.barrier()
        })
        if status != 0 { throw ExitCode(status) }
    }
}
