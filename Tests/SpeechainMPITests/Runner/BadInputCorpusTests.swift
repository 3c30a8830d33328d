import Foundation
import Testing
@testable import SpeechainMPI

/// A corpus of bad inputs — numbers, sizes, configs, data, weights, result folders, command lines — each of which
/// must end with one line naming the problem, a non-zero exit and no crash trace, alone and on every rank of
/// `mpirun -np 2`, and must leave every file that existed before unchanged.
@Suite(.serialized) struct BadInputCorpusTests {
    static let dims = "train_cfg.model.model_conf.module_conf"

    /// (arguments, what the line must say); `{dir}` is the scratch folder with the fixtures below.
    static let cases: [([String], String)] = [
        // numbers: range and finiteness, from the command line and from --set
        (["--lr", "inf"], "'lr' must be a finite number, found inf"),
        (["--lr", "nan"], "'lr' must be a finite number, found nan"),
        (["--set", "grad_clip=.nan"], "'grad_clip' must be a finite number, found nan"),
        (["--set", "ft_factor=.inf"], "'ft_factor' must be a finite number, found inf"),
        (["--set", "early_stopping_threshold=.inf"], "'early_stopping_threshold' must be a finite number"),
        (["--set", "train_cfg.optim_sches.conf.optim_conf.weight_decay=.nan"], "'weight_decay' must be a finite number, found nan"),
        (["--set", "train_cfg.optim_sches.conf.optim_conf.betas=[0.9, 1.5]"], "'betas' beta2 must be in [0, 1), found 1.5"),
        (["--set", "train_cfg.optim_sches.conf.optim_conf.eps=-1"], "'eps' must be >= 0"),
        (["--set", "train_cfg.optim_sches.conf.step_per_update=0"], "'step_per_update' must be >= 1, found 0"),
        (["--set", "train_cfg.optim_sches.conf.warmup_steps=-3"], "'warmup_steps' must be"),
        (["--grad_norm_type", "abc"], "'grad_norm_type' must be a number"),
        (["--num_epochs", "0"], "'num_epochs' must be >= 1, found 0"),
        (["--set", "num_epochs=1e400"], "'num_epochs' must be an integer"),
        (["--batch_size", "0"], "'batch_size' must be >= 1, found 0"),
        (["--valid_per_epochs", "0"], "'valid_per_epochs' must be >= 1, found 0"),
        (["--last_model_number", "0"], "'last_model_number' must be >= 1, found 0"),
        (["--set", "early_stopping_patience=-1"], "'early_stopping_patience' must be >= 0, found -1"),
        (["--set", "check_consistency_every=-1"], "'check_consistency_every' must be >= 0, found -1"),
        (["--set", "seed=-1"], "'seed' must be >= 0, found -1"),
        (["--set", "train_cfg.model.model_conf.criterion_conf.label_smoothing=1.5"], "'label_smoothing' must be in [0, 1), found 1.5"),
        (["--amp_dtype", "float8"], "'amp_dtype' must be float16 or bfloat16, found 'float8'"),
        (["--use_amp", "yes"], "The value 'yes' is invalid for '--use_amp"),
        // sizes, before any allocation
        (["--set", "\(dims).encoder.dims=[16, 4611686018427387904]", "--set", "\(dims).decoder.dims=[4611686018427387904, 4]"],
         "'dims' is too large: the 16×4611686018427387904 layer"),
        (["--set", "\(dims).encoder.dims=[16, 200000]", "--set", "\(dims).decoder.dims=[200000, 200000]"], "'dims' is too large"),
        (["--set", "\(dims).encoder.dims=[16]"], "'dims' needs at least two sizes"),
        (["--set", "\(dims).encoder.dims=[16, 0]", "--set", "\(dims).decoder.dims=[0, 4]"], "'dims' must be positive sizes"),
        (["--set", "data_cfg.train.conf.count=4611686018427387904"], "'count' is too large: 4611686018427387904 rows of 16 features"),
        (["--set", "data_cfg.train.conf.count=2000000000", "--set", "data_cfg.train.conf.width=1000"], "'count' is too large"),
        (["--set", "data_cfg.train.conf.width=0"], "synthetic data needs count > 0, width > 0"),
        (["--set", "data_cfg.train.conf.classes=1"], "at least 2 classes"),
        (["--batch_size", "4611686018427387904"], "fewer than one batch of 4611686018427387904"),
        (["--report_per_steps", "99999999999999999999"], "is invalid for '--report_per_steps"),
        // best_model_selection
        (["--best_model_selection", "valid bleu max 2"], "names no loss or metric of the model ('bleu')"),
        (["--best_model_selection", "test accuracy max 2"], "set must be train or valid, found 'test'"),
        (["--best_model_selection", "valid accuracy up 2"], "'best_model_selection' must be (set, metric, max|min, N)"),
        // config files
        (["--config", "{dir}/big.yaml"], "big.yaml: is 5242891 bytes; a config may hold at most 4194304"),
        (["--config", "{dir}/notutf8.yaml"], "notutf8.yaml: is not UTF-8 text"),
        (["--config", "{dir}/nul.yaml"], "nul.yaml: malformed YAML"),
        // control characters a file carries are escaped in the message, never written raw
        (["--config", "{dir}/nul.yaml"], "num_ep\\0ochs"),
        (["--config", "{dir}/esc.yaml"], "esc.yaml: unknown key 'se\\u{1B}ed'"),
        (["--config", "{dir}/tag.yaml"], "tag.yaml: 'seed': unknown tag !foo"),
        (["--config", "{dir}/ref.yaml"], "ref.yaml: 'seed': !ref <nothing> names no top-level key"),
        (["--config", "{dir}/cycle.yaml"], "refers to itself through"),
        (["--config", "{dir}/dup.yaml"], "dup.yaml: 'seed' is given twice"),
        (["--config", "{dir}/list.yaml"], "list.yaml: the top level must be a mapping"),
        (["--config", "{dir}/deep.yaml"], "deep.yaml: line 1 is nested more than 256 levels deep"),
        (["--config", "{dir}/deepblock.yaml"], "deepblock.yaml: line 258 is nested more than 256 levels deep"),
        (["--config", "{dir}"], "is a directory"),
        (["--config", "{dir}/unbuilt.yaml"], "unbuilt.yaml: data_cfg (test: true): missing required key 'test'"),
        (["--config", "{dir}/misspelt.yaml"], "misspelt.yaml: unknown key 'num_epoch' (num_epochs?)"),
        (["--set", "=3"], "--set expects key=value, found '=3'"),
        (["--set", "data_cfg.train.type=csv"], "'type' must be npy, synthetic, abs.Iterator or block.BlockIterator, found 'csv'"),
        (["--set", "train_cfg.model.model_type=mlp.Big"], "unknown model_type 'mlp.Big'"),
        (["--set", "train_cfg.optim_sches={}"], "'optim_sches' is empty"),
        (["--set", "train_cfg.optim_sches.conf.updated_modules=[middle]"], "'updated_modules' names no module of the model ('middle')"),
        (["--resume"], "'resume' needs train_result_path"),
        // data files
        (["--train_feat", "{dir}/feat_nan.npy", "--train_label", "{dir}/label.npy"], "feat_nan.npy: value nan at row 5, column 3; features must be finite"),
        (["--train_feat", "{dir}/feat_inf.npy", "--train_label", "{dir}/label.npy"], "feat_inf.npy: value -inf at row 63, column 15"),
        (["--train_feat", "{dir}/feat.npy", "--train_label", "{dir}/label_big.npy"], "label_big.npy: label 7 at row 9 is outside the model's 4 classes"),
        (["--train_feat", "{dir}/feat.npy", "--train_label", "{dir}/label.npy", "--valid_feat", "{dir}/feat.npy", "--valid_label", "{dir}/label_big.npy"],
         "label_big.npy: label 7 at row 9 is outside the model's 4 classes"),
        (["--train_feat", "{dir}/feat.npy", "--train_label", "{dir}/label_neg.npy"], "label_neg.npy: label -2 at row 3 is not a class index"),
        (["--train_feat", "{dir}/feat.npy", "--train_label", "{dir}/label_short.npy"], "label_short.npy has 10 labels but feat.npy has 64 rows"),
        (["--train_feat", "{dir}/feat.npy"], "--train_feat and --train_label go together"),
        (["--train_feat", "{dir}/feat8.npy", "--train_label", "{dir}/label.npy"], "the data has 8 features per row but the model's input is 16 wide"),
        // weights
        (["--init_weights", "{dir}/nan.safetensors"], "nan.safetensors: weights do not fit the model: 'encoder.2.weight' holds nan at index 17; weights must be finite"),
        (["--init_weights", "{dir}/none.safetensors"], "none.safetensors: no such file"),
        (["--init_weights", "{dir}/label.npy"], "label.npy: file is truncated or not a safetensors file"),
        // result folders
        (["--train_result_path", ""], "'train_result_path' is empty"),
        (["--train_result_path", "{dir}/label.npy"], "label.npy: is not a folder"),
        (["--train_result_path", "{dir}/label.npy/run"], "is not a folder ({dir}/label.npy is a file)"),
        (["--train_result_path", "/proc/speechain-run"], "/proc/speechain-run: "),
    ]

    static let scratch: URL = {
        let dir = (try? TestResources.scratchDirectory("corpus")) ?? URL(fileURLWithPath: "/tmp")
        func text(_ name: String, _ content: String) { try? content.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        func bytes(_ name: String, _ content: [UInt8]) { try? Data(content).write(to: dir.appendingPathComponent(name)) }
        text("big.yaml", "seed: 0\n# " + String(repeating: "x", count: 5 << 20) + "\n")
        bytes("notutf8.yaml", Array("seed: ".utf8) + [0xFF, 0xFE, 0x0A])
        bytes("nul.yaml", Array("seed: 0\nnum_ep".utf8) + [0] + Array("ochs: 3\n".utf8))
        text("esc.yaml", "\"se\\eed\": 1\n")
        text("tag.yaml", "seed: !foo 3\n")
        text("ref.yaml", "seed: !ref <nothing>\n")
        text("cycle.yaml", "a: !ref <b>\nb: !ref <a>\nseed: !ref <a>\n")
        text("dup.yaml", "seed: 1\nseed: 2\n")
        text("list.yaml", "- 1\n- 2\n")
        text("deep.yaml", "a: " + String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000) + "\n")
        text("deepblock.yaml", (0..<2000).map { String(repeating: "  ", count: $0) + "k\($0):\n" }.joined())
        var unbuilt = Experiment.defaultYAML + "test: true\n"
        text("unbuilt.yaml", unbuilt)
        unbuilt = Experiment.defaultYAML + "num_epoch: 3\n"
        text("misspelt.yaml", unbuilt)
        var rng = Xoshiro256(seed: 5, stream: 1)
        var feat = (0..<(64 * 16)).map { _ in rng.normal() }
        try? NPY.write(float32Matrix: feat, rows: 64, cols: 16, to: dir.appendingPathComponent("feat.npy"))
        try? NPY.write(float32Matrix: Array(feat[0..<(64 * 8)]), rows: 64, cols: 8, to: dir.appendingPathComponent("feat8.npy"))
        feat[5 * 16 + 3] = .nan
        try? NPY.write(float32Matrix: feat, rows: 64, cols: 16, to: dir.appendingPathComponent("feat_nan.npy"))
        feat[5 * 16 + 3] = 0
        feat[63 * 16 + 15] = -.infinity
        try? NPY.write(float32Matrix: feat, rows: 64, cols: 16, to: dir.appendingPathComponent("feat_inf.npy"))
        try? NPY.write(int64Vector: (0..<64).map { Int64($0 % 4) }, to: dir.appendingPathComponent("label.npy"))
        try? NPY.write(int64Vector: (0..<64).map { $0 == 9 ? 7 : Int64($0 % 4) }, to: dir.appendingPathComponent("label_big.npy"))
        try? NPY.write(int64Vector: (0..<64).map { $0 == 3 ? -2 : 0 }, to: dir.appendingPathComponent("label_neg.npy"))
        try? NPY.write(int64Vector: [Int64](repeating: 0, count: 10), to: dir.appendingPathComponent("label_short.npy"))
        if let model = try? Models.make(type: MLPClassifier.typeName, conf: Models.flattenSpeeChainShape(
            ["module_conf": .map(["encoder": .map(["dims": .list([.int(16), .int(64), .int(64)])]), "decoder": .map(["dims": .list([.int(64), .int(4)])])])]), seed: 0) {
            var tensors = model.parameters.namedTensors()
            if let k = tensors.firstIndex(where: { $0.name == "encoder.2.weight" }) { tensors[k].values[17] = .nan }
            try? Safetensors.write(tensors, to: dir.appendingPathComponent("nan.safetensors"))
        }
        return dir
    }()

    static func expand(_ args: [String]) -> [String] { args.map { $0.replacingOccurrences(of: "{dir}", with: scratch.path) } }

    /// Every file under the scratch folder with its bytes, to prove a failed run changed nothing.
    static func snapshot() -> [String: Data] {
        var files: [String: Data] = [:]
        let base = scratch.path
        for case let path as String in FileManager.default.enumerator(atPath: base) ?? NSEnumerator() {
            files[path] = FileManager.default.contents(atPath: base + "/" + path) ?? Data()
        }
        return files
    }

    @Test func theCorpusIsLarge() { #expect(Self.cases.count + BadInputTests.cases.count >= 60) }

    @Test(arguments: cases)
    func aloneOneLineNonZeroAndNothingChanged(arguments: [String], message: String) throws {
        let before = Self.snapshot()
        let r = try Executable.run(Self.expand(arguments))
        #expect(r.status != 0, "status \(r.status)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(!r.stderr.dropLast().unicodeScalars.contains { $0.properties.generalCategory == .control }, "a raw control character: \(r.stderr.debugDescription)")
        #expect(r.stderr.hasPrefix("speechain-mpi: error: ") && r.stderr.contains(Self.expand([message])[0]), "\(r.stderr)")
        #expect(Self.snapshot() == before, "a failed run changed files under \(Self.scratch.path)")
    }

    @Test(arguments: cases.filter { !$0.1.contains("is invalid for") })
    func underMPIRunEveryRankSaysItOnce(arguments: [String], message: String) throws {
        let before = Self.snapshot()
        try BadInputTests.expectEveryRankSaysItOnce(Self.expand(arguments), Self.expand([message])[0])
        #expect(Self.snapshot() == before)
    }
}

/// Result folders on file systems that refuse: read-only, and too small for one checkpoint (tmpfs mounts made
/// by the test; root only, as the cluster tests).
@Suite(.serialized) struct ResultFolderFileSystemTests {
    @Test func readOnlyAndFullFileSystemsAreOneLine() throws {
        try #require(getuid() == 0, "mounting a tmpfs needs root (CI runs as root)")
        let base = try TestResources.scratchDirectory("fs")
        let ro = base.appendingPathComponent("ro"), full = base.appendingPathComponent("full")
        for d in [ro, full] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        func sh(_ args: [String]) throws -> Int32 { try Executable.run(args, executable: URL(fileURLWithPath: "/usr/bin/env")).status }
        #expect(try sh(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro.path]) == 0)
        #expect(try sh(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", full.path]) == 0)
        defer {
            _ = try? sh(["umount", ro.path]); _ = try? sh(["umount", full.path])
            try? FileManager.default.removeItem(at: base)
        }
        for (path, message) in [(ro.appendingPathComponent("run").path, "run: is on a read-only file system"),
                                (full.appendingPathComponent("run").path, "run: has 64 KiB free; one checkpoint and its model files need about")] {
            let alone = try Executable.run(["--train_result_path", path])
            #expect(alone.status != 0 && alone.stderr.split(separator: "\n").count == 1 && alone.stderr.contains(message), "\(alone.stderr)")
            let two = try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path, "--train_result_path", path],
                                         environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                         executable: MPIRun.mpirun)
            let ours = two.stderr.split(separator: "\n").filter { $0.hasPrefix("speechain-mpi: error: rank ") && $0.contains(message) }
            #expect(two.status != 0 && ours.count == 2, "\(two.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: full.path).isEmpty)
    }
}
