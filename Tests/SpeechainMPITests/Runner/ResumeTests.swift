import Foundation
import Testing
@testable import SpeechainMPI

/// Kill a run (SIGKILL) mid-epoch, during a checkpoint write and again, resume each time, and end bit-identical to
/// a run that was never interrupted — at world size 1 and under mpirun -np 2.
@Suite(.serialized) struct ResumeTests {
    /// 512 rows of batch 16 per rank: 32 steps per epoch at one rank, 16 at two.
    static func common(_ dir: URL) -> [String] {
        ["--num_epochs", "4", "--report_per_steps", "5", "--batch_size", "16", "--set", "data_cfg.train.conf.count=512",
         "--best_model_selection", "valid accuracy max 2", "--train_result_path", dir.path]
    }

    func launch(np: Int?, _ args: [String]) throws -> Executable.Result {
        guard let np else { return try Executable.run(args) }
        return try Executable.run(["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + args,
                                  environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                  executable: MPIRun.mpirun)
    }

    func checkpointEpoch(_ dir: URL) throws -> Int {
        let file = try Safetensors.read(contentsOf: dir.appendingPathComponent(Checkpoint.fileName))
        let json = try #require(file.metadata["speechain_checkpoint"])
        return try JSONDecoder().decode(CheckpointState.self, from: Data(json.utf8)).epoch
    }

    func bytes(_ url: URL) throws -> Data { try Data(contentsOf: url) }

    @Test(arguments: [nil, 2] as [Int?])
    func killedAndResumedRunsEndBitIdentical(np: Int?) throws {
        let straight = try TestResources.scratchDirectory("straight"), broken = try TestResources.scratchDirectory("broken")
        defer { for d in [straight, broken] { try? FileManager.default.removeItem(at: d) } }
        let stepsPerEpoch = np == nil ? 32 : 16
        let r0 = try launch(np: np, Self.common(straight))
        #expect(r0.status == 0, "\(r0.stderr)")

        // 1. SIGKILL in the middle of epoch 2 (rank 1 under mpirun: the job dies with it)
        let failRank = np == nil ? 0 : 1
        let r1 = try launch(np: np, Self.common(broken) + ["--fail_rank", "\(failRank)", "--fail_step", "\(stepsPerEpoch + 7)", "--fail_mode", "kill"])
        #expect(r1.status != 0)
        #expect(try checkpointEpoch(broken) == 1)

        // 2. resume, then SIGKILL halfway through writing the checkpoint of epoch 3: the epoch-2 one stays valid
        let r2 = try launch(np: np, Self.common(broken) + ["--resume", "--kill_during_checkpoint", "3"])
        #expect(r2.status != 0)
        #expect(try checkpointEpoch(broken) == 2)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: broken.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.count == 1, "a half-written temporary file is what the kill left: \(leftovers)")

        // 3. resume, SIGKILL early in epoch 4
        let r3 = try launch(np: np, Self.common(broken) + ["--resume", "--fail_rank", "\(failRank)", "--fail_step", "\(3 * stepsPerEpoch + 3)", "--fail_mode", "kill"])
        #expect(r3.status != 0)
        #expect(try checkpointEpoch(broken) == 3)

        // 4. resume to the end
        let r4 = try launch(np: np, Self.common(broken) + ["--resume"])
        #expect(r4.status == 0, "\(r4.stderr)")
        #expect(r4.stdout.contains("resumed from checkpoint.safetensors: 3 epochs"))

        for file in ["model.safetensors", "steps.jsonl", "models/latest.safetensors", "models/2_valid_accuracy_average.safetensors"] {
            #expect(try bytes(straight.appendingPathComponent(file)) == bytes(broken.appendingPathComponent(file)), "\(file) differs")
        }
        let leftoversAfter = try FileManager.default.contentsOfDirectory(atPath: broken.path).filter { $0.contains(".tmp-") }
        #expect(leftoversAfter.isEmpty)
        // the counts (updates, allreduce calls and bytes) and the epoch history add up across the resumed runs
        struct Summary: Decodable { let schedulers: [String: TrainingSummaryFile.Counts]; let history: [EpochRecord]; let steps: Int }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let a = try decoder.decode(Summary.self, from: bytes(straight.appendingPathComponent("summary.json")))
        let b = try decoder.decode(Summary.self, from: bytes(broken.appendingPathComponent("summary.json")))
        #expect(a.steps == b.steps && a.steps == 4 * stepsPerEpoch)
        for (name, c) in a.schedulers {
            let d = try #require(b.schedulers[name])
            #expect(c.updates == d.updates && c.allreduceCalls == d.allreduceCalls && c.allreduceBytes == d.allreduceBytes)
            #expect(c.allreduceCalls == (np == nil ? 0 : c.updates))
        }
        #expect(a.history.map(\.train) == b.history.map(\.train) && a.history.map(\.valid) == b.history.map(\.valid))
    }

    /// The hardest place to stop: accum_grad 3 with 32 (np 1) or 16 (np 2) steps per epoch, so every epoch ends
    /// inside an accumulation window (2 or 1 micro-steps pending, a different partial sum on each rank); float16 AMP
    /// with growth_interval 3, so the GradScaler's growth tracker is mid-count at the checkpoint and decides when
    /// the loss scale next doubles; dropout 0.3, whose masks are drawn from (seed, epoch, rank). Killed in epoch 2
    /// (SIGKILL, the last rank), resumed from epoch 1's checkpoint across the epoch boundary: the per-step records
    /// (losses, lr, grad norms, loss scales, skips) and every model file equal the uninterrupted run's bytes.
    @Test(arguments: [nil, 2] as [Int?])
    func resumedInsideAnAccumulationWindowUnderAMPWithDropout(np: Int?) throws {
        let straight = try TestResources.scratchDirectory("accum-straight"), broken = try TestResources.scratchDirectory("accum-broken")
        defer { for d in [straight, broken] { try? FileManager.default.removeItem(at: d) } }
        let stepsPerEpoch = np == nil ? 32 : 16
        #expect(stepsPerEpoch % 3 != 0, "the epoch must end inside an accumulation window")
        func args(_ dir: URL) -> [String] {
            ["--num_epochs", "3", "--report_per_steps", "4", "--batch_size", "16", "--accum_grad", "3", "--use_amp", "true",
             "--set", "data_cfg.train.conf.count=512", "--set", "grad_scaler.growth_interval=3",
             "--set", "train_cfg.model.model_conf.module_conf.encoder.dropout=0.3", "--train_result_path", dir.path]
        }
        let r0 = try launch(np: np, args(straight))
        #expect(r0.status == 0, "\(r0.stderr)")
        let failRank = np == nil ? 0 : 1
        let r1 = try launch(np: np, args(broken) + ["--fail_rank", "\(failRank)", "--fail_step", "\(stepsPerEpoch + 5)", "--fail_mode", "kill"])
        #expect(r1.status != 0)
        #expect(try checkpointEpoch(broken) == 1)
        if np != nil {
            // the checkpoint holds rank 1's own partial sum beside rank 0's
            let file = try Safetensors.read(contentsOf: broken.appendingPathComponent(Checkpoint.fileName))
            let names = Set(file.tensors.map(\.name))
            #expect(names.contains("gradients") && names.contains("gradients.rank1"))
            let g0 = try #require(file.tensors.first { $0.name == "gradients" }).values
            let g1 = try #require(file.tensors.first { $0.name == "gradients.rank1" }).values
            #expect(g0.contains { $0 != 0 } && g1.contains { $0 != 0 } && g0 != g1)
        }
        let r2 = try launch(np: np, args(broken) + ["--resume"])
        #expect(r2.status == 0, "\(r2.stderr)")
        // the run really scaled up and skipped: the loss scale changed within the run, after the resume too
        let records = try StepRecords.read(in: straight)
        let scales = records.compactMap { $0.lossScale.values.first }
        #expect(records.count == 3 * stepsPerEpoch && scales.count == records.count)
        #expect(Set(scales.suffix(stepsPerEpoch)).count >= 2, "the loss scale should change in the last epoch: \(Set(scales))")
        for file in ["model.safetensors", "steps.jsonl", "models/latest.safetensors"] {
            #expect(try bytes(straight.appendingPathComponent(file)) == bytes(broken.appendingPathComponent(file)), "\(file) differs")
        }
    }

    /// A checkpoint taken inside an accumulation window at np 2 (batch 16 per rank) resumed at np 1 (batch 32: the
    /// same global batch): rank 0 takes both ranks' partial sums, scaled to the new world, so the run continues
    /// as the np 2 run does — not bit for bit (the sums change order), within float32 rounding. Without the other
    /// rank's partial sum, or with rank 0's counted twice, the weights end far apart.
    @Test func aCheckpointInsideAnAccumulationWindowResumesAtAnotherWorldSize() throws {
        let straight = try TestResources.scratchDirectory("world-straight"), moved = try TestResources.scratchDirectory("world-moved")
        defer { for d in [straight, moved] { try? FileManager.default.removeItem(at: d) } }
        func args(_ dir: URL, batch: Int) -> [String] {
            ["--num_epochs", "2", "--report_per_steps", "100", "--batch_size", "\(batch)", "--accum_grad", "3",
             "--optim_type", "SGD", "--lr", "0.05", "--set", "data_cfg.train.conf.count=512", "--train_result_path", dir.path]
        }
        let r0 = try launch(np: 2, args(straight, batch: 16))
        #expect(r0.status == 0, "\(r0.stderr)")
        let r1 = try launch(np: 2, args(moved, batch: 16) + ["--fail_rank", "1", "--fail_step", "20", "--fail_mode", "kill"])
        #expect(r1.status != 0)
        #expect(try checkpointEpoch(moved) == 1)
        let r2 = try launch(np: nil, args(moved, batch: 32) + ["--resume"])
        #expect(r2.status == 0, "\(r2.stderr)")
        func weights(_ dir: URL) throws -> [String: [Float]] {
            Dictionary(uniqueKeysWithValues: try Safetensors.read(contentsOf: dir.appendingPathComponent("model.safetensors")).tensors.map { ($0.name, $0.values) })
        }
        let difference = maxRelativeDifference(try weights(straight), try weights(moved))
        #expect(difference < 1e-5, "np 2 → np 1 resume ends \(difference) from the uninterrupted np 2 run")
    }

    @Test func aNewRunDoesNotOverwriteACheckpoint() throws {
        let dir = try TestResources.scratchDirectory("keep")
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = try Executable.run(["--num_epochs", "1", "--report_per_steps", "100", "--train_result_path", dir.path])
        #expect(first.status == 0)
        let before = try bytes(dir.appendingPathComponent(Checkpoint.fileName))
        let second = try Executable.run(["--num_epochs", "2", "--train_result_path", dir.path])
        #expect(second.status == 1)
        #expect(second.stderr.contains("already holds a checkpoint"), "\(second.stderr)")
        #expect(try bytes(dir.appendingPathComponent(Checkpoint.fileName)) == before)
    }

    /// Best-N and average on a real run: the kept epoch files are the N best of the recorded validation sequence,
    /// and the average file is their element-wise mean.
    @Test func bestModelsAndTheirAverageFollowTheRecordedMetric() throws {
        let dir = try TestResources.scratchDirectory("best")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try Executable.run(["--num_epochs", "5", "--report_per_steps", "100", "--best_model_selection", "valid loss min 2",
                                    "--last_model_number", "1", "--train_result_path", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        struct Summary: Decodable { let history: [EpochRecord] }
        let history = try decoder.decode(Summary.self, from: Data(contentsOf: dir.appendingPathComponent("summary.json"))).history
        let losses = history.map { ($0.epoch, $0.valid?["loss"] ?? .nan) }
        #expect(losses.count == 5)
        let best = losses.sorted { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.prefix(2).map(\.0).sorted()
        let kept = Set(best + [5])
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("models").path)
        #expect(Set(files.filter { $0.hasPrefix("epoch_") }) == Set(kept.map { "epoch_\($0).safetensors" }))
        let a = try Safetensors.read(contentsOf: dir.appendingPathComponent("models/epoch_\(best[0]).safetensors")).tensors
        let b = try Safetensors.read(contentsOf: dir.appendingPathComponent("models/epoch_\(best[1]).safetensors")).tensors
        let avg = try Safetensors.read(contentsOf: dir.appendingPathComponent("models/2_valid_loss_average.safetensors")).tensors
        #expect(avg.map(\.name) == a.map(\.name))
        for (x, (y, z)) in zip(avg, zip(a, b)) {
            #expect(x.values == zip(y.values, z.values).map { Float((Double($0) + Double($1)) / 2) })
        }
        // latest is the last epoch, and the final weights equal it
        #expect(try bytes(dir.appendingPathComponent("models/latest.safetensors")) == bytes(dir.appendingPathComponent("models/epoch_5.safetensors")))
    }

    /// lr 0 makes validation flat after epoch 1: SpeeChain's count is 1, 2, 3 after epochs 2, 3, 4, and 3 exceeds
    /// patience 2, so the run stops after epoch 4 on every rank.
    @Test(arguments: [nil, 2] as [Int?])
    func earlyStoppingEndsTheRunOnEveryRank(np: Int?) throws {
        let dir = try TestResources.scratchDirectory("early")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try launch(np: np, ["--num_epochs", "10", "--lr", "0", "--report_per_steps", "100", "--early_stopping_patience", "2",
                                    "--best_model_selection", "valid accuracy max 1", "--train_result_path", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("early stopping: valid accuracy has not improved by more than the threshold 0.001 for 3 epochs, more than the patience 2 (best at epoch 1)"), "\(r.stdout)")
        #expect(r.stdout.contains("epoch 4:") && !r.stdout.contains("epoch 5:"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        struct Summary: Decodable { let epochs: Int; let earlyStopped: Bool; let parameterChecksums: [String] }
        let s = try decoder.decode(Summary.self, from: Data(contentsOf: dir.appendingPathComponent("summary.json")))
        #expect(s.epochs == 4 && s.earlyStopped)
        #expect(Set(s.parameterChecksums).count == 1)
    }
}
