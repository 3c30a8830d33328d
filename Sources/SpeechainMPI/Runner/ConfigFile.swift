import Foundation
import Yams

/// Reads SpeeChain-style YAML configs into ConfigValue trees. Understands SpeeChain's tags:
/// `!ref <name>` (the value of the top-level key `name`; inside a longer string, `<name>` is replaced by its
/// text, e.g. `!ref <exp_root>/models`) and `!tuple (a, b, c)` (a list of YAML scalars).
public enum ConfigFile {
    /// `outer`: the top-level values of the config that names this file as its data_cfg or train_cfg, which a
    /// `!ref` here may use where the file has no key of that name.
    public static func load(_ path: String, outer: [String: ConfigValue] = [:]) throws -> [String: ConfigValue] {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            throw ConfigError.file(path: path, message: exists ? (isDir.boolValue ? "is a directory" : "cannot be read") : "no such file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError.file(path: path, message: "is not UTF-8 text") }
        return try parse(text, source: path, outer: outer)
    }

    /// Limits that keep a config from exhausting the parser (libyaml and the resolver recurse once per level).
    public static let maximumBytes = 4 << 20
    public static let maximumDepth = 256

    public static func parse(_ text: String, source: String, outer: [String: ConfigValue] = [:]) throws -> [String: ConfigValue] {
        try checkLimits(text, source: source)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError.file(path: source, message: "malformed YAML: " + oneLine(error))
        } catch {
            throw ConfigError.file(path: source, message: "malformed YAML: \(error)")
        }
        guard let root else { return [:] }
        guard case .mapping(let mapping) = root else {
            throw ConfigError.file(path: source, message: "the top level must be a mapping of keys to values")
        }
        var resolver = Resolver(source: source, topLevel: [:], outer: outer)
        for (k, v) in mapping {
            guard case .scalar(let key) = k else { throw ConfigError.file(path: source, message: "keys must be plain names") }
            resolver.topLevel[key.string] = v
        }
        var result: [String: ConfigValue] = [:]
        for (k, v) in mapping {
            let key = k.string ?? ""
            if result[key] != nil { throw ConfigError.file(path: source, message: "'\(key)' is given twice") }
            result[key] = try resolver.value(v, path: key)
        }
        result[ConfigFile.referencedKeysMarker] = .list(resolver.referenced.sorted().map { .string($0) })
        result[ConfigFile.keyOrderMarker] = .map(resolver.keyOrders.mapValues { .list($0.map { .string($0) }) })
        return result
    }

    /// Removes the markers `parse` adds to a config tree and returns the `!ref` variable names and the key order
    /// of every mapping (by dotted path), which a Swift dictionary does not keep.
    static func takeMarkers(from config: inout [String: ConfigValue]) -> (referenced: Set<String>, keyOrders: [String: [String]]) {
        var referenced: Set<String> = []
        if case .list(let names)? = config.removeValue(forKey: referencedKeysMarker) {
            for case .string(let n) in names { referenced.insert(n) }
        }
        var orders: [String: [String]] = [:]
        if case .map(let m)? = config.removeValue(forKey: keyOrderMarker) {
            for (path, value) in m {
                if case .list(let keys) = value { orders[path] = keys.compactMap { if case .string(let k) = $0 { return k } else { return nil } } }
            }
        }
        return (referenced, orders)
    }

    /// Keys in the order of the file, by dotted path (SpeeChain runs its OptimSchedulers in the file's order).
    static let keyOrderMarker = "__key_orders__"

    /// Refuses a config over `maximumBytes` or nested deeper than `maximumDepth` (flow brackets, or block
    /// indentation and `- ` prefixes counted as columns / 2), before the YAML parser sees it.
    static func checkLimits(_ text: String, source: String) throws {
        let bytes = text.utf8.count
        guard bytes <= maximumBytes else {
            throw ConfigError.file(path: source, message: "is \(bytes) bytes; a config may hold at most \(maximumBytes)")
        }
        var flow = 0, line = 1, column = 0, indenting = true, comment = false, previous: UInt8 = 0x20
        var quote: UInt8? = nil
        for c in text.utf8 {
            defer { previous = c }
            if c == UInt8(ascii: "\n") { line += 1; column = 0; indenting = true; comment = false; continue }
            if comment { continue }
            if indenting {
                if c == UInt8(ascii: " ") || c == UInt8(ascii: "-") || c == UInt8(ascii: "\t") { column += 1 } else { indenting = false }
                if column / 2 > maximumDepth {
                    throw ConfigError.file(path: source, message: "line \(line) is nested more than \(maximumDepth) levels deep")
                }
            }
            if let q = quote { if c == q { quote = nil }; continue }
            switch c {
            case UInt8(ascii: "#") where previous == 0x20 || previous == 0x09 || previous == 0x0A: comment = true
            case UInt8(ascii: "\""), UInt8(ascii: "'") where flow > 0 || previous == 0x20 || previous == UInt8(ascii: ":"): quote = c
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                flow += 1
                if flow > maximumDepth {
                    throw ConfigError.file(path: source, message: "line \(line) is nested more than \(maximumDepth) levels deep")
                }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): flow = max(0, flow - 1)
            default: break
            }
        }
    }

    /// Names of top-level keys some `!ref` used, so that they may exist only as variables (removed by `Experiment`).
    static let referencedKeysMarker = "__referenced_keys__"

    private static func oneLine(_ error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return "\(problem)" + (context.map { " \($0.text)" } ?? "") + " (line \(mark.line), column \(mark.column))"
        default:
            return "\(error)".split(separator: "\n").joined(separator: " ")
        }
    }

    private struct Resolver {
        let source: String
        var topLevel: [String: Node]
        /// The naming config's top-level values (for a data_cfg / train_cfg file), seen where topLevel has no key.
        var outer: [String: ConfigValue] = [:]
        var referenced: Set<String> = []
        var resolving: [String] = []
        var keyOrders: [String: [String]] = [:]

        mutating func value(_ node: Node, path: String) throws -> ConfigValue {
            let tag = node.tag.description
            switch node {
            case .scalar(let scalar):
                if tag == "!ref" { return try reference(scalar.string, path: path) }
                if tag == "!tuple" { return try tuple(scalar.string, path: path) }
                if tag.hasPrefix("!") && !tag.hasPrefix("!!") {
                    throw ConfigError.file(path: source, message: "'\(path)': unknown tag \(tag) (known: !ref, !tuple)")
                }
                return Self.scalarValue(scalar)
            case .sequence(let seq):
                return .list(try seq.enumerated().map { try value($1, path: "\(path)[\($0)]") })
            case .mapping(let mapping):
                var out: [String: ConfigValue] = [:]
                for (k, v) in mapping {
                    guard let key = k.string else { throw ConfigError.file(path: source, message: "'\(path)': keys must be plain names") }
                    if out[key] != nil { throw ConfigError.file(path: source, message: "'\(path).\(key)' is given twice") }
                    out[key] = try value(v, path: path.isEmpty ? key : "\(path).\(key)")
                }
                keyOrders[path] = mapping.compactMap { $0.key.string }
                return .map(out)
            }
        }

        static func scalarValue(_ scalar: Node.Scalar) -> ConfigValue {
            let node = Node.scalar(scalar)
            if scalar.style == .singleQuoted || scalar.style == .doubleQuoted { return .string(scalar.string) }
            if node.null != nil { return .null }
            if let b = node.bool { return .bool(b) }
            if let i = node.int { return .int(i) }
            if let d = node.float { return .double(d) }
            return .string(scalar.string)
        }

        /// `<name>` alone is the referenced value itself; inside a string each `<name>` is replaced by its text.
        mutating func reference(_ text: String, path: String) throws -> ConfigValue {
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("<"), trimmed.hasSuffix(">"), trimmed.dropFirst().dropLast().allSatisfy({ $0 != "<" && $0 != ">" }) {
                return try lookup(String(trimmed.dropFirst().dropLast()), path: path)
            }
            var result = ""
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "<") {
                guard let close = rest[open...].firstIndex(of: ">") else { break }
                result += rest[..<open]
                let name = String(rest[rest.index(after: open)..<close])
                let v = try lookup(name, path: path)
                switch v {
                case .map, .list: throw ConfigError.file(path: source, message: "'\(path)': !ref <\(name)> is not a scalar and cannot be part of a string")
                default: result += v.description
                }
                rest = rest[rest.index(after: close)...]
            }
            guard result.isEmpty == false || !rest.isEmpty else {
                throw ConfigError.file(path: source, message: "'\(path)': !ref needs a <name>")
            }
            return .string(result + rest)
        }

        mutating func lookup(_ name: String, path: String) throws -> ConfigValue {
            guard let node = topLevel[name] else {
                if let v = outer[name] { referenced.insert(name); return v }
                throw ConfigError.file(path: source, message: "'\(path)': !ref <\(name)> names no top-level key"
                                       + (outer.isEmpty ? "" : " (of this file or of the config that names it)"))
            }
            guard !resolving.contains(name) else {
                throw ConfigError.file(path: source, message: "'\(path)': !ref <\(name)> refers to itself through \(resolving.joined(separator: " -> "))")
            }
            referenced.insert(name)
            resolving.append(name)
            defer { resolving.removeLast() }
            return try value(node, path: name)
        }

        /// `(a, b, c)` → [a, b, c] with each item read as a YAML scalar.
        func tuple(_ text: String, path: String) throws -> ConfigValue {
            var t = text.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("("), t.hasSuffix(")") else {
                throw ConfigError.file(path: source, message: "'\(path)': !tuple expects (a, b, ...), found '\(text)'")
            }
            t = String(t.dropFirst().dropLast())
            let items = t.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if items.count == 1 && items[0].isEmpty { return .list([]) }
            return .list(items.filter { !$0.isEmpty }.map { Self.scalarValue(Node.Scalar($0)) })
        }
    }
}

extension ConfigFile {
    /// A command-line value read as YAML (`0.01`, `true`, `[16, 64]`, `!tuple (valid, accuracy, max, 3)`).
    public static func value(_ text: String, key: String) throws -> ConfigValue {
        var parsed = try parse("value: \(text)\n", source: "--\(key)")
        _ = takeMarkers(from: &parsed)
        return parsed["value"] ?? .null
    }
}

extension Experiment {
    /// A config file (or the default experiment) with command-line overrides (dotted key paths) merged in;
    /// the command line wins.
    public static func load(configPath: String?, overrides: [(path: String, value: ConfigValue)]) throws -> Experiment {
        var tree = try configPath.map { try ConfigFile.load($0) } ?? defaultConfig()
        if let configPath { try inlineSubConfigs(&tree, namedBy: configPath) }
        for (path, value) in overrides {
            try ConfigValue.set(value, at: path.split(separator: ".").map(String.init), in: &tree)
        }
        var experiment = try Experiment(config: tree, source: configPath ?? defaultSource)
        if let configPath { experiment.trainResultPath = resultPath(for: configPath, given: experiment.trainResultPath, attach: experiment.attachConfigFolderToPath) }
        return experiment
    }

    /// data_cfg / train_cfg given as file paths inside a config file are read here, in place: a relative path is
    /// taken from the folder of the config that names it (SpeeChain takes it from $SPEECHAIN_ROOT, or from the
    /// current directory when it starts with '.'; that is the fallback when the config's folder has no such file),
    /// and a `!ref` inside the file may use the naming config's top-level keys. (A path given on the command line,
    /// `--set data_cfg=…`, is the user's own and is read from the current directory by `Experiment.init`.)
    static func inlineSubConfigs(_ tree: inout [String: ConfigValue], namedBy configPath: String) throws {
        let folder = URL(fileURLWithPath: configPath).deletingLastPathComponent()
        var outer = tree
        var (referenced, orders) = ConfigFile.takeMarkers(from: &outer)
        for key in ["data_cfg", "train_cfg"] {
            guard case .string(let path)? = tree[key] else { continue }
            var loaded = try ConfigFile.load(resolveSubConfig(path, folder: folder, key: key, in: configPath), outer: outer)
            let markers = ConfigFile.takeMarkers(from: &loaded)
            referenced.formUnion(markers.referenced)
            for (p, o) in markers.keyOrders { orders[p.isEmpty ? key : "\(key).\(p)"] = o }
            tree[key] = .map(loaded)
        }
        tree[ConfigFile.referencedKeysMarker] = .list(referenced.sorted().map { .string($0) })
        tree[ConfigFile.keyOrderMarker] = .map(orders.mapValues { .list($0.map { .string($0) }) })
    }

    static func resolveSubConfig(_ path: String, folder: URL, key: String, in configPath: String) throws -> String {
        if path.hasPrefix("/") { return path }
        let beside = folder.appendingPathComponent(path).standardizedFileURL.path
        if FileManager.default.fileExists(atPath: beside) { return beside }
        let root = SpeechTextBatches.environment()["SPEECHAIN_ROOT"] ?? FileManager.default.currentDirectoryPath
        let speechain = path.hasPrefix(".") ? URL(fileURLWithPath: path).standardizedFileURL.path
                                            : URL(fileURLWithPath: root).appendingPathComponent(path).standardizedFileURL.path
        if FileManager.default.fileExists(atPath: speechain) { return speechain }
        throw ConfigError.file(path: configPath, message: "\(key) '\(path)' is no file (looked for \(beside), beside the config, and \(speechain))")
    }

    /// SpeeChain's result folder for a config file: without train_result_path, `exp/<config name>` in place of the
    /// config's `exp_cfg/` folder (`recipes/asr/x/exp_cfg/a.yaml` → `recipes/asr/x/exp/a`); with it,
    /// `<train_result_path>/<config name>` unless attach_config_folder_to_path is false.
    static func resultPath(for configPath: String, given: String?, attach: Bool) -> String {
        let name = URL(fileURLWithPath: configPath).deletingPathExtension().lastPathComponent
        guard let given else {
            let parts = configPath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            return (parts.dropLast(2) + ["exp", name]).joined(separator: "/")
        }
        return attach ? URL(fileURLWithPath: given).appendingPathComponent(name).path : given
    }
}

extension ConfigValue {
    /// The value as YAML (block style, keys sorted), which `ConfigFile.parse` reads back to an equal value.
    public var yaml: String {
        (try? Yams.serialize(node: node, sortKeys: true)) ?? "\(self)\n"
    }

    var node: Node {
        switch self {
        case .null: return Node("null", Tag(.null))
        case .bool(let b): return Node(b ? "true" : "false", Tag(.bool))
        case .int(let i): return Node(String(i), Tag(.int))
        case .double(let d):
            let text = d.isNaN ? ".nan" : d.isInfinite ? (d > 0 ? ".inf" : "-.inf") : "\(d)"
            return Node(text, Tag(.float))
        case .string(let s):
            // quoted whenever the plain text would read back as something else (`true`, `1.0`, `null`, `~`)
            let plain = Node(s)
            let ambiguous = plain.null != nil || plain.bool != nil || plain.int != nil || plain.float != nil
            return Node(s, Tag(.str), ambiguous ? .doubleQuoted : .any)
        case .list(let items): return Node(items.map(\.node))
        case .map(let m): return Node(m.keys.sorted().map { (Node($0), m[$0]!.node) })
        }
    }
}
