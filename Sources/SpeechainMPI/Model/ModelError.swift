/// Model-level mistakes a user can cause, each one line.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case weightsMismatch(source: String, reason: String)
    case unknownLoss(name: String, valid: [String])
    case unknownModule(name: String, valid: [String])
    case dataMismatch(String)

    public var description: String {
        switch self {
        case .weightsMismatch(let source, let reason): return "\(source): weights do not fit the model: \(reason)"
        case .unknownLoss(let name, let valid): return "unknown loss '\(name)'; the model computes: \(valid.joined(separator: ", "))"
        case .unknownModule(let name, let valid): return "unknown module '\(name)'; the model has: \(valid.joined(separator: ", "))"
        case .dataMismatch(let message): return message
        }
    }
}
