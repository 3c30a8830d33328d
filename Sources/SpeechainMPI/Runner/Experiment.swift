import Foundation

/// Where a data set comes from: .npy files or the built-in synthetic generator (tables), or SpeeChain's speech
/// iterators over `speech_text.SpeechTextDataset`.
public enum DataSource: Sendable, Equatable {
    case npy(features: String, labels: String)
    case synthetic(count: Int, width: Int, classes: Int, seed: UInt64)
    case speech(SpeechTextBatches.Conf)

    /// The table of a table source (nil for speech).
    public func load() throws -> Dataset? {
        switch self {
        case .npy(let f, let l):
            return try Dataset.load(features: URL(fileURLWithPath: f), labels: URL(fileURLWithPath: l))
        case .synthetic(let n, let d, let k, let seed):
            return try Dataset.synthetic(count: n, width: d, classes: k, seed: seed)
        case .speech:
            return nil
        }
    }

    /// The batches the trainer draws: a table with data_cfg's `batch_size` and `shuffle`, or a speech iterator
    /// planned for `world` ranks.
    public func makeBatches(batchSize: Int, shuffle: Bool, seed: UInt64, world: Int) throws -> any BatchSource {
        switch self {
        case .speech(let conf):
            return try SpeechTextBatches(conf, world: world, seed: Int(clamping: seed))
        case .npy(_, let labels):
            return TableBatches(try load()!, batchSize: batchSize, shuffle: shuffle, seed: seed, labelFile: labels)
        case .synthetic:
            return TableBatches(try load()!, batchSize: batchSize, shuffle: shuffle, seed: seed)
        }
    }

    public var isSpeech: Bool { if case .speech = self { return true } else { return false } }
}

/// SpeeChain's best_model_selection entry: `!tuple (valid, accuracy, max, 3)` — keep the N best epochs of a metric.
public struct ModelSelection: Sendable, Equatable, CustomStringConvertible {
    public enum Mode: String, Sendable { case max, min }
    public var set: String
    public var metric: String
    public var mode: Mode
    public var number: Int
    public init(set: String, metric: String, mode: Mode, number: Int) {
        self.set = set; self.metric = metric; self.mode = mode; self.number = number
    }
    public var description: String { "\(set) \(metric) \(mode.rawValue) \(number)" }
    /// The name of the averaged model file, SpeeChain-style: `3_valid_accuracy_average`.
    public var averageName: String { "\(number)_\(set)_\(metric)_average" }
    public func isBetter(_ a: Double, than b: Double) -> Bool { mode == .max ? a > b : a < b }
}

/// One experiment in SpeeChain's terms: experiment-level keys, data_cfg, and train_cfg (model and optim_sches).
public struct Experiment: Sendable {
    public var seed: UInt64 = 0
    public var numEpochs = 3
    public var batchSize = 32
    public var shuffle = true
    /// SpeeChain's report_per_steps: N > 0 reports every N steps of an epoch; 0 (the default) ten reports per
    /// epoch; −N N reports per epoch (`Trainer.reportInterval`).
    public var reportPerSteps = 0
    /// Validate at epochs 1, 1 + v, 1 + 2v, … (SpeeChain: `(epoch − 1) % valid_per_epochs == 0`).
    public var validPerEpochs = 1
    public var bestModelSelection: [ModelSelection] = []
    /// Stop when the epochs since the first best_model_selection metric last improved exceed this (nil: never).
    public var earlyStoppingPatience: Int?
    /// How much an improvement must exceed the last one to restart the early-stopping count: relative if > 0,
    /// absolute if < 0 (SpeeChain's default 0.001).
    public var earlyStoppingThreshold = 0.001
    /// Flush-to-zero and denormals-are-zero on the computing threads (torch.set_flush_denormal); on by default,
    /// since denormal floats stall some CPUs (Intel Xeon model 207: backward 10× slower).
    public var flushDenormal = true
    /// Sum gradients in a shared-memory window on each node (then by MPI between nodes) instead of MPI_Allreduce alone.
    public var sharedMemoryAllreduce = true
    /// With a config file and train_result_path, results go to `<train_result_path>/<config name>` (SpeeChain's default).
    public var attachConfigFolderToPath = true
    /// Lines for the user about keys accepted but not used (GPU and loader keys, unused variables); rank 0 prints them.
    public var notes: [String] = []
    /// The named OptimSchedulers in the order of the config file (SpeeChain steps them in that order).
    public var optimSchesOrder: [String] = []
    /// data_cfg and train_cfg as resolved (written to the result folder as SpeeChain does).
    public var dataConfig: [String: ConfigValue] = [:]
    public var trainConfig: [String: ConfigValue] = [:]
    /// How many of the latest epochs' weights to keep under models/.
    public var lastModelNumber = 1
    public var resume = false
    public var training = TrainingOptions()
    public var train: DataSource
    public var valid: DataSource?
    /// Which branches run. SpeeChain's `train` and `test` both default to false (and its runner then refuses to
    /// start); here, when neither is given anywhere, training runs and then the test stage if data_cfg has a test
    /// set; once either is given, the other keeps SpeeChain's default, false.
    public var runTrain = true
    public var runTest = false
    /// The test stage (data_cfg.test, test_model, infer_cfg, …), when data_cfg has a test set.
    public var testStage: TestStageConf?
    public var modelType = MLPClassifier.typeName
    public var modelConf: [String: ConfigValue]
    /// train_cfg.model.module_conf and criterion_conf (SpeeChain's places for them).
    public var moduleConf: [String: ConfigValue] = [:]
    public var criterionConf: [String: ConfigValue] = [:]
    public var optimSches: ConfigValue
    /// Safetensors weights to start from (PyTorch names).
    public var initWeights: String?
    /// Folder for rank 0's log, records, curves, checkpoint and models; nothing is written when nil.
    public var trainResultPath: String?
    /// Verify every N updates that all ranks hold bit-identical parameters (0: only at the end).
    public var checkConsistencyEvery = 0
    /// Seconds a rank waits in one collective for the others before it ends the job (CollectiveWatchdog).
    public var collectiveTimeout = 600.0
    /// Test hook: make rank `failRank` fail at step `failStep`, by throwing, by SIGKILL or by nudging its first
    /// parameter (`perturb`: the ranks silently diverge).
    public var failure: InjectedFailure?
    /// Test hook: SIGKILL rank 0 halfway through writing the checkpoint of this epoch.
    public var killDuringCheckpointOfEpoch: Int?

    public struct InjectedFailure: Sendable, Equatable {
        public enum Mode: String, Sendable { case `throw`, kill, perturb }
        public var rank: Int, step: Int, mode: Mode
        public init(rank: Int, step: Int, mode: Mode) { self.rank = rank; self.step = step; self.mode = mode }
    }

    /// The experiment-level keys (SpeeChain's names) a config or the command line may set.
    public static let experimentKeys = [
        "seed", "num_epochs", "accum_grad", "ft_factor", "grad_clip", "grad_norm_type", "use_amp", "valid_per_epochs",
        "report_per_steps", "best_model_selection", "early_stopping_patience", "last_model_number", "train_result_path",
        "resume", "init_weights", "check_consistency_every", "amp_dtype", "grad_scaler", "early_stopping_threshold",
        "train", "test", "dry_run", "no_optim", "attach_config_folder_to_path", "flush_denormal", "shared_memory_allreduce",
        "collective_timeout", "test_model", "test_result_path", "infer_cfg", "attach_model_folder_when_test", "bad_cases_selection",
    ]

    /// Keys of SpeeChain's runner for GPUs, data-loader workers and torch.distributed: meaningless under MPI on
    /// CPUs, accepted with one note.
    public static let inapplicableKeys = [
        "ngpu", "gpus", "rank", "same_proc_seed", "enable_syncbatchnorm", "dist_backend", "dist_url", "world_size",
        "cudnn_enabled", "cudnn_benchmark", "cudnn_deterministic", "num_workers", "train_num_workers",
        "valid_num_workers", "test_num_workers", "pin_memory", "non_blocking", "saving_proc_num",
        "ignore_train_exception", "ignore_test_exception", "start_epoch",
    ]

    /// Keys of SpeeChain's visual snapshots, which are not built: accepted with one note.
    public static let unbuiltFeatureKeys = [
        "visual_snapshot_number", "visual_snapshot_interval", "monitor_snapshot_conf",
    ]
    public static let dataKeys = ["batch_size", "shuffle", "train", "valid", "test"]
    public static let trainKeys = ["model", "optim_sches"]

    /// The built-in default, as a user would write it.
    public static let defaultYAML = """
        # speechain-mpi's default experiment: learnable synthetic 4-class data, MLP, Adam + Noam
        seed: 0
        num_epochs: 3
        accum_grad: 1
        ft_factor: 1.0
        grad_clip: 1.0
        grad_norm_type: 2.0
        use_amp: false
        valid_per_epochs: 1
        report_per_steps: 0          # ten report lines per epoch (SpeeChain's default)
        best_model_selection: !tuple (valid, accuracy, max, 2)
        last_model_number: 1

        feat_dim: 16
        data_cfg:
          batch_size: 32
          shuffle: true
          train:
            type: synthetic
            conf: {count: 1024, width: !ref <feat_dim>, classes: 4, seed: 1}
          valid:
            type: synthetic
            conf: {count: 256, width: !ref <feat_dim>, classes: 4, seed: 2}

        train_cfg:
          model:
            model_type: mlp.MLPClassifier
            model_conf:
              module_conf:
                encoder: {dims: [!ref <feat_dim>, 64, 64], activation: ReLU}
                decoder: {dims: [64, 4]}
          optim_sches:
            type: noam.NoamLr
            conf:
              optim_type: Adam
              optim_conf: {lr: 0.005}
              warmup_steps: 20

        """

    public static let defaultSource = "default experiment"

    /// The default experiment's config tree (what `--config` would give).
    public static func defaultConfig() throws -> [String: ConfigValue] {
        try ConfigFile.parse(defaultYAML, source: defaultSource)
    }

    public static func makeDefault() throws -> Experiment {
        try Experiment(config: defaultConfig(), source: defaultSource)
    }

    /// Reads an experiment from a config tree (a YAML file with command-line overrides merged in).
    public init(config: [String: ConfigValue], source: String) throws {
        var config = config
        let (variables, keyOrders) = ConfigFile.takeMarkers(from: &config)
        try Self.classifyTopLevelKeys(&config, variables: variables, source: source, notes: &notes)
        let r = try ConfReader(config, context: source, allowedKeys: Self.experimentKeys + ["data_cfg", "train_cfg"])
        try Self.refuseUnbuiltFeatures(r)
        let seedValue = try r.int("seed", default: 0)
        guard seedValue >= 0 else { throw ConfigError.invalidValue(context: source, key: "seed", reason: "must be >= 0, found \(seedValue)") }
        seed = UInt64(seedValue)
        numEpochs = try r.int("num_epochs", default: 1)
        training = TrainingOptions(
            accumGrad: try r.int("accum_grad", default: 1), ftFactor: try r.double("ft_factor", default: 1),
            gradClip: try r.double("grad_clip", default: 1), gradNormType: try Self.normType(r),
            useAMP: try r.bool("use_amp", default: false))
        let dtype = try r.string("amp_dtype", default: ReducedPrecision.float16.rawValue)
        guard let amp = ReducedPrecision(rawValue: dtype) else {
            throw ConfigError.invalidValue(context: source, key: "amp_dtype", reason: "must be float16 or bfloat16, found '\(dtype)'")
        }
        training.ampDType = amp
        switch config["grad_scaler"] {
        case nil, .null?: break
        case .map(let m)?:
            training.scaler = try GradScaler(conf: ConfReader(m, context: "\(source): grad_scaler", allowedKeys: GradScaler.confKeys))
        case let other?:
            throw ConfigError.wrongType(context: source, key: "grad_scaler", expected: "a mapping of GradScaler settings", found: other)
        }
        validPerEpochs = try r.int("valid_per_epochs", default: 1)
        reportPerSteps = try r.int("report_per_steps", default: 0)
        earlyStoppingPatience = try r.optionalInt("early_stopping_patience")
        earlyStoppingThreshold = try r.double("early_stopping_threshold", default: 0.001)
        lastModelNumber = try r.int("last_model_number", default: 1)
        trainResultPath = r.contains("train_result_path") ? try r.string("train_result_path", default: "") : nil
        attachConfigFolderToPath = try r.bool("attach_config_folder_to_path", default: true)
        flushDenormal = try r.bool("flush_denormal", default: true)
        sharedMemoryAllreduce = try r.bool("shared_memory_allreduce", default: true)
        resume = try r.bool("resume", default: false)
        initWeights = r.contains("init_weights") ? try r.string("init_weights", default: "") : nil
        checkConsistencyEvery = try r.int("check_consistency_every", default: 0)
        collectiveTimeout = try r.double("collective_timeout", default: 600)

        let data = try Self.section(config["data_cfg"], key: "data_cfg", source: source)
        let d = try ConfReader(data, context: "\(source): data_cfg", allowedKeys: Self.dataKeys)
        batchSize = try d.int("batch_size", default: 32)
        shuffle = try d.bool("shuffle", default: true)
        guard let trainValue = data["train"] else { throw ConfigError.missing(context: "\(source): data_cfg", key: "train") }
        train = try Self.dataSource(trainValue, context: "\(source): data_cfg.train")
        // valid: null (or ~) is no validation set, as a missing key
        valid = try data["valid"].flatMap { $0 == .null ? nil : try Self.dataSource($0, context: "\(source): data_cfg.valid") }
        var testSets: [(name: String, conf: SpeechTextBatches.Conf)] = []
        switch data["test"] {
        case nil, .null?: break
        case .map(let sets)?:
            for name in sets.keys.sorted() {
                guard case .speech(let c) = try Self.dataSource(sets[name]!, context: "\(source): data_cfg.test.\(name)") else {
                    throw ConfigError.invalidValue(context: "\(source): data_cfg.test.\(name)", key: "type", reason: "a test set is a speech iterator (abs.Iterator)")
                }
                testSets.append((name, c))
            }
        case let other?:
            throw ConfigError.wrongType(context: "\(source): data_cfg", key: "test", expected: "a mapping of test-set names to iterators (test-clean: {type, conf})", found: other)
        }
        if r.contains("train") || r.contains("test") {
            runTrain = try r.bool("train", default: false)
            runTest = try r.bool("test", default: false)
        } else {
            runTrain = true
            runTest = !testSets.isEmpty
        }
        guard runTrain || runTest else { throw ConfigError.invalidValue(context: source, key: "train", reason: "train and test are both false: nothing to run") }
        if runTest && testSets.isEmpty { throw ConfigError.missing(context: "\(source): data_cfg (test: true)", key: "test") }

        var trainCfgOrders: [String: [String]] = [:]
        let trainCfg = try Self.section(config["train_cfg"], key: "train_cfg", source: source, keyOrders: &trainCfgOrders)
        _ = try ConfReader(trainCfg, context: "\(source): train_cfg", allowedKeys: Self.trainKeys)
        let model = try Self.section(trainCfg["model"], key: "train_cfg.model", source: source)
        let m = try ConfReader(model, context: "\(source): train_cfg.model", allowedKeys: ["model_type", "model_conf", "module_conf", "criterion_conf"])
        modelType = try m.string("model_type", default: MLPClassifier.typeName)
        modelConf = try Self.section(model["model_conf"], key: "train_cfg.model.model_conf", source: source)
        moduleConf = try Self.section(model["module_conf"] ?? .map([:]), key: "train_cfg.model.module_conf", source: source)
        criterionConf = try Self.section(model["criterion_conf"] ?? .map([:]), key: "train_cfg.model.criterion_conf", source: source)
        // SpeeChain's models tokenise the text with customize_conf's token_type and token_path; here the data does it
        if case .map(let custom)? = modelConf["customize_conf"], case .string(let type)? = custom["token_type"] {
            var path: String?
            if case .string(let p)? = custom["token_path"] { path = p }
            func tokenised(_ source: DataSource) -> DataSource {
                guard case .speech(var c) = source else { return source }
                c.tokenType = type; c.tokenPath = path
                return .speech(c)
            }
            train = tokenised(train)
            valid = valid.map(tokenised)
            testSets = testSets.map { set in
                guard case .speech(let c) = tokenised(.speech(set.conf)) else { return set }
                return (set.name, c)
            }
        }
        guard let sches = trainCfg["optim_sches"] else { throw ConfigError.missing(context: "\(source): train_cfg", key: "optim_sches") }
        optimSches = sches
        // the file's order of named OptimSchedulers (train_cfg inline, or train_cfg a file of its own)
        optimSchesOrder = keyOrders["train_cfg.optim_sches"] ?? trainCfgOrders["optim_sches"] ?? []
        dataConfig = data
        trainConfig = trainCfg

        let defaultSet = valid == nil ? "train" : "valid"
        bestModelSelection = try Self.selections(config["best_model_selection"], context: source,
                                                 fallback: ModelSelection(set: defaultSet, metric: "loss", mode: .min, number: 1))
        if !testSets.isEmpty {
            testStage = try Self.testStage(config, r, sets: testSets, selection: bestModelSelection[0], source: source)
        }
        try validate()
    }

    /// Sorts the top-level keys the experiment does not read: SpeeChain's GPU/loader keys and the keys of features
    /// not built yet get a note; a key that looks like a misspelt experiment key is an error; any other key is a
    /// variable (SpeeChain recipes declare `d_model: 512` and the like above data_cfg) — used by a `!ref` or
    /// noted as unused. All errors are reported at once, in one line.
    private static func classifyTopLevelKeys(_ config: inout [String: ConfigValue], variables: Set<String>,
                                             source: String, notes: inout [String]) throws {
        let known = Set(experimentKeys + ["data_cfg", "train_cfg"])
        var inapplicable: [String] = [], unbuilt: [String] = [], unused: [String] = [], misspelt: [String] = []
        for key in config.keys.sorted() where !known.contains(key) {
            if inapplicableKeys.contains(key) { inapplicable.append(key) }
            else if unbuiltFeatureKeys.contains(key) { unbuilt.append(key) }
            else if variables.contains(key) { }
            else if let near = known.sorted().first(where: { editDistance($0, key) <= min(2, key.count / 3) }) { misspelt.append("'\(key)' (\(near)?)") }
            else { unused.append(key) }
            config.removeValue(forKey: key)
        }
        if !misspelt.isEmpty {
            throw ConfigError.keys(context: source, message: "unknown key\(misspelt.count == 1 ? "" : "s") \(misspelt.joined(separator: ", "))")
        }
        if !inapplicable.isEmpty { notes.append("note: \(inapplicable.joined(separator: ", ")) do not apply under MPI on CPUs (one rank per process, data loaded in each rank); ignored") }
        if !unbuilt.isEmpty { notes.append("note: \(unbuilt.joined(separator: ", ")) belong to visual snapshots, which are not built; ignored") }
        if !unused.isEmpty { notes.append("note: \(unused.joined(separator: ", ")) \(unused.count == 1 ? "is" : "are") no experiment key and no !ref uses \(unused.count == 1 ? "it" : "them"); ignored") }
    }

    /// Features of SpeeChain's runner that are not built: asking for any of them is one error naming them all.
    private static func refuseUnbuiltFeatures(_ r: ConfReader) throws {
        var asked: [String] = []
        if try r.bool("dry_run", default: false) { asked.append("dry_run: true") }
        if try r.bool("no_optim", default: false) { asked.append("no_optim: true") }
        if !asked.isEmpty { throw ConfigError.keys(context: r.context, message: "not built yet: \(asked.joined(separator: ", "))") }
    }

    /// Levenshtein distance, to tell a misspelt key (`num_epoch`) from a recipe's variable (`d_model`).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        guard !x.isEmpty else { return y.count }
        var row = Array(0...y.count)
        for i in 1...x.count {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: y.count, by: 1) {
                let substitution = previous + (x[i - 1] == y[j - 1] ? 0 : 1)
                previous = row[j]
                row[j] = min(substitution, row[j] + 1, row[j - 1] + 1)
            }
        }
        return row[y.count]
    }

    /// Every experiment-level key with the value in effect (SpeeChain's exp_cfg.yaml is its full argument list).
    public var effectiveKeys: [String: ConfigValue] {
        var keys: [String: ConfigValue] = [
            "seed": .int(Int(clamping: seed)), "num_epochs": .int(numEpochs), "accum_grad": .int(training.accumGrad),
            "ft_factor": .double(training.ftFactor), "grad_clip": .double(training.gradClip),
            "grad_norm_type": .double(training.gradNormType), "use_amp": .bool(training.useAMP),
            "amp_dtype": .string(training.ampDType.rawValue), "valid_per_epochs": .int(validPerEpochs),
            "report_per_steps": .int(reportPerSteps), "early_stopping_threshold": .double(earlyStoppingThreshold),
            "early_stopping_patience": earlyStoppingPatience.map { .int($0) } ?? .null,
            "last_model_number": .int(lastModelNumber), "resume": .bool(resume), "train": .bool(runTrain), "test": .bool(runTest),
            "best_model_selection": .list(bestModelSelection.map {
                .list([.string($0.set), .string($0.metric), .string($0.mode.rawValue), .int($0.number)])
            }),
            "check_consistency_every": .int(checkConsistencyEvery), "collective_timeout": .double(collectiveTimeout),
            "attach_config_folder_to_path": .bool(attachConfigFolderToPath), "flush_denormal": .bool(flushDenormal),
            "shared_memory_allreduce": .bool(sharedMemoryAllreduce),
        ]
        if let p = trainResultPath { keys["train_result_path"] = .string(p) }
        if let w = initWeights { keys["init_weights"] = .string(w) }
        return keys
    }

    private static func normType(_ r: ConfReader) throws -> Double {
        if case .string(let s)? = r.values["grad_norm_type"], s.lowercased() == "inf" { return .infinity }
        return try r.double("grad_norm_type", default: 2, allowInfinity: true)
    }

    private static func section(_ value: ConfigValue?, key: String, source: String) throws -> [String: ConfigValue] {
        var orders: [String: [String]] = [:]
        return try section(value, key: key, source: source, keyOrders: &orders)
    }

    private static func section(_ value: ConfigValue?, key: String, source: String,
                                keyOrders: inout [String: [String]]) throws -> [String: ConfigValue] {
        switch value {
        case nil: throw ConfigError.missing(context: source, key: key)
        case .map(let m)?: return m
        case .string(let path)?:
            // SpeeChain lets data_cfg / train_cfg name a YAML file of their own.
            var loaded = try ConfigFile.load(path)
            keyOrders = ConfigFile.takeMarkers(from: &loaded).keyOrders
            return loaded
        case let other?: throw ConfigError.wrongType(context: source, key: key, expected: "a mapping (or a YAML file path)", found: other)
        }
    }

    private static func dataSource(_ value: ConfigValue, context: String) throws -> DataSource {
        guard case .map(let m) = value else { throw ConfigError.wrongType(context: context, key: "", expected: "a mapping with type and conf", found: value) }
        let r = try ConfReader(m, context: context, allowedKeys: ["type", "conf"])
        let type = try r.string("type", default: "")
        var conf: [String: ConfigValue] = [:]
        if case .map(let c)? = m["conf"] { conf = c }
        switch type {
        case "npy":
            let c = try ConfReader(conf, context: "\(context).conf", allowedKeys: ["feat", "label"])
            guard c.contains("feat") else { throw ConfigError.missing(context: "\(context).conf", key: "feat") }
            guard c.contains("label") else { throw ConfigError.missing(context: "\(context).conf", key: "label") }
            return .npy(features: try c.string("feat", default: ""), labels: try c.string("label", default: ""))
        case "synthetic":
            let c = try ConfReader(conf, context: "\(context).conf", allowedKeys: ["count", "width", "classes", "seed"])
            return .synthetic(count: try c.int("count", default: 1024), width: try c.int("width", default: 16),
                              classes: try c.int("classes", default: 4), seed: UInt64(clamping: try c.int("seed", default: 0)))
        case SpeechTextBatches.Conf.Iterator.abs.rawValue, SpeechTextBatches.Conf.Iterator.block.rawValue:
            return .speech(try speechSource(iterator: SpeechTextBatches.Conf.Iterator(rawValue: type)!, conf: conf, context: "\(context).conf"))
        default:
            throw ConfigError.invalidValue(context: context, key: "type",
                                           reason: "must be npy, synthetic, abs.Iterator or block.BlockIterator, found '\(type)'")
        }
    }

    /// SpeeChain's iterator conf (speechain/iterator/abs.py) over `speech_text.SpeechTextDataset`.
    private static func speechSource(iterator: SpeechTextBatches.Conf.Iterator, conf: [String: ConfigValue], context: String) throws -> SpeechTextBatches.Conf {
        // SpeeChain's loader and GPU keys are accepted and have no effect here (one loading thread per rank)
        let ignored = ["ngpu", "num_workers", "same_worker_seed", "pin_memory", "distributed", "seed"]
        let batching = iterator == .block ? "batch_len" : "batch_size"
        let r = try ConfReader(conf, context: context, allowedKeys: ["dataset_type", "dataset_conf", "data_len", "shuffle", "is_descending",
                                                                    "batches_per_epoch", "group_info", batching] + ignored)
        let datasetType = try r.string("dataset_type", default: "")
        guard datasetType == "speech_text.SpeechTextDataset" else {
            throw ConfigError.invalidValue(context: context, key: "dataset_type", reason: "must be speech_text.SpeechTextDataset, found '\(datasetType)'")
        }
        guard case .map(let dc)? = conf["dataset_conf"] else { throw ConfigError.missing(context: context, key: "dataset_conf") }
        let d = try ConfReader(dc, context: "\(context).dataset_conf", allowedKeys: ["main_data", "sample_rate", "use_speed_perturb"])
        guard case .map(let main)? = dc["main_data"] else { throw ConfigError.missing(context: "\(context).dataset_conf", key: "main_data") }
        let m = try ConfReader(main, context: "\(context).dataset_conf.main_data", allowedKeys: ["feat", "text"])
        guard let feat = try m.optionalStringList("feat") else { throw ConfigError.missing(context: "\(context).dataset_conf.main_data", key: "feat") }
        guard let lengths = try r.optionalStringList("data_len") else {
            throw ConfigError.missing(context: context, key: "data_len")
        }
        var c = SpeechTextBatches.Conf(iterator: iterator, featPaths: feat, textPaths: try m.optionalStringList("text") ?? [], lengthPaths: lengths)
        c.sampleRate = try d.int("sample_rate", default: 16000)
        guard c.sampleRate > 0 else { throw ConfigError.invalidValue(context: "\(context).dataset_conf", key: "sample_rate", reason: "must be positive") }
        c.useSpeedPerturb = try d.bool("use_speed_perturb", default: false)
        c.shuffle = try r.bool("shuffle", default: true)
        switch conf["is_descending"] {
        case nil: c.isDescending = true
        case .null?: c.isDescending = nil
        default: c.isDescending = try r.bool("is_descending", default: true)
        }
        c.batchesPerEpoch = try r.optionalInt("batches_per_epoch")
        if let n = c.batchesPerEpoch, n <= 0 { throw ConfigError.invalidValue(context: context, key: "batches_per_epoch", reason: "must be positive") }
        if iterator == .block {
            // SpeeChain's recipes write batch_len as a float (2.4e7)
            let l = try r.double("batch_len", default: 0)
            guard l >= 1, l < 1e15 else { throw ConfigError.invalidValue(context: context, key: "batch_len", reason: "must be a positive number of samples, found \(ConfigValue.format(l))") }
            c.batchLength = Int(l)
        } else {
            let b = try r.int("batch_size", default: 0)
            guard b > 0 else { throw ConfigError.invalidValue(context: context, key: "batch_size", reason: "must be a positive number of utterances") }
            c.batchSize = b
        }
        if case .map(let g)? = conf["group_info"] {
            let gr = try ConfReader(g, context: "\(context).group_info", allowedKeys: Array(g.keys))
            for k in g.keys { c.groupInfo[k] = try gr.optionalStringList(k) ?? [] }
        }
        return c
    }

    /// test_model (a name or a list; default: the first best_model_selection's average, or its best when it
    /// keeps one), infer_cfg (TestReport.inferConfigurations), test_result_path, attach_model_folder_when_test,
    /// bad_cases_selection (a list of (metric, max|min, N); default ARASR's).
    private static func testStage(_ config: [String: ConfigValue], _ r: ConfReader, sets: [(name: String, conf: SpeechTextBatches.Conf)],
                                  selection: ModelSelection, source: String) throws -> TestStageConf {
        let models: [String]
        switch config["test_model"] {
        case nil, .null?: models = [selection.number > 1 ? selection.averageName : "\(selection.set)_\(selection.metric)_best"]
        case .string(let s)?: models = [s]
        case .list(let l)?:
            models = try l.map { v -> String in
                guard case .string(let s) = v else { throw ConfigError.wrongType(context: source, key: "test_model", expected: "a model name or a list of names", found: v) }
                return s
            }
        case let other?: throw ConfigError.wrongType(context: source, key: "test_model", expected: "a model name or a list of names", found: other)
        }
        for m in models where m.isEmpty || m.contains("/") || m.hasPrefix(".") {
            throw ConfigError.invalidValue(context: source, key: "test_model", reason: "'\(m)' is no name of a file in models/ (e.g. latest, valid_accuracy_best, 10_valid_accuracy_average)")
        }
        var runs: [TestStageConf.InferRun] = []
        for (name, args) in try TestReport.inferConfigurations(config["infer_cfg"]) {
            runs.append(.init(name: name, options: try DecodingOptions(conf: args, context: "\(source): infer_cfg (\(name))"), args: args))
        }
        for run in runs where run.options.decodeOnly {
            throw ConfigError.invalidValue(context: "\(source): infer_cfg (\(run.name))", key: "decode_only", reason: "not built (the test stage always scores against the reference); use false")
        }
        var badCases = TestStageConf.defaultBadCases
        switch config["bad_cases_selection"] {
        case nil, .null?: break
        case .list(let l)?:
            let items: [ConfigValue] = l.allSatisfy({ if case .list = $0 { return true } else { return false } }) ? l : [.list(l)]
            badCases = try items.map { item in
                guard case .list(let t) = item, t.count == 3, case .string(let metric) = t[0], case .string(let mode) = t[1], case .int(let n) = t[2] else {
                    throw ConfigError.wrongType(context: source, key: "bad_cases_selection", expected: "a list of [metric, max|min, N]", found: item)
                }
                _ = try TestReport.BadCaseSelection(metric: metric, mode: mode, number: n)
                return (metric, mode, n)
            }
        case let other?: throw ConfigError.wrongType(context: source, key: "bad_cases_selection", expected: "a list of [metric, max|min, N]", found: other)
        }
        return TestStageConf(testModels: models, inferRuns: runs, sets: sets,
                             resultPath: r.contains("test_result_path") ? try r.string("test_result_path", default: "") : nil,
                             attachModelFolder: try r.bool("attach_model_folder_when_test", default: true), badCases: badCases)
    }

    /// `!tuple (valid, accuracy, max, 3)`, a list of such tuples, or the string `valid accuracy max 3`.
    private static func selections(_ value: ConfigValue?, context: String, fallback: ModelSelection) throws -> [ModelSelection] {
        guard let value, value != .null else { return [fallback] }
        func one(_ v: ConfigValue) throws -> ModelSelection {
            var parts: [String] = []
            switch v {
            case .string(let s): parts = s.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
            case .list(let items): parts = items.map(\.description)
            default: break
            }
            // SpeeChain lower-cases the mode (MAX, Max and max are one)
            guard parts.count == 4, let mode = ModelSelection.Mode(rawValue: parts[2].lowercased()), let n = Int(parts[3]), n >= 1 else {
                throw ConfigError.invalidValue(context: context, key: "best_model_selection",
                    reason: "must be (set, metric, max|min, N) like !tuple (valid, accuracy, max, 3), found \(v)")
            }
            return ModelSelection(set: parts[0], metric: parts[1], mode: mode, number: n)
        }
        if case .list(let items) = value, items.allSatisfy({ if case .list = $0 { return true } else { return false } }), !items.isEmpty {
            return try items.map(one)
        }
        return [try one(value)]
    }

    public func validate() throws {
        guard numEpochs >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "num_epochs", reason: "must be >= 1, found \(numEpochs)") }
        guard batchSize >= 1 else { throw ConfigError.invalidValue(context: "data_cfg", key: "batch_size", reason: "must be >= 1, found \(batchSize)") }
        guard validPerEpochs >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "valid_per_epochs", reason: "must be >= 1, found \(validPerEpochs)") }
        guard lastModelNumber >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "last_model_number", reason: "must be >= 1, found \(lastModelNumber)") }
        if let p = earlyStoppingPatience, p < 0 { throw ConfigError.invalidValue(context: "experiment", key: "early_stopping_patience", reason: "must be >= 0, found \(p)") }
        guard earlyStoppingThreshold.isFinite, earlyStoppingThreshold < 1 else {
            throw ConfigError.invalidValue(context: "experiment", key: "early_stopping_threshold",
                                           reason: "must be a finite number below 1 (relative if > 0, absolute if < 0), found \(earlyStoppingThreshold)")
        }
        guard checkConsistencyEvery >= 0 else { throw ConfigError.invalidValue(context: "experiment", key: "check_consistency_every", reason: "must be >= 0, found \(checkConsistencyEvery)") }
        guard collectiveTimeout > 0, collectiveTimeout.isFinite else { throw ConfigError.invalidValue(context: "experiment", key: "collective_timeout", reason: "must be positive finite seconds, found \(collectiveTimeout)") }
        guard training.accumGrad >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "accum_grad", reason: "must be >= 1, found \(training.accumGrad)") }
        for s in bestModelSelection where s.set != "train" && s.set != "valid" {
            throw ConfigError.invalidValue(context: "experiment", key: "best_model_selection", reason: "set must be train or valid, found '\(s.set)'")
        }
        if bestModelSelection.contains(where: { $0.set == "valid" }) && valid == nil {
            throw ConfigError.invalidValue(context: "experiment", key: "best_model_selection", reason: "selects on valid but data_cfg has no valid set")
        }
        if resume && trainResultPath == nil {
            throw ConfigError.invalidValue(context: "experiment", key: "resume", reason: "needs train_result_path (where the checkpoint is)")
        }
    }
}
