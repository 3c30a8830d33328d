import Foundation
import Testing
@testable import SpeechainMPI

@Suite struct ConfigFileTests {
    func parse(_ text: String) throws -> [String: ConfigValue] {
        var c = try ConfigFile.parse(text, source: "test.yaml")
        c.removeValue(forKey: "__referenced_keys__")
        return c
    }

    @Test func scalarsListsAndMappingsKeepTheirYAMLTypes() throws {
        let c = try parse("a: 3\nb: 0.5\nc: 1.0e-9\nd: true\ne: null\nf: text\ng: '3'\nh: [1, 2]\ni: {x: 1}\n")
        #expect(c["a"] == .int(3))
        #expect(c["b"] == .double(0.5))
        #expect(c["c"] == .double(1e-9))
        #expect(c["d"] == .bool(true))
        #expect(c["e"] == .null)
        #expect(c["f"] == .string("text"))
        #expect(c["g"] == .string("3"))
        #expect(c["h"] == .list([.int(1), .int(2)]))
        #expect(c["i"] == .map(["x": .int(1)]))
    }

    @Test func refSubstitutesValuesAndStringParts() throws {
        let c = try parse("""
            feat_dim: 80
            root: /exp
            model: {dims: [!ref <feat_dim>, 256]}
            path: !ref <root>/models/<feat_dim>
            whole: !ref <model>
            """)
        #expect(c["model"] == .map(["dims": .list([.int(80), .int(256)])]))
        #expect(c["path"] == .string("/exp/models/80"))
        #expect(c["whole"] == c["model"])
    }

    @Test func tupleIsAListOfScalars() throws {
        let c = try parse("betas: !tuple (0.9, 0.98)\nsel: !tuple (valid, accuracy, max, 3)\nempty: !tuple ()\n")
        #expect(c["betas"] == .list([.double(0.9), .double(0.98)]))
        #expect(c["sel"] == .list([.string("valid"), .string("accuracy"), .string("max"), .int(3)]))
        #expect(c["empty"] == .list([]))
    }

    @Test(arguments: [
        ("a: !ref <missing>\n", "!ref <missing> names no top-level key"),
        ("a: !ref <b>\nb: !ref <a>\n", "refers to itself"),
        ("a: !tuple 0.9, 0.98\n", "!tuple expects (a, b, ...)"),
        ("a: !weird 3\n", "unknown tag !weird"),
        ("a: [1, 2\nb: 3\n", "malformed YAML"),
        ("a: 1\na: 2\n", "given twice"),
        ("- 1\n- 2\n", "the top level must be a mapping"),
    ])
    func badYAMLIsOneLineNamingTheFile(text: String, message: String) throws {
        let error = #expect(throws: ConfigError.self) { try ConfigFile.parse(text, source: "exp.yaml") }
        let d = error?.description ?? ""
        #expect(d.hasPrefix("exp.yaml: ") && d.contains(message), "\(d)")
        #expect(!d.contains("\n"), "\(d)")
    }

    @Test func malformedYAMLNamesLineAndColumn() throws {
        let error = #expect(throws: ConfigError.self) { try ConfigFile.parse("a: 1\nb: [1, 2\n", source: "exp.yaml") }
        #expect(error?.description.contains("line") == true, "\(String(describing: error))")
    }

    @Test func theDefaultExperimentReadsAsDocumented() throws {
        let e = try Experiment.makeDefault()
        #expect(e.numEpochs == 3 && e.batchSize == 32 && e.shuffle && e.seed == 0)
        #expect(e.training.accumGrad == 1 && e.training.gradClip == 1 && e.training.gradNormType == 2 && !e.training.useAMP)
        #expect(e.train == .synthetic(count: 1024, width: 16, classes: 4, seed: 1))
        #expect(e.valid == .synthetic(count: 256, width: 16, classes: 4, seed: 2))
        #expect(e.bestModelSelection == [ModelSelection(set: "valid", metric: "accuracy", mode: .max, number: 2)])
        guard case .map(let sches) = e.optimSches, case .map(let conf)? = sches["conf"], case .map(let oc)? = conf["optim_conf"] else {
            Issue.record("optim_sches shape"); return
        }
        #expect(sches["type"] == .string("noam.NoamLr"))
        #expect(oc == ["lr": .double(0.005)])
    }

    @Test func commandLineOverridesWin() throws {
        let dir = try TestResources.scratchDirectory("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("exp.yaml")
        try Experiment.defaultYAML.replacingOccurrences(of: "num_epochs: 3", with: "num_epochs: 7")
            .write(to: file, atomically: true, encoding: .utf8)
        let fromFile = try Experiment.load(configPath: file.path, overrides: [])
        #expect(fromFile.numEpochs == 7)
        let overridden = try Experiment.load(configPath: file.path, overrides: [
            ("num_epochs", .int(2)), ("data_cfg.batch_size", .int(8)),
            ("train_cfg.optim_sches.conf.optim_conf.lr", try ConfigFile.value("0.25", key: "lr")),
        ])
        #expect(overridden.numEpochs == 2 && overridden.batchSize == 8)
        guard case .map(let s) = overridden.optimSches, case .map(let c)? = s["conf"], case .map(let oc)? = c["optim_conf"] else {
            Issue.record("optim_sches shape"); return
        }
        #expect(oc["lr"] == .double(0.25))
    }

    @Test func dataAndTrainConfigsMayBeFilesOfTheirOwn() throws {
        let dir = try TestResources.scratchDirectory("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data.yaml")
        try "batch_size: 4\ntrain: {type: synthetic, conf: {count: 64, width: 16, classes: 4, seed: 9}}\n"
            .write(to: data, atomically: true, encoding: .utf8)
        var tree = try Experiment.defaultConfig()
        tree["data_cfg"] = .string(data.path)
        tree["best_model_selection"] = .string("train loss min 1")
        let e = try Experiment(config: tree, source: "t")
        #expect(e.batchSize == 4 && e.train == .synthetic(count: 64, width: 16, classes: 4, seed: 9) && e.valid == nil)
        // a data_cfg without `shuffle` shuffles, as SpeeChain's iterators do (shuffle=True); the key turns it off
        #expect(e.shuffle, "a data_cfg without shuffle must shuffle")
        try "batch_size: 4\nshuffle: false\ntrain: {type: synthetic, conf: {count: 64, width: 16, classes: 4, seed: 9}}\n"
            .write(to: data, atomically: true, encoding: .utf8)
        #expect(try !Experiment(config: tree, source: "t").shuffle)
    }

    @Test(arguments: [
        ("num_epoch", ConfigValue.int(3), "unknown key 'num_epoch'"),
        ("accum_grad", ConfigValue.string("two"), "'accum_grad' must be an integer"),
        ("best_model_selection", ConfigValue.string("valid accuracy best 3"), "must be (set, metric, max|min, N)"),
        ("data_cfg.batch_size", ConfigValue.int(0), "'batch_size' must be >= 1"),
        ("data_cfg.train.type", ConfigValue.string("csv"), "must be npy, synthetic, abs.Iterator or block.BlockIterator"),
        ("train_cfg.model.model_type", ConfigValue.string("rnn.Seq2Seq"), "unknown model_type 'rnn.Seq2Seq'"),
    ])
    func badKeysAreNamed(path: String, value: ConfigValue, message: String) throws {
        var tree = try Experiment.defaultConfig()
        try ConfigValue.set(value, at: path.split(separator: ".").map(String.init), in: &tree)
        var thrown: Error?
        do {
            let e = try Experiment(config: tree, source: "exp.yaml")
            _ = try Models.make(type: e.modelType, conf: e.modelConf, seed: 0)
        } catch { thrown = error }
        let d = thrown.map { "\($0)" } ?? "no error"
        #expect(d.contains(message), "\(d)")
        #expect(!d.contains("\n"))
    }
}
