import CMPI
import Foundation

/// A Communicator over Open MPI's MPI_COMM_WORLD. Started by mpirun or srun it is one rank of the job; started
/// alone, MPI's singleton init makes it a world of one. Every MPI error is turned into a thrown error naming
/// the call and the rank. Every collective runs under the CollectiveWatchdog: nonblocking MPI polled against
/// `collectiveTimeout`, so that a rank that never arrives ends the job (CollectiveTimeout) instead of hanging it.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let comm: MPI_Comm
    /// Shared-memory windows to free (collectively) before MPI_Finalize.
    private var windows: [MPI_Win] = []
    private let watchdog: CollectiveWatchdog
    /// Stable storage for the small collectives' values (1 + size Int64), valid while their requests are in flight.
    private let scratch: UnsafeMutablePointer<Int64>

    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            Self.preferBandwidthOptimalIallreduce()
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
            guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: "MPI_Init_thread", code: rc, rank: nil) }
        }
        comm = scm_comm_world()
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
        var probe: MPI_Comm? = nil
        let rc = MPI_Comm_dup(comm, &probe)
        guard rc == MPI_SUCCESS, let probe else { throw DistributedError.mpi(call: "MPI_Comm_dup", code: rc, rank: rank) }
        watchdog = CollectiveWatchdog(rank: rank, size: size, comm: comm, probeComm: probe)
        scratch = .allocate(capacity: 1 + size)
        scratch.initialize(repeating: 0, count: 1 + size)
    }

    deinit { scratch.deallocate() }

    /// Open MPI's libnbc runs every in-place MPI_Iallreduce over a binomial tree (the whole buffer into rank 0 and
    /// back out), 1.3× the blocking MPI_Allreduce on the bench's 42 MB gradient here; its Rabenseifner algorithm
    /// (reduce-scatter + allgather, its ring when count < ranks) is bandwidth-optimal, and as fast or faster.
    /// A choice of the user's (this variable, or `mpirun --mca coll_libnbc_iallreduce_algorithm N`) is kept.
    private static func preferBandwidthOptimalIallreduce() {
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0)
    }

    /// True when this process was started by an MPI launcher (mpirun/mpiexec or srun with PMIx/PMI).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
    }

    /// Whether MPI_Init has run in this process (a world of one never initialises MPI).
    public static var isInitialized: Bool {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        return initialized != 0
    }

    /// Seconds a rank waits in one collective for the others before it ends the job (`collective_timeout`).
    public var collectiveTimeout: Double {
        get { watchdog.timeout }
        set { watchdog.timeout = newValue }
    }

    /// What the caller is doing, named if a collective times out ("step 37").
    public var context: String? {
        get { watchdog.context }
        set { watchdog.context = newValue }
    }

    /// Collectives entered so far (the call count a timeout names when no context is set).
    public var collectiveCalls: Int { watchdog.calls }

    private func check(_ rc: Int32, _ call: String) throws {
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: call, code: rc, rank: rank) }
    }

    /// Elements per MPI_Iallreduce of floats (the bench's --sync_chunk); nil: one call per buffer.
    public var floatChunk: Int? = nil

    /// MPI calls made by `allreduceSum` of floats so far, one per chunk.
    public private(set) var floatAllreduceCalls = 0

    /// Sums in place, in chunks of `floatChunk` (MPI counts are Int32: long buffers always go in chunks).
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        try watchdog.run(.allreduce) {
            floatAllreduceCalls += try sumInPlace(UnsafeMutableRawPointer(buffer), count: count, type: scm_float(), over: comm,
                                                  chunk: floatChunk ?? count)
        }
    }

    /// Sums `parts` float buffers in place over `comm`, a sub-communicator of this one's ranks, as one watched
    /// collective of this communicator (every rank of it calls this at the same point; each part's count is the
    /// same on the ranks of `comm`, zero-length parts send nothing). `part(i)` gives part i.
    func allreduceSum(over comm: MPI_Comm, parts: Int, _ part: (Int) -> (UnsafeMutablePointer<Float>, Int)) throws {
        guard size > 1 else { return }
        try watchdog.run(.allreduce) {
            for i in 0..<parts {
                let (buffer, count) = part(i)
                try sumInPlace(UnsafeMutableRawPointer(buffer), count: count, type: scm_float(), over: comm)
            }
        }
    }

    /// In-place MPI_Iallreduce sums of `count` elements (floats or doubles, as `type` says) over `comm`, in calls of
    /// at most `chunk` elements, each completed under the watchdog; inside `watchdog.run`. Returns the calls made.
    @discardableResult
    private func sumInPlace(_ buffer: UnsafeMutableRawPointer, count: Int, type: MPI_Datatype, over comm: MPI_Comm,
                            chunk: Int = Int(Int32.max)) throws -> Int {
        var typeSize: Int32 = 0
        MPI_Type_size(type, &typeSize)
        let chunk = min(max(chunk, 1), Int(Int32.max))
        var offset = 0, calls = 0
        while offset < count {
            let n = min(count - offset, chunk)
            try watchdog.complete("MPI_Iallreduce") {
                MPI_Iallreduce(scm_in_place(), buffer + offset * Int(typeSize), Int32(n), type, scm_op_sum(), comm, &$0)
            }
            calls += 1
            offset += n
        }
        return calls
    }

    /// One plain blocking in-place MPI_Allreduce (sum) of `count` floats: the reference a gradient synchronisation
    /// is measured against (the bench calls it after a watched barrier; it is not watched itself). Returns the
    /// seconds the call took on this rank.
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
        try watchdog.run(.allreduce) {
            try sumInPlace(UnsafeMutableRawPointer(buffer), count: count, type: scm_double(), over: comm)
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        guard size > 1, count > 0 else { return }
        try watchdog.run(.broadcast) {
            var offset = 0
            while offset < count {
                let n = min(count - offset, Int(Int32.max))
                try watchdog.complete("MPI_Ibcast") {
                    MPI_Ibcast(buffer + offset, Int32(n), scm_float(), Int32(root), comm, &$0)
                }
                offset += n
            }
        }
    }

    public func allreduceMin(_ value: Int) throws -> Int {
        guard size > 1 else { return value }
        scratch[0] = Int64(value)
        try watchdog.run(.allreduceMin) {
            try watchdog.complete("MPI_Iallreduce") {
                MPI_Iallreduce(scm_in_place(), scratch, 1, scm_int64(), scm_op_min(), comm, &$0)
            }
        }
        return Int(scratch[0])
    }

    public func allgather(_ value: Int64) throws -> [Int64] {
        guard size > 1 else { return [value] }
        scratch[0] = value
        try watchdog.run(.allgather) {
            try watchdog.complete("MPI_Iallgather") {
                MPI_Iallgather(scratch, 1, scm_int64(), scratch + 1, 1, scm_int64(), comm, &$0)
            }
        }
        return Array(UnsafeBufferPointer(start: scratch + 1, count: size))
    }

    public func gather(_ send: UnsafePointer<Float>, count: Int, into receive: UnsafeMutablePointer<Float>?, root: Int) throws {
        guard size > 1 else { receive?.update(from: send, count: count); return }
        precondition(count <= Int(Int32.max), "one MPI_Igather carries at most Int32.max elements per rank")
        precondition(rank != root || receive != nil, "the root of a gather needs a receive buffer")
        try watchdog.run(.gather) {
            try watchdog.complete("MPI_Igather") {
                MPI_Igather(send, Int32(count), scm_float(), receive, Int32(count), scm_float(), Int32(root), comm, &$0)
            }
        }
    }

    /// Every rank has arrived: the watchdog's arrival phase alone.
    public func barrier() throws {
        guard size > 1 else { return }
        try watchdog.run(.barrier) {}
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }

    /// Keeps a window (locked for passive access) until `finalize`, which frees it on every rank.
    func keepUntilFinalize(_ window: MPI_Win) { windows.append(window) }

    /// Ends MPI cleanly (the shared-memory windows first); call once at the end of a successful run.
    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        guard finalized == 0 else { return }
        for w in windows {
            MPI_Win_unlock_all(w)
            var freed: MPI_Win? = w
            MPI_Win_free(&freed)
        }
        windows = []
        MPI_Finalize()
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
