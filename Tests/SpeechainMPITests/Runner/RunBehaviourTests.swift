import Foundation
import Testing
@testable import SpeechainMPI

/// What a user reads off a run and relies on, each against a value that comes from elsewhere than the code path
/// under test: reported values are the means over the ranks of what each rank computed alone; the shuffle and
/// the dropout masks change every epoch and repeat with the seed; a user's own training set is never validated
/// on built-in data; sub-config files are read from their config's folder and may use its keys.
/// A run's `steps.jsonl`, one StepRecord per line (non-finite values as the monitor writes them).
enum StepRecords {
    static func read(in dir: URL) throws -> [StepRecord] {
        let decoder = JSONCoding.decoder(snakeCase: true)
        return try String(contentsOf: dir.appendingPathComponent("steps.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try decoder.decode(StepRecord.self, from: Data($0.utf8)) }
    }
}

@Suite(.serialized) struct RunBehaviourTests {
    static func records(_ dir: URL) throws -> [StepRecord] { try StepRecords.read(in: dir) }

    static func summary(_ dir: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("summary.json"))) as? [String: Any] ?? [:]
    }

    /// lr 0 and no shuffle: nothing changes the weights, so the value a rank computes on its shard is the value one
    /// rank alone computes on the same rows. At np 2 with batch 16 per rank, global batch k is rows 32(k−1)…32k−1:
    /// rank 0 takes the first 16 (the np 1 run's batch 2k−1), rank 1 the next 16 (its batch 2k). Every reported
    /// step value at np 2 must be the mean of those two np 1 values — not their sum, not rank 0's alone.
    @Test func reportedValuesAreTheMeanOfWhatEachRankComputed() throws {
        let one = try TestResources.scratchDirectory("avg1"), two = try TestResources.scratchDirectory("avg2")
        defer { for d in [one, two] { try? FileManager.default.removeItem(at: d) } }
        let common = ["--num_epochs", "1", "--lr", "0", "--shuffle", "false", "--batch_size", "16", "--report_per_steps", "8"]
        let r1 = try MPIRun.run(np: nil, common + ["--train_result_path", one.path])
        let r2 = try MPIRun.run(np: 2, common + ["--train_result_path", two.path])
        #expect(r1.result.status == 0 && r2.result.status == 0, "\(r1.result.stderr)\(r2.result.stderr)")
        let alone = try Self.records(r1.directory), ranks = try Self.records(r2.directory)
        #expect(alone.count == 64 && ranks.count == 32)
        var worst = 0.0
        var differsFromRankZero = false
        for (k, step) in ranks.enumerated() {
            for name in ["loss", "accuracy"] {
                let a = try #require(alone[2 * k].values[name]), b = try #require(alone[2 * k + 1].values[name])
                let got = try #require(step.values[name])
                worst = max(worst, abs(got - (a + b) / 2) / max(abs((a + b) / 2), 1e-6))
                if a != b && got != a { differsFromRankZero = true }
                #expect(name != "accuracy" || (0...1).contains(got))
            }
        }
        #expect(worst < 1e-6, "np 2 reports differ from the mean of the two shards by \(worst) relative")
        #expect(differsFromRankZero)
        // validation: the same rows, split over the ranks, weighted by rows
        let v1 = try #require((try Self.summary(r1.directory)["valid"]) as? [String: Double])
        let v2 = try #require((try Self.summary(r2.directory)["valid"]) as? [String: Double])
        for name in ["loss", "accuracy"] {
            #expect(abs(try #require(v1[name]) - (try #require(v2[name]))) <= 1e-6 * max(abs(v1[name]!), 1e-6), "valid \(name): \(v1) vs \(v2)")
        }
    }

    /// With lr 0 an epoch's per-step values depend only on which rows form each batch and on the dropout masks.
    static func epochs(shuffle: Bool, dropout: Double, seed: Int = 0) throws -> (first: [Double], second: [Double], means: [Double]) {
        let dir = try TestResources.scratchDirectory("epochs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try Executable.run(["--num_epochs", "2", "--lr", "0", "--shuffle", "\(shuffle)", "--seed", "\(seed)", "--report_per_steps", "100",
                                    "--set", "train_cfg.model.model_conf.module_conf.encoder.dropout=\(dropout)", "--train_result_path", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        let steps = try records(dir)
        let losses = steps.map { $0.values["loss"] ?? .nan }
        let history = try summary(dir)["history"] as? [[String: Any]] ?? []
        let means = history.compactMap { ($0["train"] as? [String: Double])?["loss"] }
        return (Array(losses.prefix(32)), Array(losses.dropFirst(32)), means)
    }

    @Test func theShuffleOrderChangesEveryEpochAndRepeatsWithTheSeed() throws {
        let fixed = try Self.epochs(shuffle: false, dropout: 0)
        #expect(fixed.first.count == 32 && fixed.first == fixed.second, "without shuffle and dropout the epochs repeat")
        let shuffled = try Self.epochs(shuffle: true, dropout: 0)
        #expect(shuffled.first != shuffled.second, "epoch 2 drew epoch 1's order again")
        // the same 1024 rows in full batches of 32: each epoch's mean loss is the mean over all rows
        #expect(abs(shuffled.means[0] - shuffled.means[1]) <= 1e-6 * shuffled.means[0] && abs(shuffled.means[0] - fixed.means[0]) <= 1e-6 * fixed.means[0])
        let again = try Self.epochs(shuffle: true, dropout: 0)
        #expect(again.first == shuffled.first && again.second == shuffled.second, "(seed, epoch) gives the order")
    }

    @Test func dropoutMasksChangeEveryEpochAndRepeatWithTheSeed() throws {
        let masked = try Self.epochs(shuffle: false, dropout: 0.5)
        #expect(masked.first != masked.second, "epoch 2 drew epoch 1's dropout masks again")
        let again = try Self.epochs(shuffle: false, dropout: 0.5)
        #expect(again.first == masked.first && again.second == masked.second, "(seed, epoch, rank) gives the masks")
        let otherSeed = try Self.epochs(shuffle: false, dropout: 0.5, seed: 1)
        #expect(otherSeed.first != masked.first)
    }

    /// --train_feat without --valid_feat: the run validates on nothing (not on the built-in synthetic set) and keeps
    /// its best models by the training loss; with --valid_feat it validates on the user's set.
    @Test func yourTrainingSetWithoutAValidationSetIsNeverValidatedOnBuiltInData() throws {
        let dir = try TestResources.scratchDirectory("ownfeat")
        defer { try? FileManager.default.removeItem(at: dir) }
        var g = Xoshiro256(seed: 3)
        let rows = 96
        let features = (0..<(rows * 16)).map { _ in g.nextUnitFloat() * 2 - 1 }
        let labels = (0..<rows).map { Int64($0 % 4) }
        let feat = dir.appendingPathComponent("feat.npy"), label = dir.appendingPathComponent("label.npy")
        try NPY.write(float32Matrix: features, rows: rows, cols: 16, to: feat)
        try NPY.write(int64Vector: labels, to: label)
        let alone = dir.appendingPathComponent("alone"), named = dir.appendingPathComponent("named")
        let r = try Executable.run(["--num_epochs", "2", "--train_feat", feat.path, "--train_label", label.path, "--train_result_path", alone.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stdout.contains("valid"), "\(r.stdout)")
        let history = try Self.summary(alone)["history"] as? [[String: Any]] ?? []
        #expect(history.count == 2 && history.allSatisfy { ($0["valid"] as? [String: Any]) == nil })
        let models = try FileManager.default.contentsOfDirectory(atPath: alone.appendingPathComponent("models").path)
        #expect(models.contains { $0.hasPrefix("train_loss_best") }, "\(models)")
        let v = try Executable.run(["--num_epochs", "1", "--train_feat", feat.path, "--train_label", label.path,
                                    "--valid_feat", feat.path, "--valid_label", label.path, "--train_result_path", named.path])
        #expect(v.status == 0, "\(v.stderr)")
        let valid = try #require(try Self.summary(named)["valid"] as? [String: Double])
        // validating on the training rows after the epoch: the user's set (96 rows), not the synthetic 256
        #expect(valid["loss"] != nil && v.stdout.contains("valid"))
    }

    /// `data_cfg: sub/data.yaml` and `train_cfg: sub/train.yaml` in a config file are read from the config's folder
    /// (whatever the current directory), and a `!ref` inside them uses the main file's keys; named optim_sches keep
    /// the sub-file's order.
    @Test func subConfigFilesAreReadBesideTheirConfigAndSeeItsKeys() throws {
        let dir = try TestResources.scratchDirectory("subcfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sub = dir.appendingPathComponent("exp_cfg/sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try """
            batch_size: !ref <rows>
            train: {type: synthetic, conf: {count: 64, width: !ref <feat_dim>, classes: 4, seed: 9}}
            valid: {type: synthetic, conf: {count: 32, width: !ref <feat_dim>, classes: 4, seed: 8}}
            """.write(to: sub.appendingPathComponent("data.yaml"), atomically: true, encoding: .utf8)
        try """
            model:
              model_type: mlp.MLPClassifier
              model_conf:
                module_conf:
                  encoder: {dims: [!ref <feat_dim>, 8]}
                  decoder: {dims: [8, 4]}
            optim_sches:
              zeta: {type: noam.NoamLr, conf: {optim_type: Adam, optim_conf: {lr: 0.001}, warmup_steps: 5, updated_modules: [encoder]}}
              alpha: {type: noam.NoamLr, conf: {optim_type: Adam, optim_conf: {lr: 0.001}, warmup_steps: 5, updated_modules: [decoder]}}
            """.write(to: sub.appendingPathComponent("train.yaml"), atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("exp_cfg/main.yaml")
        try "feat_dim: 24\nrows: 8\nnum_epochs: 1\ndata_cfg: sub/data.yaml\ntrain_cfg: sub/train.yaml\n".write(to: config, atomically: true, encoding: .utf8)
        // the process's current directory is the package root, not the config's folder
        #expect(FileManager.default.currentDirectoryPath != dir.appendingPathComponent("exp_cfg").path)
        let e = try Experiment.load(configPath: config.path, overrides: [])
        #expect(e.batchSize == 8)
        #expect(e.train == .synthetic(count: 64, width: 24, classes: 4, seed: 9))
        #expect(e.optimSchesOrder == ["zeta", "alpha"])
        #expect(!e.notes.contains { $0.contains("feat_dim") || $0.contains("rows") }, "keys used by a sub-file are no unused variables: \(e.notes)")
        // a missing sub-file is one error naming where it was looked for
        try "num_epochs: 1\ndata_cfg: sub/none.yaml\ntrain_cfg: sub/train.yaml\nfeat_dim: 24\n".write(to: config, atomically: true, encoding: .utf8)
        #expect {
            _ = try Experiment.load(configPath: config.path, overrides: [])
        } throws: { error in
            "\(error)".contains("data_cfg 'sub/none.yaml' is no file (looked for \(sub.appendingPathComponent("none.yaml").path)")
        }
        // and the whole thing runs: the executable started from another directory
        try "feat_dim: 24\nrows: 8\nnum_epochs: 1\ndata_cfg: sub/data.yaml\ntrain_cfg: sub/train.yaml\nbest_model_selection: !tuple (train, loss, min, 1)\n"
            .write(to: config, atomically: true, encoding: .utf8)
        let r = try Executable.run(["--config", config.path, "--train_result_path", dir.appendingPathComponent("out").path])
        #expect(r.status == 0, "\(r.stderr)")
    }
}
