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
    private var sums: [Int: (count: Int, sumOfSquares: Double)] = [:]   // by the tensor's offset

    public init() {}

    /// How many tensors have a record now (tests and reports).
    public var recordedTensors: Int { sums.count }

    /// Records Σ g² of the gradient values offset ..< offset + count as they are now; a non-finite sum is not
    /// recorded (the pass then computes it in double precision, where a float32 sum of squares may have overflowed).
    public func record(offset: Int, count: Int, sumOfSquares: Double) {
        if sumOfSquares.isFinite { sums[offset] = (count, sumOfSquares) } else { sums[offset] = nil }
    }

    /// Forgets the record of the tensor at `offset`, if any.
    @inline(__always)
    public func forget(offset: Int) {
        if !sums.isEmpty { sums[offset] = nil }
    }

    /// Forgets every record that overlaps `ranges`.
    public func forget(_ ranges: [Range<Int>]) {
        guard !sums.isEmpty else { return }
        for (offset, entry) in sums where ranges.contains(where: { $0.overlaps(offset..<(offset + entry.count)) }) {
            sums[offset] = nil
        }
    }

    /// The recorded Σ g² of the tensors that lie inside `ranges` and the parts of `ranges` they leave uncovered
    /// (in order), and forgets those records — the pass over `rest` plus `sumOfSquares` is the Σ g² of `ranges`.
    public func take(_ ranges: [Range<Int>]) -> (sumOfSquares: Double, values: Int, rest: [Range<Int>]) {
        guard !sums.isEmpty else { return (0, 0, ranges) }
        var total = 0.0, values = 0
        var rest: [Range<Int>] = []
        let inside = sums.filter { offset, entry in ranges.contains { $0.contains(offset) && offset + entry.count <= $0.upperBound } }
            .sorted { $0.key < $1.key }
        var k = 0
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            var start = r.lowerBound
            while k < inside.count, inside[k].key < r.upperBound {
                let (offset, entry) = (inside[k].key, inside[k].value)
                if offset > start { rest.append(start..<offset) }
                total += entry.sumOfSquares
                values += entry.count
                start = offset + entry.count
                sums[offset] = nil
                k += 1
            }
            if start < r.upperBound { rest.append(start..<r.upperBound) }
        }
        forget(ranges)   // records straddling a range's border are not used; none is left behind
        return (total, values, rest)
    }
}
