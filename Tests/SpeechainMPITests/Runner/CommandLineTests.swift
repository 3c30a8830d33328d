import Foundation
import Testing
@testable import SpeechainMPI

/// Runs the built `speechain-mpi` executable as a user would.
final class DataBox: @unchecked Sendable { var data = Data() }

enum Executable {
    /// The executable built beside the test bundle (same configuration).
    static var url: URL {
        Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("speechain-mpi")
    }

    struct Result { let status: Int32; let stdout: String; let stderr: String }

    static func run(_ arguments: [String], environment: [String: String] = [:], executable: URL? = nil) throws -> Result {
        let p = Process()
        p.executableURL = executable ?? url
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        // Read both pipes concurrently so a full pipe never blocks the child.
        let errBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

@Suite struct CommandLineTests {
    @Test func defaultExperimentReportsTenTimesPerEpochAndLearns() throws {
        let r = try Executable.run([])
        #expect(r.status == 0, "\(r.stderr)")
        let steps = r.stdout.split(separator: "\n").filter { $0.hasPrefix("step ") }
        // 1024 rows / batch 32 = 32 steps per epoch, 3 epochs; SpeeChain's default report_per_steps 0 is ten
        // reports per epoch, every 32 // 10 = 3 steps of the epoch (steps 3, 6, …, 30)
        #expect(steps.count == 30)
        // Noam without d_model, lr 0.005, warmup 20: lr(s) = 0.005·√20·min(s^-0.5, s·20^-1.5); a report shows the
        // mean over its three steps
        func lr(_ s: Double) -> Double { 0.005 * 20.0.squareRoot() * min(1 / s.squareRoot(), s * pow(20, -1.5)) }
        for (i, line) in steps.enumerated() {
            let last = (i / 10) * 32 + (i % 10 + 1) * 3
            #expect(line.hasPrefix("step \(last) (epoch \(i / 10 + 1), steps \(last - 2)-\(last)): "), "\(line)")
            let expected = (lr(Double(last - 2)) + lr(Double(last - 1)) + lr(Double(last))) / 3
            let lrText = try #require(line.split(separator: "lr[main]=").last?.split(separator: " ").first)
            let got = try #require(Double(lrText))
            #expect(abs(got - expected) <= 1e-5 * expected, "report \(i + 1): \(line)")
            #expect(line.contains("loss="))
        }
        // It learns: validation accuracy far above chance (0.25 for 4 classes) after 3 epochs.
        let last = try #require(r.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 3:") })
        let accText = last.split(separator: "valid loss=").last?.split(separator: "accuracy=").last?.split(separator: " ").first
        let acc = try #require(accText.flatMap { Double($0) })
        #expect(acc > 0.6, "\(last)")
    }

    @Test func helpDocumentsEveryOption() throws {
        let r = try Executable.run(["--help"])
        #expect(r.status == 0)
        for option in ["--num_epochs", "--batch_size", "--seed", "--accum_grad", "--ft_factor", "--grad_clip",
                       "--grad_norm_type", "--use_amp", "--report_per_steps", "--optim_type", "--lr", "--warmup_steps",
                       "--train_feat", "--train_label", "--valid_feat", "--valid_label", "--init_weights", "--train_result_path"] {
            #expect(r.stdout.contains(option), "--help lacks \(option)")
        }
    }

    @Test(arguments: [
        (["--optim_type", "Adamax"], "unknown optim_type 'Adamax'"),
        (["--accum_grad", "0"], "'accum_grad' must be >= 1"),
        (["--train_feat", "/nonexistent/feat.npy", "--train_label", "/nonexistent/label.npy"], "feat.npy"),
        (["--init_weights", "/nonexistent/w.safetensors"], "w.safetensors"),
    ])
    func badInputIsOneLineAndNonZeroExit(arguments: [String], message: String) throws {
        let r = try Executable.run(arguments)
        #expect(r.status != 0)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains(message), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack dump"))
    }

    @Test func finalWeightsAreWrittenAsSafetensors() throws {
        let dir = try TestResources.scratchDirectory("cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try Executable.run(["--num_epochs", "1", "--report_per_steps", "100", "--train_result_path", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        let file = try Safetensors.read(contentsOf: dir.appendingPathComponent("model.safetensors")).tensors
        #expect(file.map(\.name) == ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "decoder.0.weight", "decoder.0.bias"])
        #expect(file.first?.shape == [64, 16])
    }
}
