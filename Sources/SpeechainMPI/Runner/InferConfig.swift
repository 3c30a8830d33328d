import Foundation

extension TestReport {
    /// Expands SpeeChain's `infer_cfg` (runner.py, `Runner.test`) into the inference runs it names, in order. Each
    /// run's name is its test-result folder:
    /// - nil (or null) → one run `default_inference` with no arguments;
    /// - a mapping with `shared_args` (a mapping) and `exclu_args` (a list of mappings) → one run per `exclu_args`
    ///   entry, that entry merged with `shared_args`, named by the merged keys sorted, `key=value` joined by `_`
    ///   (`beam_size=16_ctc_weight=0.2`); a key in both is an error;
    /// - a mapping with neither → one run named by its sorted `key=value` pairs, or `default_inference` if empty;
    /// - a mapping with only one of `shared_args`/`exclu_args` is an error;
    /// - a list of mappings → one run per mapping, named the same way.
    /// Values are spelled as Python's `str()` would (`0.2`, `1.0`, `True`, `16`, `None`; inside lists and mappings
    /// strings are quoted, `['a', 1]`; a mapping's keys are sorted as our parsed YAML keeps no order).
    /// Where SpeeChain is silent or lenient this is strict: an empty `exclu_args`, two runs with the same name, and
    /// infer_cfg file paths (SpeeChain loads `*.yaml` paths itself; our caller must load them first) are errors; a
    /// run whose merged arguments are empty is named `default_inference` (SpeeChain would name it "" and write
    /// into the test folder itself).
    public static func inferConfigurations(_ infer: ConfigValue?) throws -> [(name: String, args: [String: ConfigValue])] {
        let context = "infer_cfg"
        let runs: [(name: String, args: [String: ConfigValue])]
        switch infer {
        case nil, .null?:
            return [(name: "default_inference", args: [:])]
        case .map(let map)?:
            let shared = map["shared_args"], exclusive = map["exclu_args"]
            switch (shared, exclusive) {
            case (nil, nil):
                runs = [(name: runName(map), args: map)]
            case (let shared?, let exclusive?):
                guard case .map(let sharedArgs) = shared else {
                    throw ConfigError.wrongType(context: context, key: "shared_args", expected: "a mapping", found: shared)
                }
                guard case .list(let entries) = exclusive else {
                    throw ConfigError.wrongType(context: context, key: "exclu_args", expected: "a list of mappings", found: exclusive)
                }
                if let extra = map.keys.sorted().first(where: { $0 != "shared_args" && $0 != "exclu_args" }) {
                    throw ConfigError.unknownKey(context: context, key: extra, valid: ["shared_args", "exclu_args"])
                }
                guard !entries.isEmpty else {
                    throw ConfigError.invalidValue(context: context, key: "exclu_args", reason: "must list at least one set of arguments")
                }
                var expanded: [(name: String, args: [String: ConfigValue])] = []
                for (k, entry) in entries.enumerated() {
                    guard case .map(var args) = entry else {
                        throw ConfigError.wrongType(context: context, key: "exclu_args[\(k)]", expected: "a mapping", found: entry)
                    }
                    if let duplicate = args.keys.sorted().first(where: { sharedArgs[$0] != nil }) {
                        throw ConfigError.conflict(
                            "\(context): '\(duplicate)' is given in both shared_args and exclu_args[\(k)]")
                    }
                    args.merge(sharedArgs) { current, _ in current }
                    expanded.append((name: runName(args), args: args))
                }
                runs = expanded
            default:
                throw ConfigError.conflict(
                    "\(context): 'shared_args' and 'exclu_args' must be given together (found only '\(shared == nil ? "exclu_args" : "shared_args")')")
            }
        case .list(let entries)?:
            guard !entries.isEmpty else {
                throw ConfigError.invalidValue(context: "infer_cfg", key: "infer_cfg", reason: "is an empty list")
            }
            runs = try entries.enumerated().map { k, entry in
                guard case .map(let args) = entry else {
                    throw ConfigError.wrongType(context: context, key: "infer_cfg[\(k)]",
                                                expected: "a mapping (infer_cfg files must be loaded first)", found: entry)
                }
                return (name: runName(args), args: args)
            }
        case let other?:
            throw ConfigError.wrongType(context: context, key: "infer_cfg",
                                        expected: "a mapping or a list of mappings (infer_cfg files must be loaded first)", found: other)
        }
        var seen = Set<String>()
        for run in runs where !seen.insert(run.name).inserted {
            throw ConfigError.conflict("\(context): two inference runs have the same arguments (\(run.name))")
        }
        return runs
    }

    /// `key=value` pairs sorted by key and joined by `_`; `default_inference` for no arguments.
    static func runName(_ args: [String: ConfigValue]) -> String {
        if args.isEmpty { return "default_inference" }
        return args.keys.sorted().map { "\($0)=\(PythonFormat.str(args[$0]!))" }.joined(separator: "_")
    }
}

/// Python's spelling of values, for file contents and folder names that must match SpeeChain's.
enum PythonFormat {
    /// `str(x)` of a Python float (== `repr`): the shortest digits that read back to `x`, in fixed notation when
    /// the decimal exponent is in [-4, 16), else `d.ddde±XX`; integral values keep `.0`; `inf`, `-inf`, `nan`.
    static func float(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x < 0 ? "-inf" : "inf" }
        if x == 0 { return x.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description also gives the shortest round-trip digits; re-lay them out by Python's rules.
        var text = "\(x.magnitude)"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let integerPart = String(parts[0]), fractionPart = parts.count > 1 ? String(parts[1]) : ""
        var digits = integerPart + fractionPart
        var pointPosition = integerPart.count + exponent   // value = 0.digits × 10^pointPosition
        let leadingZeros = digits.prefix { $0 == "0" }.count
        digits.removeFirst(leadingZeros)
        pointPosition -= leadingZeros
        while digits.hasSuffix("0") { digits.removeLast() }
        if digits.isEmpty { return x.sign == .minus ? "-0.0" : "0.0" }

        let sign = x.sign == .minus ? "-" : ""
        if pointPosition > -4 && pointPosition <= 16 {
            if pointPosition <= 0 {
                return sign + "0." + String(repeating: "0", count: -pointPosition) + digits
            }
            if digits.count <= pointPosition {
                return sign + digits + String(repeating: "0", count: pointPosition - digits.count) + ".0"
            }
            let split = digits.index(digits.startIndex, offsetBy: pointPosition)
            return sign + digits[..<split] + "." + digits[split...]
        }
        let e = pointPosition - 1
        let mantissa = digits.count == 1 ? digits : String(digits.first!) + "." + digits.dropFirst()
        let exponentDigits = String(abs(e))
        return sign + mantissa + "e" + (e < 0 ? "-" : "+") + (exponentDigits.count < 2 ? "0" : "") + exponentDigits
    }

    /// `str(value)` of a configuration value as PyYAML would have loaded it.
    static func str(_ value: ConfigValue) -> String {
        switch value {
        case .string(let s): return s
        default: return repr(value)
        }
    }

    /// `repr(value)`: strings quoted, as inside a list or dict.
    static func repr(_ value: ConfigValue) -> String {
        switch value {
        case .null: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return float(d)
        case .string(let s): return quoted(s)
        case .list(let items): return "[" + items.map(repr).joined(separator: ", ") + "]"
        case .map(let m): return "{" + m.keys.sorted().map { "\(quoted($0)): \(repr(m[$0]!))" }.joined(separator: ", ") + "}"
        }
    }

    /// Python's string repr for printable text: single quotes unless the text has a `'` and no `"`.
    static func quoted(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case quote: out += "\\" + String(c)
            default: out.append(c)
            }
        }
        out.append(quote)
        return out
    }
}
