/// The hook an OptimScheduler calls on an update step, before unscaling and clipping, to average the gradients of
/// the parameters it updates across data-parallel replicas. Optim knows only this protocol; Distributed provides
/// the MPI implementation. A world of one needs none (nil), and then no communication happens.
public protocol GradientSynchronizer: AnyObject {
    func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws
}
