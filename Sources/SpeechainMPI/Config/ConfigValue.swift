/// A configuration value as YAML or the command line gives it: SpeeChain's configs are untyped
/// dictionaries, so every consumer reads them through `ConfReader`, which types and checks each key.
public enum ConfigValue: Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([ConfigValue])
    case map([String: ConfigValue])

    public var description: String {
        switch self {
        case .null: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return ConfigValue.format(d)
        case .string(let s): return s
        case .list(let l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .map(let m):
            return "{" + m.keys.sorted().map { "\($0): \(m[$0]!.description)" }.joined(separator: ", ") + "}"
        }
    }

    /// Python-like rendering of a float: integral values keep one decimal (`1.0`), others the shortest form.
    static func format(_ d: Double) -> String {
        if d.isFinite && d == d.rounded() && abs(d) < 1e16 { return String(format: "%.1f", d) }
        return "\(d)"
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .list: return "a list"
        case .map: return "a mapping"
        }
    }
}

import Foundation

/// Reads one configuration section with types checked and unknown keys rejected, naming the section
/// (e.g. `optim_conf of 'main' (Adam)`) and the valid keys in every error.
public struct ConfReader {
    public let context: String
    public let values: [String: ConfigValue]

    public init(_ values: [String: ConfigValue], context: String, allowedKeys: [String]) throws {
        self.values = values
        self.context = context
        for key in values.keys.sorted() where !allowedKeys.contains(key) {
            throw ConfigError.unknownKey(context: context, key: key, valid: allowedKeys)
        }
    }

    public func contains(_ key: String) -> Bool {
        if case .some(.null) = values[key] { return false }
        return values[key] != nil
    }

    /// A finite number: NaN and ±inf are refused (no configured rate, factor or threshold means them), unless
    /// `allowInfinity` (a norm type may be inf).
    public func double(_ key: String, default defaultValue: Double, allowInfinity: Bool = false) throws -> Double {
        guard let v = values[key] else { return defaultValue }
        var number: Double?
        switch v {
        case .int(let i): number = Double(i)
        case .double(let d): number = d
        case .string(let s): number = Double(s)   // YAML may keep "1e-3" as a string
        default: break
        }
        guard let d = number else { throw ConfigError.wrongType(context: context, key: key, expected: "a number", found: v) }
        guard d.isFinite || (allowInfinity && d.isInfinite) else {
            throw ConfigError.invalidValue(context: context, key: key, reason: "must be a finite number, found \(d)")
        }
        return d
    }

    public func optionalDouble(_ key: String) throws -> Double? {
        guard contains(key) else { return nil }
        return try double(key, default: 0)
    }

    public func int(_ key: String, default defaultValue: Int) throws -> Int {
        guard let v = values[key] else { return defaultValue }
        switch v {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 1e15: return Int(d)
        default: throw ConfigError.wrongType(context: context, key: key, expected: "an integer", found: v)
        }
    }

    public func optionalInt(_ key: String) throws -> Int? {
        guard contains(key) else { return nil }
        return try int(key, default: 0)
    }

    public func bool(_ key: String, default defaultValue: Bool) throws -> Bool {
        guard let v = values[key] else { return defaultValue }
        if case .bool(let b) = v { return b }
        throw ConfigError.wrongType(context: context, key: key, expected: "true or false", found: v)
    }

    public func string(_ key: String, default defaultValue: String) throws -> String {
        guard let v = values[key] else { return defaultValue }
        if case .string(let s) = v { return s }
        throw ConfigError.wrongType(context: context, key: key, expected: "a string", found: v)
    }

    /// A list of strings; a single string is taken as a list of one (SpeeChain accepts both).
    public func optionalStringList(_ key: String) throws -> [String]? {
        guard let v = values[key] else { return nil }
        switch v {
        case .null: return nil
        case .string(let s): return [s]
        case .list(let items):
            return try items.map {
                guard case .string(let s) = $0 else {
                    throw ConfigError.wrongType(context: context, key: key, expected: "a list of names", found: v)
                }
                return s
            }
        default: throw ConfigError.wrongType(context: context, key: key, expected: "a list of names", found: v)
        }
    }

    public func doublePair(_ key: String, default defaultValue: (Double, Double)) throws -> (Double, Double) {
        guard let v = values[key] else { return defaultValue }
        if case .list(let items) = v, items.count == 2 {
            func num(_ x: ConfigValue) -> Double? {
                switch x { case .int(let i): return Double(i); case .double(let d): return d; default: return nil }
            }
            if let a = num(items[0]), let b = num(items[1]) {
                guard a.isFinite && b.isFinite else {
                    throw ConfigError.invalidValue(context: context, key: key, reason: "must be finite numbers, found (\(a), \(b))")
                }
                return (a, b)
            }
        }
        throw ConfigError.wrongType(context: context, key: key, expected: "a pair of numbers", found: v)
    }
}

extension ConfigValue {
    /// Sets `value` at a dotted path (`train_cfg.optim_sches.conf.optim_conf.lr`), creating mappings on the way.
    public static func set(_ value: ConfigValue, at path: [String], in tree: inout [String: ConfigValue]) throws {
        guard let head = path.first, !head.isEmpty else { throw ConfigError.conflict("empty key in '\(path.joined(separator: "."))'") }
        if path.count == 1 { tree[head] = value; return }
        var child: [String: ConfigValue] = [:]
        switch tree[head] {
        case nil, .null?: break
        case .map(let m)?: child = m
        case let other?:
            throw ConfigError.conflict("cannot set '\(path.joined(separator: "."))': '\(head)' is \(other.typeName), not a mapping")
        }
        try set(value, at: Array(path.dropFirst()), in: &child)
        tree[head] = .map(child)
    }
}

extension ConfigValue: Decodable {
    /// Decodes any JSON/YAML scalar, list or mapping, trying the narrowest type first (bool, int, double, string).
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let l = try? c.decode([ConfigValue].self) { self = .list(l) }
        else { self = .map(try c.decode([String: ConfigValue].self)) }
    }
}
