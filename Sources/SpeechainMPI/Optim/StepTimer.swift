import Foundation

/// Accumulates wall time per (category, optimizer name), SpeeChain's `time_func(["loss_backward_time", name])`.
public final class StepTimer {
    public struct Key: Hashable, Sendable { public let category: String; public let name: String }
    public private(set) var seconds: [Key: Double] = [:]

    public init() {}

    @inline(__always) static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    public func measure<T>(_ category: String, _ name: String, _ body: () throws -> T) rethrows -> T {
        let start = Self.now()
        defer { seconds[Key(category: category, name: name), default: 0] += Double(Self.now() - start) * 1e-9 }
        return try body()
    }

    public func total(_ category: String) -> Double {
        seconds.filter { $0.key.category == category }.values.reduce(0, +)
    }

    public func reset() { seconds.removeAll(keepingCapacity: true) }
}
