import Foundation
import Testing
@testable import SpeechainMPI

/// A real run's TensorBoard files, read back with the `tensorboard` package: every scalar of steps.jsonl, every
/// epoch mean (train and valid), every report's time split.
@Suite struct TensorBoardRunTests {
    @Test func tensorBoardFindsEveryScalarOfARun() throws {
        let dir = try TestResources.scratchDirectory("tensorboard-run")
        defer { try? FileManager.default.removeItem(at: dir) }
        // two schedulers (one updating every second step) under AMP, so lr, grad norm and loss scale all appear
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let example = root.appendingPathComponent("examples/two_optim_sches.yaml").path
        var exp = try Experiment.load(configPath: example, overrides: [
            ("num_epochs", .int(2)), ("use_amp", .bool(true)), ("train_result_path", .string(dir.path)),
            ("attach_config_folder_to_path", .bool(false)), ("early_stopping_patience", .null),
        ])
        exp.reportPerSteps = 0
        let summary = try Trainer(experiment: exp, output: { _ in }).run()

        struct Point: Hashable { let tag: String; let step: Int; let value: Float }
        var expected: Set<Point> = []
        let decoder = JSONCoding.decoder(snakeCase: true)
        let lines = try String(contentsOf: dir.appendingPathComponent("steps.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == summary.steps)
        for line in lines {
            let r = try decoder.decode(StepRecord.self, from: Data(line.utf8))
            for (k, v) in r.values { expected.insert(Point(tag: k, step: r.step, value: Float(v))) }
            for (k, v) in r.lr { expected.insert(Point(tag: "lr/\(k)", step: r.step, value: Float(v))) }
            for (k, v) in r.gradNorm { expected.insert(Point(tag: "grad_norm/\(k)", step: r.step, value: Float(v))) }
            for (k, v) in r.lossScale { expected.insert(Point(tag: "loss_scale/\(k)", step: r.step, value: Float(v))) }
        }
        for r in summary.history {
            for (k, v) in r.train { expected.insert(Point(tag: "epoch/\(k)", step: r.epoch, value: Float(v))) }
            for (k, v) in r.lr { expected.insert(Point(tag: "epoch/lr/\(k)", step: r.epoch, value: Float(v))) }
        }
        #expect(expected.contains { $0.tag == "loss_scale/encoder" } && expected.contains { $0.tag == "grad_norm/decoder" })

        let train = try TensorBoardTests.readWithTensorBoard(dir.appendingPathComponent("tensorboard/train"))
        let got = Set(train.scalars.filter { !$0.tag.hasPrefix("time/") }.map { Point(tag: $0.tag, step: $0.step, value: Float($0.value)) })
        #expect(got == expected, "missing \(expected.subtracting(got).prefix(5)), extra \(got.subtracting(expected).prefix(5))")
        // the time split: five phases at each report (ten per epoch)
        let times = train.scalars.filter { $0.tag.hasPrefix("time/") }
        #expect(Set(times.map(\.tag)) == ["time/data", "time/forward", "time/backward", "time/optim", "time/comm"])
        #expect(times.count == 5 * 10 * summary.epochs)

        let valid = try TensorBoardTests.readWithTensorBoard(dir.appendingPathComponent("tensorboard/valid"))
        var expectedValid: Set<Point> = []
        for r in summary.history { for (k, v) in r.valid ?? [:] { expectedValid.insert(Point(tag: "epoch/\(k)", step: r.epoch, value: Float(v))) } }
        #expect(Set(valid.scalars.map { Point(tag: $0.tag, step: $0.step, value: Float($0.value)) }) == expectedValid)
        #expect(expectedValid.count == 2 * 2)
    }
}
