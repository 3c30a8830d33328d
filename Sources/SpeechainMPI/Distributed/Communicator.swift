/// What the training code needs from the process group: who am I, how many are we, and the few collectives a
/// data-parallel run uses. The MPI implementation lives beside it; `LocalCommunicator` is the world of one,
/// which does no communication at all.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Sums `count` floats in place across ranks.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Sums `count` doubles in place across ranks.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws
    /// Every rank receives rank 0's `count` floats.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// The minimum of one integer over all ranks.
    func allreduceMin(_ value: Int) throws -> Int
    /// Every rank's value, in rank order.
    func allgather(_ value: Int64) throws -> [Int64]
    /// Rank `root` receives every rank's `count` floats, in rank order (`receive`: size × count floats, used on the
    /// root only).
    func gather(_ send: UnsafePointer<Float>, count: Int, into receive: UnsafeMutablePointer<Float>?, root: Int) throws
    func barrier() throws
    /// What the caller is doing, named if a collective times out: `communicator.context = "step \(stepNum)"`.
    var context: String? { get set }
    /// Ends every rank of the job with `code` (after this rank printed its own message).
    func abort(code: Int32) -> Never
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }
}

/// The world of one: every collective is the identity and nothing is sent anywhere.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) {}
    public func allreduceMin(_ value: Int) -> Int { value }
    public func allgather(_ value: Int64) -> [Int64] { [value] }
    public func gather(_ send: UnsafePointer<Float>, count: Int, into receive: UnsafeMutablePointer<Float>?, root: Int) {
        receive?.update(from: send, count: count)
    }
    public func barrier() {}
    public var context: String?
    public func abort(code: Int32) -> Never { exit(code) }
}

import Foundation
