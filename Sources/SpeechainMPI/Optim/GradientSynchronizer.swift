/// The hook an OptimScheduler calls on an update step, before unscaling and clipping, to combine the gradients of
/// the parameters it updates across data-parallel replicas. Optim knows only this protocol; Distributed provides
/// the MPI implementation. A world of one needs none (nil), and then no communication happens.
///
/// `synchronize` may leave the gradients as a sum: the scheduler multiplies them by `averagingFactor` (1/world size
/// for an allreduce sum) in the next pass it makes over them anyway — unscaling, clipping or the optimizer step —
/// so that averaging costs no pass of its own.
public protocol GradientSynchronizer: AnyObject {
    func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws
    var averagingFactor: Float { get }
}
