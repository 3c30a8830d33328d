/// Σ g² of single parameter tensors, recorded by the code that wrote their gradients last while the new values were
/// in registers — Linear's own weight-gradient kernel (`Float32Kernels.weightGradient`) and its bias sum — so that
/// the clipping norm of an update need not read those gradients from memory again (on the benchmark MLP that pass
/// read 42 MB in 1.3–1.7 ms, a fifth of the optimizer phase).
///
/// The rule that keeps a record true: it exists only while nothing else has written its tensor's gradient.
/// - Only an OptimScheduler turns `recording` on, for the backward right before an update whose norm is of the
///   gradients as that backward leaves them: no allreduce and no GradScaler unscaling between the two, the 2-norm
///   (torch's default). It forgets its ranges' records first and turns recording off when the backward returns.
/// - A Linear that writes a gradient records the new sum when `recording` is on and its kernel computed it, and
///   forgets the tensor's record otherwise (a second write in the same backward records the new total again).
/// - The update takes the records inside its ranges (and forgets them); everything it does not find there it reads
///   in the usual pass. Without recording nothing is recorded, and every update reads its gradients as before.
public final class GradientNormTally {
    /// Set by OptimScheduler.backward only (see above).
    public internal(set) var recording = false
    // The records, unordered: tensor offset, value count, Σ g². Plain arrays whose capacity is kept, so that a warm
    // training step allocates nothing here (a model has a few hundred tensors at most: linear searches).
    private var offsets: [Int] = [], counts: [Int] = [], sums: [Double] = []
    private var rest: [Range<Int>] = []

    public init() {}

    /// How many tensors have a record now (tests and reports).
    public var recordedTensors: Int { offsets.count }

    /// Records Σ g² of the gradient values offset ..< offset + count as they are now; a non-finite sum is not
    /// recorded (the pass then computes it in double precision, where a float32 sum of squares may have overflowed).
    public func record(offset: Int, count: Int, sumOfSquares: Double) {
        forget(offset: offset)
        guard sumOfSquares.isFinite else { return }
        offsets.append(offset); counts.append(count); sums.append(sumOfSquares)
    }

    /// Forgets the record of the tensor at `offset`, if any.
    public func forget(offset: Int) {
        if let i = offsets.firstIndex(of: offset) { remove(at: i) }
    }

    /// Forgets every record that overlaps `ranges`.
    public func forget(_ ranges: [Range<Int>]) {
        var i = 0
        while i < offsets.count {
            let tensor = offsets[i]..<(offsets[i] + counts[i])
            if ranges.contains(where: { $0.overlaps(tensor) }) { remove(at: i) } else { i += 1 }
        }
    }

    private func remove(at i: Int) {
        offsets.swapAt(i, offsets.count - 1); counts.swapAt(i, counts.count - 1); sums.swapAt(i, sums.count - 1)
        offsets.removeLast(); counts.removeLast(); sums.removeLast()
    }

    /// The recorded Σ g² of the tensors that lie inside `ranges` (sorted, disjoint, as ParameterStore.ranges gives
    /// them) and the parts of `ranges` they leave uncovered (in order), and forgets those records — the pass over
    /// `rest` plus `sumOfSquares` is the Σ g² of `ranges`. Records straddling a range's border are forgotten unused.
    public func take(_ ranges: [Range<Int>]) -> (sumOfSquares: Double, values: Int, rest: [Range<Int>]) {
        guard !offsets.isEmpty else { return (0, 0, ranges) }
        var total = 0.0, values = 0
        rest.removeAll(keepingCapacity: true)
        for r in ranges {
            var start = r.lowerBound
            while true {
                // the next record inside r at or after `start`
                var next = -1
                for i in offsets.indices where offsets[i] >= start && offsets[i] + counts[i] <= r.upperBound
                    && (next < 0 || offsets[i] < offsets[next]) { next = i }
                guard next >= 0 else { break }
                if offsets[next] > start { rest.append(start..<offsets[next]) }
                total += sums[next]
                values += counts[next]
                start = offsets[next] + counts[next]
                remove(at: next)
            }
            if start < r.upperBound { rest.append(start..<r.upperBound) }
        }
        forget(ranges)
        return (total, values, rest)
    }
}
