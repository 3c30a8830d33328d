/// Sums the gradients an OptimScheduler updates across ranks on its update steps, counted so that a run can report —
/// and a test can assert — calls (one per contiguous range: one when the scheduler updates adjacent modules or the
/// whole model) and bytes per scheduler. With a SharedGradientWindow (the gradients are its segments) the ranges are
/// summed in shared memory on each node and by MPI between nodes; without, by one in-place allreduce per range. The
/// scheduler applies the 1/world size of the average (`averagingFactor`) in its next pass over the gradients.
public final class GradientAllreduce: GradientSynchronizer {
    public let communicator: Communicator
    public let window: SharedGradientWindow?
    public private(set) var calls = 0
    public private(set) var bytes = 0

    public init(communicator: Communicator, window: SharedGradientWindow? = nil) {
        self.communicator = communicator
        self.window = window
    }

    public var averagingFactor: Float { 1 / Float(communicator.size) }

    public func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws {
        if let window {
            precondition(gradients == window.segment, "the gradients are not the shared window's")
            try window.sum(ranges)
        } else {
            for r in ranges { try communicator.allreduceSum(gradients + r.lowerBound, count: r.count) }
        }
        calls += ranges.count
        bytes += ranges.reduce(0) { $0 + $1.count } * MemoryLayout<Float>.size
    }
}
