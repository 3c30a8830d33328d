/// Bad benchmark arguments and runs that blew up, one line each.
public enum BenchmarkError: Error, CustomStringConvertible, Equatable {
    case invalid(option: String, reason: String)
    /// The loss of the scaling benchmark became non-finite.
    case diverged(rank: Int, step: Int)
    /// One variant of the AMP benchmark ended with non-finite parameters.
    case divergedVariant(String)

    public var description: String {
        switch self {
        case .invalid(let option, let reason): return "--\(option) \(reason)"
        case .diverged(let rank, let step): return "the loss is not finite on rank \(rank) at step \(step) (lower --lr)"
        case .divergedVariant(let variant): return "the \(variant) run's parameters are not finite (lower --lr)"
        }
    }
}
