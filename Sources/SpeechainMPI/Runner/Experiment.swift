import Foundation

/// Where a data set comes from: .npy files or the built-in synthetic generator.
public enum DataSource: Sendable, Equatable {
    case npy(features: String, labels: String)
    case synthetic(count: Int, width: Int, classes: Int, seed: UInt64)

    public func load() throws -> Dataset {
        switch self {
        case .npy(let f, let l):
            return try Dataset.load(features: URL(fileURLWithPath: f), labels: URL(fileURLWithPath: l))
        case .synthetic(let n, let d, let k, let seed):
            return try Dataset.synthetic(count: n, width: d, classes: k, seed: seed)
        }
    }
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
    public var reportPerSteps = 1
    public var validPerEpochs = 1
    public var bestModelSelection: [ModelSelection] = []
    /// Stop when the first best_model_selection metric has not improved for this many validations (nil: never).
    public var earlyStoppingPatience: Int?
    /// How many of the latest epochs' weights to keep under models/.
    public var lastModelNumber = 1
    public var resume = false
    public var training = TrainingOptions()
    public var train: DataSource
    public var valid: DataSource?
    public var modelType = MLPClassifier.typeName
    public var modelConf: [String: ConfigValue]
    public var optimSches: ConfigValue
    /// Safetensors weights to start from (PyTorch names).
    public var initWeights: String?
    /// Folder for rank 0's log, records, curves, checkpoint and models; nothing is written when nil.
    public var trainResultPath: String?
    /// Verify every N updates that all ranks hold bit-identical parameters (0: only at the end).
    public var checkConsistencyEvery = 0
    /// Test hook: make rank `failRank` fail at step `failStep`, by throwing or by SIGKILL.
    public var failure: InjectedFailure?
    /// Test hook: SIGKILL rank 0 halfway through writing the checkpoint of this epoch.
    public var killDuringCheckpointOfEpoch: Int?

    public struct InjectedFailure: Sendable, Equatable {
        public enum Mode: String, Sendable { case `throw`, kill }
        public var rank: Int, step: Int, mode: Mode
        public init(rank: Int, step: Int, mode: Mode) { self.rank = rank; self.step = step; self.mode = mode }
    }

    /// The experiment-level keys (SpeeChain's names) a config or the command line may set.
    public static let experimentKeys = [
        "seed", "num_epochs", "accum_grad", "ft_factor", "grad_clip", "grad_norm_type", "use_amp", "valid_per_epochs",
        "report_per_steps", "best_model_selection", "early_stopping_patience", "last_model_number", "train_result_path",
        "resume", "init_weights", "check_consistency_every", "amp_dtype", "grad_scaler",
    ]
    public static let dataKeys = ["batch_size", "shuffle", "train", "valid"]
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
        report_per_steps: 1
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
        var variables: Set<String> = []
        if case .list(let names)? = config.removeValue(forKey: ConfigFile.referencedKeysMarker) {
            for case .string(let n) in names { variables.insert(n) }
        }
        for key in config.keys.sorted() where !(Self.experimentKeys + ["data_cfg", "train_cfg"]).contains(key) {
            if variables.contains(key) { config.removeValue(forKey: key); continue }
            throw ConfigError.unknownKey(context: source, key: key, valid: Self.experimentKeys + ["data_cfg", "train_cfg"])
        }
        let r = try ConfReader(config, context: source, allowedKeys: Self.experimentKeys + ["data_cfg", "train_cfg"])
        seed = UInt64(clamping: try r.int("seed", default: 0))
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
        reportPerSteps = try r.int("report_per_steps", default: 1)
        earlyStoppingPatience = try r.optionalInt("early_stopping_patience")
        lastModelNumber = try r.int("last_model_number", default: 1)
        trainResultPath = r.contains("train_result_path") ? try r.string("train_result_path", default: "") : nil
        resume = try r.bool("resume", default: false)
        initWeights = r.contains("init_weights") ? try r.string("init_weights", default: "") : nil
        checkConsistencyEvery = try r.int("check_consistency_every", default: 0)

        let data = try Self.section(config["data_cfg"], key: "data_cfg", source: source)
        let d = try ConfReader(data, context: "\(source): data_cfg", allowedKeys: Self.dataKeys)
        batchSize = try d.int("batch_size", default: 32)
        shuffle = try d.bool("shuffle", default: true)
        guard let trainValue = data["train"] else { throw ConfigError.missing(context: "\(source): data_cfg", key: "train") }
        train = try Self.dataSource(trainValue, context: "\(source): data_cfg.train")
        valid = try data["valid"].map { try Self.dataSource($0, context: "\(source): data_cfg.valid") }

        let trainCfg = try Self.section(config["train_cfg"], key: "train_cfg", source: source)
        _ = try ConfReader(trainCfg, context: "\(source): train_cfg", allowedKeys: Self.trainKeys)
        let model = try Self.section(trainCfg["model"], key: "train_cfg.model", source: source)
        let m = try ConfReader(model, context: "\(source): train_cfg.model", allowedKeys: ["model_type", "model_conf"])
        modelType = try m.string("model_type", default: MLPClassifier.typeName)
        modelConf = try Self.section(model["model_conf"], key: "train_cfg.model.model_conf", source: source)
        guard let sches = trainCfg["optim_sches"] else { throw ConfigError.missing(context: "\(source): train_cfg", key: "optim_sches") }
        optimSches = sches

        let defaultSet = valid == nil ? "train" : "valid"
        bestModelSelection = try Self.selections(config["best_model_selection"], context: source,
                                                 fallback: ModelSelection(set: defaultSet, metric: "loss", mode: .min, number: 1))
        try validate()
    }

    private static func normType(_ r: ConfReader) throws -> Double {
        if case .string(let s)? = r.values["grad_norm_type"], s.lowercased() == "inf" { return .infinity }
        return try r.double("grad_norm_type", default: 2)
    }

    private static func section(_ value: ConfigValue?, key: String, source: String) throws -> [String: ConfigValue] {
        switch value {
        case nil: throw ConfigError.missing(context: source, key: key)
        case .map(let m)?: return m
        case .string(let path)?:
            // SpeeChain lets data_cfg / train_cfg name a YAML file of their own.
            var loaded = try ConfigFile.load(path)
            loaded.removeValue(forKey: ConfigFile.referencedKeysMarker)
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
        default:
            throw ConfigError.invalidValue(context: context, key: "type", reason: "must be npy or synthetic, found '\(type)'")
        }
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
            guard parts.count == 4, let mode = ModelSelection.Mode(rawValue: parts[2]), let n = Int(parts[3]), n >= 1 else {
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
        guard reportPerSteps >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "report_per_steps", reason: "must be >= 1, found \(reportPerSteps)") }
        guard validPerEpochs >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "valid_per_epochs", reason: "must be >= 1, found \(validPerEpochs)") }
        guard lastModelNumber >= 1 else { throw ConfigError.invalidValue(context: "experiment", key: "last_model_number", reason: "must be >= 1, found \(lastModelNumber)") }
        if let p = earlyStoppingPatience, p < 1 { throw ConfigError.invalidValue(context: "experiment", key: "early_stopping_patience", reason: "must be >= 1, found \(p)") }
        guard checkConsistencyEvery >= 0 else { throw ConfigError.invalidValue(context: "experiment", key: "check_consistency_every", reason: "must be >= 0, found \(checkConsistencyEvery)") }
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
