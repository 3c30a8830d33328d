import Foundation
import Testing
@testable import SpeechainMPI

/// `speechain-mpi bench`, run as a user would (alone and under mpirun), on a small MLP: the counts it reports
/// against the closed forms of the workload, and its errors.
@Suite(.serialized) struct BenchCommandTests {
    static let dims = [24, 48, 40, 6]
    /// P = Σ in·out + out
    static let parameters = 24 * 48 + 48 + 48 * 40 + 40 + 40 * 6 + 6
    /// forward 2·Σ in·out, backward 2·Σ in·out (dW) + 2·Σ_{i>0} in·out (dx)
    static let flopsPerSample = Double(2 * (24 * 48 + 48 * 40 + 40 * 6) * 2 + 2 * (48 * 40 + 40 * 6))

    /// Runs the bench (under `mpirun -np` when np is given) with a deadline, and reads rank 0's bench.json.
    func bench(np: Int?, _ args: [String]) throws -> (ClusterSupport.Result, ScalingBenchmark.Report?) {
        let dir = try TestResources.scratchDirectory("bench")
        let all = ["bench", "--dims", Self.dims.map(String.init).joined(separator: ","), "--gemm_size", "64",
                   "--result_path", dir.path] + args
        let env = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"]
        let r: ClusterSupport.Result
        if let np {
            r = try ClusterSupport.run(MPIRun.mpirun.path, ["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + all,
                                       environment: env, timeout: 120)
        } else {
            r = try ClusterSupport.run(Executable.url.path, all, environment: env, timeout: 120)
        }
        #expect(!r.timedOut)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = (try? Data(contentsOf: dir.appendingPathComponent("bench.json"))).flatMap {
            try? decoder.decode(ScalingBenchmark.Report.self, from: $0)
        }
        return (r, report)
    }

    @Test func workloadFormulas() {
        #expect(ScalingBenchmark.Workload.parameterCount(dims: Self.dims) == Self.parameters)
        #expect(ScalingBenchmark.Workload.flopsPerSample(dims: Self.dims) == Self.flopsPerSample)
        // the benchmark MLP: 10,492,416 parameters, 60.8 MFLOP per sample
        #expect(ScalingBenchmark.Workload.parameterCount(dims: [512, 2048, 2048, 2048, 512]) == 10_492_416)
    }

    @Test func aloneItTrainsAndCommunicatesNothing() throws {
        let (r, report) = try bench(np: nil, ["--steps", "6", "--warmup", "2", "--batch_size", "16"])
        #expect(r.status == 0, "\(r.stderr)")
        let b = try #require(report, "\(r.stdout)")
        #expect(b.worldSize == 1 && b.nodes == 1 && b.blasThreads == 1)
        #expect(b.parameters == Self.parameters && b.flopsPerSample == Self.flopsPerSample)
        #expect(b.batchPerRank == 16 && b.globalBatch == 16)
        #expect(b.allreduceCalls == 0 && b.allreduceBytes == 0 && b.syncOverRaw == nil)
        // samples/s and the GFLOP/s are two views of one median update time
        #expect(abs(b.samplesPerSecond * Self.flopsPerSample / 1e9 - b.achievedGflopsPerRank) <= 1e-6 * b.achievedGflopsPerRank)
        #expect(abs(b.samplesPerSecond * b.updateMs / 1e3 - 16) <= 1e-6 * 16)
        #expect(b.sgemmPeakGflopsPerRank > 0 && b.computeMs > 0 && b.optimizerMs > 0)
        for line in ["throughput:", "step:", "allreduce:", "compute:", "memory:"] { #expect(r.stdout.contains(line)) }
    }

    @Test(arguments: [1, 4])
    func underMPIRunOneAllreducePerUpdate(accumGrad: Int) throws {
        let steps = 4 * accumGrad
        let (r, report) = try bench(np: 2, ["--steps", "\(steps)", "--warmup", "\(accumGrad)", "--accum_grad", "\(accumGrad)",
                                            "--batch_size", "8"])
        #expect(r.status == 0, "\(r.stderr)")
        let b = try #require(report, "\(r.stdout)")
        #expect(b.worldSize == 2 && b.configuration.accumGrad == accumGrad)
        let updates = steps / accumGrad
        #expect(b.allreduceCalls == updates)
        #expect(b.allreduceBytes == updates * Self.parameters * 4)
        #expect(b.mpiCalls == updates)
        #expect(b.globalBatch == 16)
        #expect(abs(b.samplesPerSecond * b.updateMs / 1e3 - Double(16 * accumGrad)) <= 1e-6 * Double(16 * accumGrad))
        #expect(b.rawAllreduceMs > 0 && b.syncOverRaw != nil)
        // only rank 0 reports
        #expect(r.stdout.components(separatedBy: "throughput:").count == 2)
    }

    @Test func strongScalingSplitsTheGlobalBatch() throws {
        let (r, report) = try bench(np: 2, ["--steps", "2", "--warmup", "0", "--global_batch", "24", "--sync_chunk", "100"])
        #expect(r.status == 0, "\(r.stderr)")
        let b = try #require(report)
        #expect(b.batchPerRank == 12 && b.globalBatch == 24)
        // averaging in chunks of 100 floats: ⌈P / 100⌉ MPI calls per update
        #expect(b.mpiCalls == 2 * ((Self.parameters + 99) / 100))
    }

    @Test(arguments: [
        (["--steps", "6", "--accum_grad", "4"], "--steps 6 is not a multiple of --accum_grad 4"),
        (["--dims", "512"], "--dims needs at least"),
        (["--dims", "512,x,10"], "--dims must be comma-separated integers"),
        (["--steps", "many"], "--steps must be an integer, found 'many'"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--lr", "0"], "--lr must be a positive number, found 0.0"),
    ])
    func badArgumentsAreOneLine(arguments: [String], message: String) throws {
        let (r, _) = try bench(np: nil, arguments)
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("speechain-mpi bench: error: ") && lines[0].contains(message), "\(r.stderr)")
    }

    @Test func badArgumentsEndEveryRank() throws {
        // 10 rows do not divide over 4 ranks: every rank says so and exits, none waits in a collective
        let (r, _) = try bench(np: 4, ["--global_batch", "10"])
        #expect(r.status != 0)
        for rank in 0..<4 {
            #expect(r.stderr.contains("speechain-mpi bench: error: rank \(rank): --global_batch 10 rows do not divide evenly over 4 ranks"), "\(r.stderr)")
        }
    }

    @Test func helpListsTheBenchAndTheTrainingOptions() throws {
        let bench = try Executable.run(["bench", "--help"])
        #expect(bench.status == 0)
        for option in ["--steps", "--warmup", "--batch_size", "--global_batch", "--accum_grad", "--dims", "--lr", "--seed",
                       "--blas_threads", "--gemm_size", "--sync_chunk", "--result_path"] {
            #expect(bench.stdout.contains(option), "bench --help lacks \(option)")
        }
        // the root still documents its own options and names the subcommand
        let root = try Executable.run(["--help"])
        #expect(root.status == 0)
        for option in ["--num_epochs", "--batch_size", "--accum_grad", "--train_result_path", "bench"] {
            #expect(root.stdout.contains(option), "--help lacks \(option)")
        }
    }
}

/// `speechain-mpi bench-asr`: the ARASR workload of scripts/bench/asr_torch.py, its report, and bad options.
@Suite struct BenchASRCommandTests {
    func run(_ args: [String]) throws -> ClusterSupport.Result {
        try ClusterSupport.run(Executable.url.path, ["bench-asr"] + args, environment: ["OPENBLAS_NUM_THREADS": "1"], timeout: 300)
    }

    @Test func aSmallRunReportsTheStepAndItsProducts() throws {
        let dir = try TestResources.scratchDirectory("bench-asr")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try run(["--batch_size", "2", "--frames", "40", "--tokens", "3", "--steps", "2", "--warmup", "1", "--result_path", dir.path])
        #expect(r.status == 0, "\(r.output)")
        let decoder = JSONDecoder(); decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = try decoder.decode(ASRBenchmark.Report.self, from: Data(contentsOf: dir.appendingPathComponent("bench_asr.json")))
        // the workload's model: the same parameter count as the PyTorch twin's state dict (asr_torch.py prints it)
        #expect(report.parameters == 9_762_624)
        #expect(report.configuration.batchSize == 2 && report.configuration.frames == 40 && report.configuration.tokens == 3)
        #expect(report.stepMs > 0 && report.forwardMs > 0 && report.backwardMs > 0 && report.stepMs >= report.forwardMs + report.backwardMs)
        // the conv prenet's second convolution alone: 2 utterances × 9 × 19 outputs × 256 × 256·9 MACs, three times
        let conv2 = 3 * 2 * Double(2 * 9 * 19 * 256 * 256 * 9) / 1e9
        #expect(report.gemmGflop > conv2 && report.gemmGflop < 3 * conv2, "\(report.gemmGflop) GFLOP, conv2 \(conv2)")
        #expect(report.gemmMs > 0 && report.gemmMs < report.stepMs && report.firstLoss.isFinite)
    }

    @Test(arguments: [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--frames", "5"], "--frames must be >= 7"),
        (["--tokens", "x"], "--tokens must be an integer, found 'x'"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
    ])
    func badArgumentsAreOneLine(arguments: [String], message: String) throws {
        let r = try run(arguments)
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("speechain-mpi bench-asr: error: ") && lines[0].contains(message), "\(r.stderr)")
    }
}
