import CMPI
import Foundation

/// A Communicator over Open MPI's MPI_COMM_WORLD. Started by mpirun or srun it is one rank of the job; started
/// alone, MPI's singleton init makes it a world of one. Every MPI error is turned into a thrown error naming
/// the call and the rank.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm

    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
            guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: "MPI_Init_thread", code: rc, rank: nil) }
        }
        comm = scm_comm_world()
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
    }

    /// True when this process was started by an MPI launcher (mpirun/mpiexec or srun with PMIx/PMI).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
    }

    private func check(_ rc: Int32, _ call: String) throws {
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: call, code: rc, rank: rank) }
    }

    /// Elements per MPI_Allreduce of floats (the bench's --sync_chunk); nil: one call per buffer.
    public var floatChunk: Int? = nil

    /// MPI calls made by `allreduceSum` of floats so far, one per chunk.
    public private(set) var floatAllreduceCalls = 0

    /// Sums in place, in chunks of `floatChunk` (MPI counts are Int32: long buffers always go in chunks).
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        let chunk = min(max(floatChunk ?? count, 1), Int(Int32.max))
        var offset = 0
        while offset < count {
            let n = min(count - offset, chunk)
            try check(MPI_Allreduce(scm_in_place(), buffer + offset, Int32(n), scm_float(), scm_op_sum(), comm), "MPI_Allreduce")
            floatAllreduceCalls += 1
            offset += n
        }
    }

    /// One plain in-place MPI_Allreduce (sum) of `count` floats: the reference a gradient synchronisation is
    /// measured against. Returns the seconds the call took on this rank.
    @discardableResult
    public func rawAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Double {
        guard size > 1, count > 0 else { return 0 }
        precondition(count <= Int(Int32.max), "one MPI call carries at most Int32.max elements")
        let start = DispatchTime.now().uptimeNanoseconds
        try check(MPI_Allreduce(scm_in_place(), buffer, Int32(count), scm_float(), scm_op_sum(), comm), "MPI_Allreduce")
        return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        try check(MPI_Allreduce(scm_in_place(), buffer, Int32(count), scm_double(), scm_op_sum(), comm), "MPI_Allreduce")
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        guard size > 1, count > 0 else { return }
        var offset = 0
        while offset < count {
            let n = min(count - offset, Int(Int32.max))
            try check(MPI_Bcast(buffer + offset, Int32(n), scm_float(), Int32(root), comm), "MPI_Bcast")
            offset += n
        }
    }

    public func allreduceMin(_ value: Int) throws -> Int {
        guard size > 1 else { return value }
        var v = Int64(value), out: Int64 = 0
        try check(MPI_Allreduce(&v, &out, 1, scm_int64(), scm_op_min(), comm), "MPI_Allreduce")
        return Int(out)
    }

    public func allgather(_ value: Int64) throws -> [Int64] {
        guard size > 1 else { return [value] }
        var v = value
        var out = [Int64](repeating: 0, count: size)
        try out.withUnsafeMutableBufferPointer { buf in
            try check(MPI_Allgather(&v, 1, scm_int64(), buf.baseAddress, 1, scm_int64(), comm), "MPI_Allgather")
        }
        return out
    }

    public func barrier() throws {
        guard size > 1 else { return }
        try check(MPI_Barrier(comm), "MPI_Barrier")
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }

    /// Ends MPI cleanly; call once at the end of a successful run.
    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }
}

/// Failures of the process group, one line each, naming the rank.
public enum DistributedError: Error, CustomStringConvertible, Equatable {
    case mpi(call: String, code: Int32, rank: Int?)
    case diverged(update: Int, checksums: [Int64])
    case injected(rank: Int, step: Int)

    public var description: String {
        switch self {
        case .mpi(let call, let code, let rank):
            return "\(call) failed with MPI error \(code)" + (rank.map { " on rank \($0)" } ?? "")
        case .diverged(let update, let checksums):
            let distinct = Set(checksums).count
            return "ranks diverged: after update \(update) the parameters differ across ranks (\(distinct) distinct checksums over \(checksums.count) ranks)"
        case .injected(let rank, let step):
            return "injected failure on rank \(rank) at step \(step) (--fail_rank/--fail_step test hook)"
        }
    }
}
