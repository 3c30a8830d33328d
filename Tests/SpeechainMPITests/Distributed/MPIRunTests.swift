import Foundation
import Testing
@testable import SpeechainMPI

/// Runs the built executable under real `mpirun` and checks what rank 0 wrote.
enum MPIRun {
    static let mpirun = URL(fileURLWithPath: "/usr/bin/mpirun")

    struct Outcome {
        let result: Executable.Result
        let directory: URL
        let seconds: Double
        func summary() throws -> TrainingSummaryFile {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return try decoder.decode(TrainingSummaryFile.self, from: Data(contentsOf: directory.appendingPathComponent("summary.json")))
        }
        func weights() throws -> [String: [Float]] {
            let file = try Safetensors.read(contentsOf: directory.appendingPathComponent("model.safetensors"))
            return Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, $0.values) })
        }
    }

    /// `np` = nil runs the executable alone (no mpirun).
    static func run(np: Int?, _ arguments: [String]) throws -> Outcome {
        let dir = try TestResources.scratchDirectory("mpi")
        let args = arguments + ["--train_result_path", dir.path, "--report_per_steps", "1000"]
        let start = Date()
        let r: Executable.Result
        if let np {
            r = try Executable.run(["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + args,
                                   environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                                                 "OMPI_MCA_odls_base_sigkill_timeout": "0"],
                                   executable: mpirun)
        } else {
            r = try Executable.run(args)
        }
        return Outcome(result: r, directory: dir, seconds: Date().timeIntervalSince(start))
    }
}

/// The fields of summary.json the tests read.
struct TrainingSummaryFile: Decodable {
    struct Counts: Decodable { let updates: Int; let skipped: Int; let allreduceCalls: Int; let allreduceBytes: Int }
    let worldSize: Int
    let mpiInitialized: Bool?
    let steps: Int
    let stepsPerEpoch: Int
    let schedulers: [String: Counts]
    let parameterChecksums: [String]
}

func maxRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Double {
    var worst = 0.0
    for (name, x) in a {
        guard let y = b[name], y.count == x.count else { return .infinity }
        let scale = Double(y.map { abs($0) }.max() ?? 1)
        let d = zip(x, y).map { Double(abs($0 - $1)) }.max() ?? 0
        worst = max(worst, d / max(scale, 1e-12))
    }
    return worst
}

@Suite(.serialized) struct MPIRunTests {
    static let parameterCount = 16 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4

    @Test func twoRanksOfBatchBEqualOneRankOfBatch2B() throws {
        let common = ["--num_epochs", "2", "--seed", "3"]
        let one = try MPIRun.run(np: nil, common + ["--batch_size", "32"])
        let two = try MPIRun.run(np: 2, common + ["--batch_size", "16"])
        #expect(one.result.status == 0 && two.result.status == 0, "\(two.result.stderr)")
        #expect(try one.summary().steps == two.summary().steps)
        let diff = maxRelativeDifference(try two.weights(), try one.weights())
        #expect(diff <= 1e-5, "2×16 vs 1×32 differ by \(diff)")
    }

    /// The 1/world size of the average is applied in whichever pass comes first after the allreduce sum — unscaling
    /// (use_amp), clipping (grad_clip > 0) or the optimizer step — so every combination is checked.
    @Test(arguments: [
        [String](), ["--grad_clip", "0"], ["--use_amp", "true"], ["--use_amp", "true", "--grad_clip", "0"],
        ["--use_amp", "true", "--amp_dtype", "bfloat16", "--set", "grad_scaler.enabled=false", "--grad_clip", "0"],
        ["--optim_type", "SGD", "--lr", "0.05", "--grad_clip", "0"],
    ])
    func oneRankWithAccumGrad2EqualsTwoRanksWithAccumGrad1(extra: [String]) throws {
        let common = ["--num_epochs", "2", "--seed", "5", "--batch_size", "16"] + extra
        let one = try MPIRun.run(np: nil, common + ["--accum_grad", "2"])
        let two = try MPIRun.run(np: 2, common + ["--accum_grad", "1"])
        #expect(one.result.status == 0 && two.result.status == 0, "\(one.result.stderr) \(two.result.stderr)")
        #expect(try one.summary().schedulers["main"]?.updates == two.summary().schedulers["main"]?.updates)
        let diff = maxRelativeDifference(try two.weights(), try one.weights())
        #expect(diff <= 1e-5, "accum 2 × 1 rank vs accum 1 × 2 ranks differ by \(diff) with \(extra)")
    }

    @Test(arguments: [1, 4])
    func allreducesEqualUpdatesNotMicroSteps(accumGrad: Int) throws {
        let run = try MPIRun.run(np: 2, ["--num_epochs", "1", "--batch_size", "16", "--accum_grad", "\(accumGrad)"])
        #expect(run.result.status == 0, "\(run.result.stderr)")
        let s = try run.summary()
        let main = try #require(s.schedulers["main"])
        // 1024 rows / (16 × 2 ranks) = 32 micro-steps; one allreduce of the whole gradient per update.
        #expect(s.steps == 32)
        #expect(main.updates == 32 / accumGrad)
        #expect(main.allreduceCalls == main.updates)
        #expect(main.allreduceBytes == main.updates * Self.parameterCount * 4)
    }

    @Test func fourRanksEndBitIdenticalAndOnlyRankZeroWrites() throws {
        let run = try MPIRun.run(np: 4, ["--num_epochs", "1", "--batch_size", "8", "--check_consistency_every", "5"])
        #expect(run.result.status == 0, "\(run.result.stderr)")
        let s = try run.summary()
        #expect(s.worldSize == 4)
        #expect(s.parameterChecksums.count == 4)
        #expect(Set(s.parameterChecksums).count == 1, "\(s.parameterChecksums)")
        let files = try FileManager.default.contentsOfDirectory(atPath: run.directory.path).sorted()
        #expect(files == ["checkpoint.safetensors", "exp_cfg.yaml", "figures", "model.safetensors", "models", "steps.jsonl", "summary.json",
                          "tensorboard", "train.log", "train_cfg.yaml", "train_data_cfg.yaml"])
        // rank 0 alone prints: every epoch line once, and nothing on stderr
        #expect(run.result.stdout.components(separatedBy: "epoch 1:").count == 2)
        #expect(run.result.stderr.isEmpty, "\(run.result.stderr)")
        let log = try String(contentsOf: run.directory.appendingPathComponent("train.log"), encoding: .utf8)
        #expect(log.contains("epoch 1:") && log.contains("data parallel over 4 ranks"))
    }

    /// Ranks 1–3 run with a file-size limit of 0 (`ulimit -f 0`): any byte they write to a file kills them with
    /// SIGXFSZ and the job fails. (Pipes are not files, and the TCP transport replaces the shared-memory one,
    /// whose segments are files.) The same limit on rank 0 too fails the job: the check can see a write.
    @Test func ranksOtherThanZeroWriteNoFile() throws {
        func job(limitRankZero: Bool) throws -> (Executable.Result, URL) {
            let dir = try TestResources.scratchDirectory("writers")
            let limited = limitRankZero ? "true" : "[ \"$OMPI_COMM_WORLD_RANK\" != 0 ]"
            let script = "if \(limited); then ulimit -f 0; fi; exec \"$0\" \"$@\""
            let r = try Executable.run(["-np", "4", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp",
                                        "/bin/sh", "-c", script, Executable.url.path, "--num_epochs", "2", "--batch_size", "8",
                                        "--report_per_steps", "1000", "--train_result_path", dir.path],
                                       environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                       executable: MPIRun.mpirun)
            return (r, dir)
        }
        let (ok, dir) = try job(limitRankZero: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("checkpoint.safetensors").path))
        let (refused, dir2) = try job(limitRankZero: true)
        defer { try? FileManager.default.removeItem(at: dir2) }
        #expect(refused.status != 0)
    }

    @Test func withoutMPIRunNothingIsCommunicated() throws {
        let run = try MPIRun.run(np: nil, ["--num_epochs", "1"])
        #expect(run.result.status == 0)
        let s = try run.summary()
        #expect(s.worldSize == 1)
        #expect(s.mpiInitialized == false, "a world of one must not initialise MPI")
        #expect(s.schedulers["main"]?.allreduceCalls == 0)
        #expect(s.schedulers["main"]?.allreduceBytes == 0)
    }

    @Test(arguments: ["throw", "kill"])
    func aFailingRankEndsTheJobQuickly(mode: String) throws {
        let run = try MPIRun.run(np: 2, ["--num_epochs", "50", "--fail_rank", "1", "--fail_step", "7", "--fail_mode", mode])
        #expect(run.result.status != 0)
        #expect(run.seconds < 10, "took \(run.seconds) s")
        #expect(run.result.stderr.contains("rank 1"), "\(run.result.stderr)")
        if mode == "throw" {
            #expect(run.result.stderr.contains("speechain-mpi: error: rank 1: injected failure on rank 1 at step 7"))
        }
        // no checkpoint or summary pretends the run finished
        #expect(!FileManager.default.fileExists(atPath: run.directory.appendingPathComponent("summary.json").path))
    }

    /// Rank 1's first parameter is nudged at step 10 (`--fail_mode perturb`); the gradients stay averaged, so the
    /// replicas differ from then on. check_consistency_every 4 ends the job at the first check after it (update
    /// 12), naming it on every rank; every 0 still refuses the result at the end (update 32), writing no final
    /// model or summary; without the nudge both runs pass.
    @Test(arguments: [4, 0])
    func aDivergedRankIsCaughtByTheConsistencyCheck(every: Int) throws {
        let common = ["--num_epochs", "1", "--batch_size", "16", "--check_consistency_every", "\(every)"]
        let clean = try MPIRun.run(np: 2, common)
        #expect(clean.result.status == 0, "\(clean.result.stderr)")
        let run = try MPIRun.run(np: 2, common + ["--fail_rank", "1", "--fail_step", "10", "--fail_mode", "perturb"])
        #expect(run.result.status != 0)
        let update = every == 4 ? 12 : 32
        let line = "ranks diverged: after update \(update) the parameters differ across ranks (2 distinct checksums over 2 ranks)"
        #expect(run.result.stderr.contains(line), "\(run.result.stderr)")
        #expect(run.seconds < 30)
        #expect(!FileManager.default.fileExists(atPath: run.directory.appendingPathComponent("summary.json").path))
        #expect(!FileManager.default.fileExists(atPath: run.directory.appendingPathComponent("model.safetensors").path))
    }

    @Test func badConfigFailsOnEveryRankWithOneLine() throws {
        let run = try MPIRun.run(np: 2, ["--optim_type", "Adamax"])
        #expect(run.result.status != 0)
        for rank in 0..<2 {
            #expect(run.result.stderr.contains("speechain-mpi: error: rank \(rank): unknown optim_type 'Adamax'"), "\(run.result.stderr)")
        }
        #expect(run.seconds < 10)
    }
}
