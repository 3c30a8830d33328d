/// Sums the gradients an OptimScheduler updates across ranks on its update steps: one in-place allreduce per
/// contiguous range (one call when the scheduler updates adjacent modules or the whole model), counted so that a
/// run can report — and a test can assert — calls and bytes per scheduler. The scheduler applies the 1/world size
/// of the average (`averagingFactor`) in its next pass over the gradients.
public final class GradientAllreduce: GradientSynchronizer {
    public let communicator: Communicator
    public private(set) var calls = 0
    public private(set) var bytes = 0

    public init(communicator: Communicator) { self.communicator = communicator }

    public var averagingFactor: Float { 1 / Float(communicator.size) }

    public func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws {
        for r in ranges {
            try communicator.allreduceSum(gradients + r.lowerBound, count: r.count)
            calls += 1
            bytes += r.count * MemoryLayout<Float>.size
        }
    }
}
