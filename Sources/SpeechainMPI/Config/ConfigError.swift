/// Every mistake a user can make in a configuration, each rendered as one line that names the key.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case unknownKey(context: String, key: String, valid: [String])
    case wrongType(context: String, key: String, expected: String, found: ConfigValue)
    case invalidValue(context: String, key: String, reason: String)
    case unknownType(kind: String, name: String, valid: [String])
    case missing(context: String, key: String)
    case conflict(String)
    /// A problem with a whole file (unreadable, malformed YAML), named by its path.
    case file(path: String, message: String)
    /// Several keys of one section at once (so that a recipe's problems are found in one run, not one per run).
    case keys(context: String, message: String)

    public var description: String {
        switch self {
        case .unknownKey(let context, let key, let valid):
            return "\(context): unknown key '\(key)'; valid keys: \(valid.joined(separator: ", "))"
        case .wrongType(let context, let key, let expected, let found):
            return "\(context): '\(key)' must be \(expected), found \(found.typeName) '\(found)'"
        case .invalidValue(let context, let key, let reason):
            return "\(context): '\(key)' \(reason)"
        case .unknownType(let kind, let name, let valid):
            return "unknown \(kind) '\(name)'; valid: \(valid.joined(separator: ", "))"
        case .missing(let context, let key):
            return "\(context): missing required key '\(key)'"
        case .conflict(let message):
            return message
        case .file(let path, let message):
            return "\(path): \(message)"
        case .keys(let context, let message):
            return "\(context): \(message)"
        }
    }
}
