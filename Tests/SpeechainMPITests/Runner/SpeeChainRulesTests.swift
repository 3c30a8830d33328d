import Foundation
import Testing
@testable import SpeechainMPI

/// SpeeChain's runner and monitor rules (runner.py, monitor.py) on chosen sequences of metric values. Every
/// expected value below was worked out by hand from SpeeChain's source, step by step in the comments.
@Suite struct SpeeChainRulesTests {
    // MARK: validation epochs

    @Test func validationRunsAtEpochOneAndEveryVAfter() throws {
        // runner.py: valid_flag = (epoch - 1) % valid_per_epochs == 0  →  v = 3: epochs 1, 4, 7
        let dir = try temporaryDirectory()
        var exp = try Experiment.makeDefault()
        exp.numEpochs = 7
        exp.validPerEpochs = 3
        exp.trainResultPath = dir.path
        let summary = try Trainer(experiment: exp, output: { _ in }).run()
        #expect(summary.history.filter { $0.valid != nil }.map(\.epoch) == [1, 4, 7])
        // every value the model computes appears in validation, not only loss and accuracy
        #expect(summary.history[0].valid.map { Set($0.keys) } == ["loss", "accuracy"])
    }

    @Test func validationRunsInFloat32UnderAMP() throws {
        // runner.py validates outside autocast; the same weights give the same values with and without use_amp
        var amp = try Experiment.makeDefault()
        amp.training.useAMP = true
        amp.training.ampDType = .float16
        let plain = try Experiment.makeDefault()
        let a = try Trainer(experiment: amp, output: { _ in }), b = try Trainer(experiment: plain, output: { _ in })
        #expect(a.model.parameters.values.toArray() == b.model.parameters.values.toArray())
        let set = try #require(try plain.valid?.makeBatches(batchSize: plain.batchSize, shuffle: false, seed: 0, world: 1))
        #expect(try a.evaluate(set) == b.evaluate(set))
    }

    // MARK: report_per_steps

    @Test func reportIntervalForms() {
        // runner.py build_iterators: <= 0 → min batch number // (10 or -N); > 0 kept
        #expect(Trainer.reportInterval(0, stepsPerEpoch: 32) == 3)     // 32 // 10
        #expect(Trainer.reportInterval(-4, stepsPerEpoch: 32) == 8)    // 32 // 4
        #expect(Trainer.reportInterval(5, stepsPerEpoch: 32) == 5)
        // where SpeeChain divides by zero (fewer steps than reports) one step; more than an epoch: the epoch
        #expect(Trainer.reportInterval(0, stepsPerEpoch: 7) == 1)
        #expect(Trainer.reportInterval(50, stepsPerEpoch: 32) == 32)
    }

    @Test func defaultPrintsTenReportsPerEpochWithTheMeanLr() throws {
        var lines: [String] = []
        var exp = try Experiment.makeDefault()
        exp.numEpochs = 1
        _ = try Trainer(experiment: exp, output: { lines.append($0) }).run()
        let reports = lines.filter { $0.hasPrefix("step ") }
        // 1024 rows / 32 = 32 steps; every 3 steps of the epoch: steps 3, 6, …, 30
        #expect(reports.count == 10)
        #expect(reports.first?.hasPrefix("step 3 (epoch 1, steps 1-3)") == true)
        // Noam with warmup 20, lr 0.005: lr(s) = 0.005·min(s^-0.5, s·20^-1.5)·√20 (s = 1…3 are warm-up steps);
        // the report shows the mean over its steps: 0.005·(1+2+3)/3/20 = 0.0005
        #expect(reports.first?.contains("lr[main]=0.0005 ") == true, "\(reports.first ?? "")")
    }

    // MARK: best-N list and early stopping

    @Test func bestListJoinsAndDropsAsSpeeChain() {
        // N = 2, max: e1 .5 joins (room) · e2 .7 joins (room, full) · e3 .6 beats .5 → joins, worst e1 leaves ·
        // e4 .8 joins, worst e3 leaves · e5 .65 beats nobody → stays out
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 2))
        let changes = [0.5, 0.7, 0.6, 0.8, 0.65].enumerated().map { t.record(epoch: $0 + 1, value: $1) }
        #expect(changes.map(\.joined) == [true, true, true, true, false])
        #expect(changes.map(\.dropped) == [nil, nil, 1, 3, nil])
        #expect(t.ranked.map(\.epoch) == [4, 2])
    }

    @Test func tiesLeaveTheLaterEpochWorst() {
        // Python's sorted is stable: of two equal values the one that joined first ranks first
        var t = BestModelTracker(ModelSelection(set: "valid", metric: "loss", mode: .min, number: 2))
        for (e, v) in [(1, 1.0), (2, 0.5), (3, 0.7), (4, 0.5)] { t.record(epoch: e, value: v) }
        // e3 .7 joins (beats 1.0), e1 leaves; e4 .5 beats .7, joins; ranking 2, 4, 3 → e3 leaves
        #expect(t.ranked.map(\.epoch) == [2, 4])
    }

    @Test func earlyStoppingWithARelativeThreshold() {
        // max, N = 1, threshold 0.001, patience 2:
        // e1 .5 best → count 0, last .5 · e2 .6 > .5·1.001 → 0, last .6 · e3 .6005 best but ≤ .6·1.001 = .6006 → 1 ·
        // e4 .59 not best → 2 · e5 .58 → 3 > 2: stop after epoch 5
        let sel = ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 1)
        var t = BestModelTracker(sel)
        var es = EarlyStopping(patience: 2, threshold: 0.001, maximize: true)
        var counts: [Int] = [], stops: [Bool] = []
        for (i, v) in [0.5, 0.6, 0.6005, 0.59, 0.58].enumerated() {
            t.record(epoch: i + 1, value: v)
            stops.append(es.update(epoch: i + 1, tracker: t))
            counts.append(es.epochsWithoutImprovement)
        }
        #expect(counts == [0, 0, 1, 2, 3])
        #expect(stops == [false, false, false, false, true])
    }

    @Test func earlyStoppingWithAnAbsoluteThresholdAndUnvalidatedEpochs() {
        // min, threshold -0.01 (absolute), patience 1:
        // e1 1.0 → 0, last 1.0 · e2 .995 best, not < .99 → 1 · e3 .98 < .99 → 0, last .98 ·
        // e4 not validated: still counts (SpeeChain updates the count every epoch) → 1 ·
        // e5 .975 best but not < .97 → 2 > 1: stop
        let sel = ModelSelection(set: "valid", metric: "loss", mode: .min, number: 1)
        var t = BestModelTracker(sel)
        var es = EarlyStopping(patience: 1, threshold: -0.01, maximize: false)
        var counts: [Int] = [], stops: [Bool] = []
        for (i, v) in [1.0, 0.995, 0.98, nil, 0.975].enumerated() {
            if let v { t.record(epoch: i + 1, value: v) }
            stops.append(es.update(epoch: i + 1, tracker: t))
            counts.append(es.epochsWithoutImprovement)
        }
        #expect(counts == [0, 1, 0, 1, 2])
        #expect(stops == [false, false, false, false, true])
    }

    @Test func trainerStopsWhenThePatienceIsExceeded() throws {
        // threshold 0.99 relative on a minimised loss: after epoch 1 an improvement must divide the loss by 100,
        // so epoch 2 counts 1 > patience 0 and training stops there
        let dir = try temporaryDirectory()
        var exp = try Experiment.makeDefault()
        exp.numEpochs = 5
        exp.bestModelSelection = [ModelSelection(set: "valid", metric: "loss", mode: .min, number: 1)]
        exp.earlyStoppingPatience = 0
        exp.earlyStoppingThreshold = 0.99
        exp.trainResultPath = dir.path
        var lines: [String] = []
        let summary = try Trainer(experiment: exp, output: { lines.append($0) }).run()
        #expect(summary.epochs == 2 && summary.earlyStopped)
        #expect(lines.contains { $0.hasPrefix("early stopping: valid loss has not improved by more than the threshold 0.99 for 1 epochs") })
    }

    // MARK: models/

    @Test func modelsFolderPlanFollowsSpeeChain() {
        // best_model_selection (valid, accuracy, max, 2), last_model_number 2, values .5 .7 .6 .8 .65
        let sel = ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 2)
        var t = BestModelTracker(sel)
        var plans: [ModelsFolderPlan] = []
        for (i, v) in [0.5, 0.7, 0.6, 0.8, 0.65].enumerated() {
            let change = t.record(epoch: i + 1, value: v)
            plans.append(.after(epoch: i + 1, selections: [sel], trackers: [t], changes: [change], lastModelNumber: 2))
        }
        let best = "valid_accuracy_best", best2 = "valid_accuracy_best_2", avg = "2_valid_accuracy_average"
        #expect(plans[0] == ModelsFolderPlan(pointers: [best: 1, "latest": 1], averages: [:], keep: [1]))
        // the list fills at e2: SpeeChain writes no average yet (it waits for a drop); we do (see ModelsFolderPlan)
        #expect(plans[1] == ModelsFolderPlan(pointers: [best: 2, best2: 1, "latest": 2, "last_2": 1],
                                             averages: [avg: [1, 2], "2_last_average": [1, 2]], keep: [1, 2]))
        #expect(plans[2] == ModelsFolderPlan(pointers: [best: 2, best2: 3, "latest": 3, "last_2": 2],
                                             averages: [avg: [2, 3], "2_last_average": [2, 3]], keep: [2, 3]))
        #expect(plans[3] == ModelsFolderPlan(pointers: [best: 4, best2: 2, "latest": 4, "last_2": 3],
                                             averages: [avg: [2, 4], "2_last_average": [3, 4]], keep: [2, 3, 4]))
        // e5 joins no list: the best average stays as it was; e3 is neither best nor among the last two
        #expect(plans[4] == ModelsFolderPlan(pointers: [best: 4, best2: 2, "latest": 5, "last_2": 4],
                                             averages: ["2_last_average": [4, 5]], keep: [2, 4, 5]))
    }

    @Test func aRealRunLeavesThePlannedFolder() throws {
        let dir = try temporaryDirectory()
        var exp = try Experiment.makeDefault()
        exp.numEpochs = 4
        exp.lastModelNumber = 2
        exp.bestModelSelection = [ModelSelection(set: "valid", metric: "loss", mode: .min, number: 2)]
        exp.trainResultPath = dir.path
        let summary = try Trainer(experiment: exp, output: { _ in }).run()
        // the best two by valid loss, ranked by the history's values (ties: earlier first)
        let ranked = summary.history.compactMap { r in r.valid?["loss"].map { (r.epoch, $0) } }
            .enumerated().sorted { $0.element.1 != $1.element.1 ? $0.element.1 < $1.element.1 : $0.offset < $1.offset }
            .map(\.element.0)
        let models = dir.appendingPathComponent("models")
        func target(_ name: String) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: models.appendingPathComponent("\(name).safetensors").path) }
        #expect(target("latest") == "epoch_4.safetensors")
        #expect(target("last_2") == "epoch_3.safetensors")
        #expect(target("valid_loss_best") == "epoch_\(ranked[0]).safetensors")
        #expect(target("valid_loss_best_2") == "epoch_\(ranked[1]).safetensors")
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: models.path))
        let epochFiles = files.filter { $0.hasPrefix("epoch_") }
        #expect(epochFiles == Set(([3, 4] + ranked.prefix(2)).map { "epoch_\($0).safetensors" }))
        #expect(files.contains("2_last_average.safetensors") && files.contains("2_valid_loss_average.safetensors"))
        // the last average is the element-wise mean of epochs 3 and 4
        let a = try Safetensors.read(contentsOf: models.appendingPathComponent("epoch_3.safetensors")).tensors
        let b = try Safetensors.read(contentsOf: models.appendingPathComponent("epoch_4.safetensors")).tensors
        let avg = try Safetensors.read(contentsOf: models.appendingPathComponent("2_last_average.safetensors")).tensors
        for ((x, y), m) in zip(zip(a, b), avg) {
            #expect(x.name == m.name)
            for i in m.values.indices { #expect(m.values[i] == Float((Double(x.values[i]) + Double(y.values[i])) / 2)) }
        }
        // pointers are relative: the folder moves whole
        let moved = dir.deletingLastPathComponent().appendingPathComponent(dir.lastPathComponent + "-moved")
        try FileManager.default.moveItem(at: dir, to: moved)
        #expect(FileManager.default.contents(atPath: moved.appendingPathComponent("models/latest.safetensors").path) != nil)
    }

    // MARK: names and recipe keys

    @Test func schedulerTypesUnderEverySpelling() throws {
        for name in ["noam.Noamlr", "noam.NoamLr", "exp.ExponentDecayLr"] {
            #expect(throws: Never.self) { _ = try LRSchedules.type(named: name) }
        }
        #expect(try LRSchedules.type(named: "noam.Noamlr").typeName == NoamLr.typeName)
    }

    @Test func selectionModeIsCaseInsensitive() throws {
        var tree = try Experiment.defaultConfig()
        tree["best_model_selection"] = .list([.string("valid"), .string("accuracy"), .string("MAX"), .int(2)])
        let exp = try Experiment(config: tree, source: "t")
        #expect(exp.bestModelSelection == [ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 2)])
    }

    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("speechain-rules-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
