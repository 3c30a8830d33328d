import Foundation
import Testing
@testable import SpeechainMPI

/// `speechain-mpi bench`, run as a user would (alone and under mpirun), on a small MLP: the counts it reports
/// against the closed forms of the workload, and its errors.
/// The built executable with `arguments`, alone (`np` nil) or under `mpirun -np np` (oversubscribed, unbound), one
/// BLAS thread per rank; expects it to finish within `timeout` seconds.
func launchBench(np: Int?, _ arguments: [String], timeout: Double) throws -> ClusterSupport.Result {
    let env = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"]
    let r: ClusterSupport.Result
    if let np {
        r = try ClusterSupport.run(MPIRun.mpirun.path, ["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + arguments,
                                   environment: env, timeout: timeout)
    } else {
        r = try ClusterSupport.run(Executable.url.path, arguments, environment: env, timeout: timeout)
    }
    #expect(!r.timedOut)
    return r
}

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
        let r = try launchBench(np: np, all, timeout: 120)
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
        // one rank, batches of 16: with our own kernels the backward summed every gradient's squares for the norm
        #expect(b.gradNormRecordedValues == (Float32Kernels.selected == .own ? Self.parameters : 0))
        #expect(r.stdout.contains("gradient values summed in the backward"))
        for line in ["throughput:", "step:", "allreduce:", "compute:", "memory:"] { #expect(r.stdout.contains(line)) }
    }

    @Test(arguments: [(1, true), (4, true), (1, false), (4, false)])
    func underMPIRunOneAllreducePerUpdate(accumGrad: Int, sharedMemory: Bool) throws {
        let steps = 4 * accumGrad
        let (r, report) = try bench(np: 2, ["--steps", "\(steps)", "--warmup", "\(accumGrad)", "--accum_grad", "\(accumGrad)",
                                            "--batch_size", "8", "--shared_memory", "\(sharedMemory)"])
        #expect(r.status == 0, "\(r.stderr)")
        let b = try #require(report, "\(r.stdout)")
        #expect(b.worldSize == 2 && b.configuration.accumGrad == accumGrad)
        let updates = steps / accumGrad
        #expect(b.allreduceCalls == updates)
        #expect(b.allreduceBytes == updates * Self.parameters * 4)
        // in shared memory no MPI_Iallreduce at all
        #expect(b.mpiCalls == (sharedMemory ? 0 : updates))
        #expect(b.gradientSum == (sharedMemory ? "summed in shared memory (2 ranks on one node)" : "summed by MPI_Allreduce (shared memory switched off)"))
        #expect(b.globalBatch == 16)
        #expect(abs(b.samplesPerSecond * b.updateMs / 1e3 - Double(16 * accumGrad)) <= 1e-6 * Double(16 * accumGrad))
        #expect(b.rawAllreduceMs > 0 && b.syncOverRaw != nil)
        // the allreduce changes the gradients after the backward: the norm reads them all
        #expect(b.gradNormRecordedValues == 0)
        // only rank 0 reports
        #expect(r.stdout.components(separatedBy: "throughput:").count == 2)
    }

    @Test func strongScalingSplitsTheGlobalBatch() throws {
        let (r, report) = try bench(np: 2, ["--steps", "2", "--warmup", "0", "--global_batch", "24", "--sync_chunk", "100",
                                            "--shared_memory", "false"])
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

/// `speechain-mpi bench-asr`: the ARASR workload of scripts/bench/asr_torch.py, alone and under mpirun (a tiny
/// model there, so that a run takes seconds), its report, and bad options.
@Suite(.serialized) struct BenchASRCommandTests {
    /// A model small enough for seconds per run: d_model 32, 2 heads, FFN 64, 1 + 1 layers, conv [8, 8].
    static let tiny = ["--d_model", "32", "--heads", "2", "--ffn", "64", "--encoder_layers", "1", "--decoder_layers", "1",
                       "--conv_dims", "8,8", "--tokens", "4"]

    /// Runs bench-asr (under `mpirun -np` when np is given) and reads rank 0's bench.json.
    func run(np: Int? = nil, _ args: [String]) throws -> (ClusterSupport.Result, ASRBenchmark.Report?) {
        let dir = try TestResources.scratchDirectory("bench-asr")
        defer { try? FileManager.default.removeItem(at: dir) }
        let all = ["bench-asr", "--result_path", dir.path] + args
        let r = try launchBench(np: np, all, timeout: 300)
        let decoder = JSONDecoder(); decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = (try? Data(contentsOf: dir.appendingPathComponent("bench.json"))).flatMap {
            try? decoder.decode(ASRBenchmark.Report.self, from: $0)
        }
        return (r, report)
    }

    @Test func aSmallRunReportsTheStepAndItsProducts() throws {
        let (r, report) = try run(["--batch_size", "2", "--frames", "40", "--tokens", "3", "--steps", "2", "--warmup", "1"])
        #expect(r.status == 0, "\(r.output)")
        let b = try #require(report, "\(r.output)")
        // the workload's model: the same parameter count as the PyTorch twin's state dict (asr_torch.py prints it)
        #expect(b.parameters == 9_762_624)
        #expect(b.workload == "asr" && b.worldSize == 1 && b.nodes == 1)
        #expect(b.configuration.batchSize == 2 && b.configuration.frames == 40 && b.configuration.tokens == 3)
        // alone: every batch full length, nothing to wait for, nothing communicated
        #expect(b.configuration.minFrames == 40 && b.meanFrames == 40)
        #expect(b.waitMs == 0 && b.syncMs == 0 && b.allreduceCalls == 0 && b.syncOverRaw == nil && b.parameterChecksums.count == 1)
        #expect(b.stepMs > 0 && b.forwardMs > 0 && b.backwardMs > 0 && b.stepMs >= b.forwardMs + b.backwardMs)
        #expect(abs(b.utterancesPerSecond * b.updateMs / 1e3 - 2) <= 1e-9 * 2)
        // the conv prenet's second convolution alone: 2 utterances × 9 × 19 outputs × 256 × 256·9 MACs, three times
        let conv2 = 3 * 2 * Double(2 * 9 * 19 * 256 * 256 * 9) / 1e9
        #expect(b.gemmGflop > conv2 && b.gemmGflop < 3 * conv2, "\(b.gemmGflop) GFLOP, conv2 \(conv2)")
        #expect(b.gemmMs > 0 && b.gemmMs < b.stepMs && b.firstLoss.isFinite)
        for line in ["step:", "gemm:", "compute", "wait", "products:"] { #expect(r.stdout.contains(line)) }
        // the products by shape: slowest first, a part of the products' time, the second convolution's three products
        // among them — forward W [256, 2304]·cols [2304, 9·19] per utterance, so 2 calls per update
        let shapes = b.gemmByShape
        #expect(!shapes.isEmpty && shapes.count <= 10)
        #expect(zip(shapes, shapes.dropFirst()).allSatisfy { $0.msPerUpdate >= $1.msPerUpdate })
        #expect(shapes.map(\.msPerUpdate).reduce(0, +) <= b.gemmMs * (1 + 1e-9))
        // (with our own convolution kernels, `Float32Kernels.own`, all three are recorded as "… (own kernel)")
        let own = Float32Kernels.selected == .own ? " (own kernel)" : ""
        let conv2Forward = shapes.first { $0.shape == "256×171×2304 NN" + own }
        #expect(conv2Forward?.callsPerUpdate == 2, "\(shapes.map(\.shape))")
        #expect(shapes.contains { $0.shape == "256×2304×171 NT" + own } && shapes.contains { $0.shape == "2304×171×256 TN" + own })
    }

    /// --amp_dtype trains under autocast; the report says which dtype and how its products ran (bfloat16 natively
    /// where the CPU has AVX512_BF16), and float32 without it.
    @Test(arguments: [ReducedPrecision?.none, .float16, .bfloat16])
    func autocastRunsAndIsReported(amp: ReducedPrecision?) throws {
        let (r, report) = try run(Self.tiny + ["--batch_size", "2", "--frames", "40", "--steps", "2", "--warmup", "1"]
                                  + (amp.map { ["--amp_dtype", $0.rawValue] } ?? []))
        #expect(r.status == 0, "\(r.output)")
        let b = try #require(report, "\(r.output)")
        let expected = switch amp {
        case nil: "float32"
        case .float16: "float16, emulated products"
        case .bfloat16: BF16GEMM.isSupported ? "bfloat16, native (AVX512_BF16) products" : "bfloat16, emulated products"
        }
        #expect(b.precision == expected)
        #expect(b.configuration.ampDType == amp)
        #expect(r.stdout.contains("; \(expected); "), "\(r.stdout)")
        #expect(b.firstLoss.isFinite && b.lastLoss.isFinite)
    }

    /// Two ranks, each its own batches of random lengths (16…48 frames, drawn per rank and step), accum_grad 2:
    /// one allreduce of the whole gradient per update, and the replicas end bit-identical.
    @Test func underMPIRunTheReplicasStayIdentical() throws {
        let (r, report) = try run(np: 2, Self.tiny + ["--global_batch", "6", "--frames", "48", "--min_frames", "16",
                                                      "--accum_grad", "2", "--steps", "6", "--warmup", "2"])
        #expect(r.status == 0, "\(r.output)")
        let b = try #require(report, "\(r.output)")
        #expect(b.worldSize == 2 && b.batchPerRank == 3 && b.globalBatch == 6 && b.configuration.accumGrad == 2)
        #expect(b.allreduceCalls == 3 && b.allreduceBytes == 3 * b.parameters * 4)
        #expect(b.parameterChecksums.count == 2 && Set(b.parameterChecksums).count == 1, "\(b.parameterChecksums)")
        #expect(b.perRankWaitMs.count == 2 && b.perRankWaitMs.allSatisfy { $0 >= 0 } && b.waitMs >= 0)
        #expect(b.perRankComputeMs.count == 2 && b.computeSpreadMs > 0 && b.syncMs > 0 && b.rawAllreduceMs > 0)
        // the ranks' batches differ: lengths between 16 and 48, not all the longest
        #expect(b.perRankFrames.allSatisfy { $0 >= 16 && $0 <= 48 } && b.meanFrames < 48, "\(b.perRankFrames)")
        #expect(abs(b.samplesPerSecond * b.updateMs / 1e3 - 12) <= 1e-9 * 12)
        #expect(r.stdout.contains("replicas:  identical"))
        // only rank 0 reports
        #expect(r.stdout.components(separatedBy: "gemm:").count == 2)
    }

    /// A fixed imbalance (--lengths by_rank: rank 0 of 2 gets 40 frames, rank 1 400) against equal lengths (400
    /// on both): the shorter rank now waits for the longer one, about the difference of their compute.
    @Test func theShorterRankWaitsForTheLonger() throws {
        // Everything is compared inside one run: both ranks see the same load from whatever else shares the cores
        // (a comparison with a second, equal-length run made earlier failed when other suites' ranks came and went).
        let common = Self.tiny + ["--batch_size", "4", "--frames", "400", "--steps", "5", "--warmup", "1"]
        let (r, skewedReport) = try run(np: 2, common + ["--min_frames", "40", "--lengths", "by_rank"])
        #expect(r.status == 0, "\(r.output)")
        let skewed = try #require(skewedReport)
        #expect(skewed.perRankFrames == [40, 400])
        let short = skewed.perRankComputeMs[0], long = skewed.perRankComputeMs[1]
        #expect(long > 2 * short, "compute \(skewed.perRankComputeMs)")
        // rank 0 waits for most of the compute it lacks, over and above whatever rank 1 waits
        #expect(skewed.perRankWaitMs[0] > skewed.perRankWaitMs[1] + 0.5 * (long - short),
                "wait \(skewed.perRankWaitMs); compute \(skewed.perRankComputeMs)")
        #expect(Set(skewed.parameterChecksums).count == 1)
    }

    @Test(arguments: [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--frames", "5"], "--frames must be >= 7"),
        (["--tokens", "x"], "--tokens must be an integer, found 'x'"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--min_frames", "301"], "--min_frames must be between 7 and --frames 300, found 301"),
        (["--lengths", "sorted"], "--lengths must be random or by_rank, found 'sorted'"),
        (["--heads", "3"], "--heads must be >= 1 and divide --d_model 256, found 3"),
        (["--steps", "3", "--accum_grad", "2"], "--steps 3 is not a multiple of --accum_grad 2"),
        (["--conv_dims", "8,x"], "--conv_dims must be comma-separated integers"),
        (["--amp_dtype", "fp8"], "--amp_dtype must be none, float16 or bfloat16, found 'fp8'"),
    ])
    func badArgumentsAreOneLine(arguments: [String], message: String) throws {
        let (r, _) = try run(arguments)
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("speechain-mpi bench-asr: error: ") && lines[0].contains(message), "\(r.stderr)")
    }

    @Test func badArgumentsEndEveryRank() throws {
        // 3 utterances do not divide over 2 ranks: every rank says so and exits, none waits in a collective
        let (r, _) = try run(np: 2, ["--global_batch", "3"])
        #expect(r.status != 0)
        for rank in 0..<2 {
            #expect(r.stderr.contains("speechain-mpi bench-asr: error: rank \(rank): --global_batch 3 utterances do not divide evenly over 2 ranks"), "\(r.stderr)")
        }
        // a bad value every rank reads the same way: one line per rank, the same
        let (r2, _) = try run(np: 2, ["--lengths", "sorted"])
        #expect(r2.status != 0)
        let lines = r2.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(lines.count == 2 && lines.allSatisfy { $0.contains("--lengths must be random or by_rank, found 'sorted'") }, "\(r2.stderr)")
    }
}
