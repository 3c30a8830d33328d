import Foundation
import Testing
@testable import SpeechainMPI

/// Every class of bad input gives one line naming the problem and a non-zero exit, on every rank, with no stack
/// trace and no hang — alone and under mpirun -np 2.
@Suite(.serialized) struct BadInputTests {
    static let overlappingYAML = """
        data_cfg:
          train: {type: synthetic, conf: {count: 256, width: 16, classes: 4, seed: 1}}
        train_cfg:
          model:
            model_type: mlp.MLPClassifier
            model_conf: {encoder: {dims: [16, 8]}, decoder: {dims: [8, 4]}}
          optim_sches:
            enc:
              type: noam.NoamLr
              conf: {optim_type: Adam, updated_modules: [encoder]}
            both:
              type: noam.NoamLr
              conf: {optim_type: SGD, updated_modules: [encoder, decoder]}
        """

    /// (arguments, what the line must say); `{dir}` is a scratch folder, `{res}` the test resources.
    static let cases: [([String], String)] = [
        (["--optim_type", "Adamax"], "unknown optim_type 'Adamax'; valid: SGD, Adam, AdamW, Adagrad, RMSprop"),
        (["--set", "train_cfg.optim_sches.type=noam.Noam"], "unknown optim_sches type 'noam.Noam'; valid: noam.NoamLr"),
        (["--set", "train_cfg.optim_sches.conf.optim_loss=ctc"], "'optim_loss' names no loss of the model ('ctc')"),
        (["--config", "{dir}/overlap.yaml"], "both update encoder"),
        (["--accum_grad", "0"], "'accum_grad' must be >= 1, found 0"),
        (["--config", "{dir}/malformed.yaml"], "malformed.yaml: malformed YAML"),
        (["--train_feat", "{dir}/none.npy", "--train_label", "{dir}/none_label.npy"], "none.npy: no such file"),
        (["--train_feat", "{res}/interop/feat_f8.npy", "--train_label", "{res}/interop/labels_i8_v1.npy"], "feat_f8.npy: expected float32"),
        (["--train_feat", "{res}/interop/feat_1d.npy", "--train_label", "{res}/interop/labels_i8_v1.npy"], "feat_1d.npy:"),
        (["--init_weights", "{res}/interop/st_truncated.safetensors"], "st_truncated.safetensors:"),
        (["--resume", "--train_result_path", "{dir}/other_model"], "checkpoint.safetensors: weights do not fit the model"),
        (["--resume", "--train_result_path", "{dir}/empty"], "no checkpoint to resume from"),
        (["--bogus_option", "3"], "Unknown option '--bogus_option'"),
    ]

    static let scratch: URL = {
        let dir = (try? TestResources.scratchDirectory("bad")) ?? URL(fileURLWithPath: "/tmp")
        try? overlappingYAML.write(to: dir.appendingPathComponent("overlap.yaml"), atomically: true, encoding: .utf8)
        try? "seed: 0\nnum_epochs: [1, 2\ndata_cfg: {}\n".write(to: dir.appendingPathComponent("malformed.yaml"), atomically: true, encoding: .utf8)
        try? FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        // a checkpoint of a smaller model
        _ = try? Executable.run(["--num_epochs", "1", "--report_per_steps", "100", "--train_result_path", dir.appendingPathComponent("other_model").path,
                                 "--set", "train_cfg.model.model_conf.module_conf.encoder.dims=[16, 32, 32]", "--set", "train_cfg.model.model_conf.module_conf.decoder.dims=[32, 4]"])
        return dir
    }()

    static func expand(_ args: [String]) -> [String] {
        args.map { $0.replacingOccurrences(of: "{dir}", with: scratch.path)
            .replacingOccurrences(of: "{res}", with: TestResources.url("").path) }
    }

    @Test(arguments: cases)
    func aloneOneLineAndExitOne(arguments: [String], message: String) throws {
        let start = Date()
        let r = try Executable.run(Self.expand(arguments))
        #expect(r.status == 1 || r.status == 64, "status \(r.status)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("speechain-mpi: error: ") && r.stderr.contains(message), "\(r.stderr)")
        #expect(Date().timeIntervalSince(start) < 30)
    }

    @Test(arguments: cases.filter { !$0.0.contains("--bogus_option") })
    func underMPIRunEveryRankSaysItOnce(arguments: [String], message: String) throws {
        try Self.expectEveryRankSaysItOnce(Self.expand(arguments), message)
    }

    /// Runs the arguments under `mpirun -np 2`: a non-zero exit, exactly one line of ours per rank containing
    /// `message`, no crash trace, within 30 s.
    static func expectEveryRankSaysItOnce(_ arguments: [String], _ message: String) throws {
        let start = Date()
        let r = try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path] + arguments,
                                   environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                   executable: MPIRun.mpirun)
        #expect(r.status != 0)
        let ours = r.stderr.split(separator: "\n").filter { $0.hasPrefix("speechain-mpi: error: ") }
        #expect(ours.count == 2, "\(r.stderr)")
        for rank in 0..<2 {
            #expect(ours.contains { $0.hasPrefix("speechain-mpi: error: rank \(rank): ") && $0.contains(message) }, "\(r.stderr)")
        }
        for trace in ["Fatal error", "Stack dump", "Backtrace", "Segmentation", "Illegal instruction"] { #expect(!r.stderr.contains(trace)) }
        #expect(Date().timeIntervalSince(start) < 30)
    }
}
