import CKernels
import CMPI
import Foundation

/// The gradient buffer of a model as segments of one MPI shared-memory window, one per rank, when every rank of the
/// job shares one node's memory; and the sum of those segments across the ranks without MPI_Allreduce.
///
/// A sum of the ranges R: (1) a watched barrier: every rank's gradients are written; (2) each rank sums its own
/// 1/W slice of every range over the W segments — in rank order, ((g₀ + g₁) + g₂) + …, so that whichever rank sums
/// a slice, every rank ends with the same bits — into its own segment; (3) a barrier; (4) each rank copies the
/// other ranks' summed slices into its segment; (5) a barrier, before any rank writes its segment again (the
/// optimizer zeroes gradients as it reads them). Per rank and n floats that reads about 2n and writes n, where Open
/// MPI's ring over CMA copies each half into a temporary first; there is no MPI progress engine in between. The
/// barriers are the communicator's own, under the CollectiveWatchdog: a stopped rank ends the job as in any
/// collective. Slices start on 64-byte boundaries, so no two ranks write one cache line.
public final class SharedGradientWindow {
    public let rank: Int
    public let size: Int
    private let communicator: MPICommunicator
    private let window: MPI_Win
    private let bases: [UnsafeMutablePointer<Float>]
    private let sources: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// The store's gradient count when it moved in.
    public let count: Int
    /// This rank's segment: the store's gradients.
    public var segment: UnsafeMutablePointer<Float> { bases[rank] }

    /// Why a job sums by MPI_Allreduce instead (nil when the window is in use): for the start line.
    public enum Fallback: Error, CustomStringConvertible, Equatable {
        case disabled
        case severalNodes(Int)
        case noRoom(directory: String, freeBytes: Int, neededBytes: Int)
        case windowFailed(code: Int32)

        public var description: String {
            switch self {
            case .disabled: return "shared memory switched off"
            case .severalNodes(let n): return "ranks on \(n) nodes"
            case .noRoom(let dir, let free, let needed):
                return "\(dir) takes \(free / 1_000_000) MB on some rank (free space or file-size limit), a shared gradient window needs \(needed / 1_000_000) MB"
            case .windowFailed(let code): return "MPI_Win_allocate_shared failed with MPI error \(code)"
            }
        }
    }

    private init(communicator: MPICommunicator, window: MPI_Win, bases: [UnsafeMutablePointer<Float>], count: Int) {
        self.communicator = communicator
        self.window = window
        self.bases = bases
        self.count = count
        rank = communicator.rank
        size = communicator.size
        sources = .allocate(capacity: max(bases.count, 1))
        sources.initialize(repeating: nil, count: max(bases.count, 1))
    }

    deinit { sources.deallocate() }

    /// The directory Open MPI backs shared-memory windows with (its osc_sm_backing_directory).
    static var backingDirectory: String {
        ProcessInfo.processInfo.environment["OMPI_MCA_osc_sm_backing_directory"] ?? "/dev/shm"
    }

    /// Bytes a window's backing file can take here: the directory's free space, or less under a file-size limit
    /// (`ulimit -f`: growing the file past it would kill the process with SIGXFSZ and leave the file behind).
    static func freeBytes(_ directory: String) -> Int? {
        var s = statvfs()
        guard statvfs(directory, &s) == 0 else { return nil }
        var free = Int(s.f_bavail) * Int(s.f_frsize)
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {   // RLIM_INFINITY
            free = min(free, Int(clamping: limit.rlim_cur))
        }
        return free
    }

    /// Collective: every rank calls it with the same `enabled`. Moves `store`'s gradients into this rank's segment
    /// of a new window and returns it, or returns why not (then nothing changed): not enabled, ranks on several
    /// nodes, too little room in the backing directory (or under a rank's file-size limit) for every segment of the
    /// node with 10% to spare, or the window could not be made. Every rank gets the same answer.
    public static func make(for store: ParameterStore, communicator: MPICommunicator, enabled: Bool) throws
        -> Result<SharedGradientWindow, Fallback> {
        let n = store.gradients.count, bytes = n * MemoryLayout<Float>.size
        guard enabled else { return .failure(.disabled) }
        var node: MPI_Comm? = scm_comm_null()
        var rc = scm_split_shared(communicator.comm, &node)
        guard rc == MPI_SUCCESS, let node else { throw DistributedError.mpi(call: "MPI_Comm_split_type", code: rc, rank: communicator.rank) }
        var nodeSize: Int32 = 0
        MPI_Comm_size(node, &nodeSize)
        // nodes = ranks whose node communicator they lead; every rank learns the count
        var nodeRank: Int32 = 0
        MPI_Comm_rank(node, &nodeRank)
        let nodes = try communicator.allgather(nodeRank == 0 ? 1 : 0).reduce(0, +)
        let needed = Int(Double(bytes) * Double(nodeSize) * 1.1)
        let leastFree = try communicator.allreduceMin(freeBytes(backingDirectory) ?? 0)
        var fallback: Fallback? = nil
        if nodes > 1 { fallback = .severalNodes(Int(nodes)) }
        else if leastFree < needed { fallback = .noRoom(directory: backingDirectory, freeBytes: leastFree, neededBytes: needed) }
        if let fallback {
            var c: MPI_Comm? = node
            MPI_Comm_free(&c)
            return .failure(fallback)
        }
        var base: UnsafeMutablePointer<Float>? = nil
        var window: MPI_Win? = nil
        rc = scm_win_allocate_shared(max(bytes, MemoryLayout<Float>.size), node, &base, &window)
        // every rank must agree before any uses the window
        let madeEverywhere = try communicator.allreduceMin(rc == MPI_SUCCESS && window != nil && base != nil ? 1 : 0) == 1
        guard madeEverywhere, let window, let base else {
            if window != nil { MPI_Win_free(&window) }
            var c: MPI_Comm? = node
            MPI_Comm_free(&c)
            return .failure(.windowFailed(code: rc))
        }
        var bases: [UnsafeMutablePointer<Float>] = []
        for r in 0..<Int(nodeSize) {
            var p: UnsafeMutablePointer<Float>? = nil
            let q = scm_win_shared_query(window, Int32(r), &p)
            guard q == MPI_SUCCESS, let p else { throw DistributedError.mpi(call: "MPI_Win_shared_query", code: q, rank: communicator.rank) }
            bases.append(p)
        }
        // the node's ranks are the world's, in the same order (split_type keeps the world's rank order)
        precondition(Int(nodeRank) == communicator.rank && bases[communicator.rank] == base)
        rc = scm_win_lock_all(window)
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: "MPI_Win_lock_all", code: rc, rank: communicator.rank) }
        let made = SharedGradientWindow(communicator: communicator, window: window, bases: bases, count: n)
        store.adoptGradients(FloatBuffer(borrowing: base, count: n, release: { _ = made }))
        communicator.keepUntilFinalize(window)
        return .success(made)
    }

    /// Rank k's slice of `range`: its 1/W share, boundaries rounded down to 16 floats (64 bytes) from the start.
    @inline(__always) func slice(_ range: Range<Int>, _ k: Int) -> Range<Int> {
        let c = range.count
        let lo = k == 0 ? 0 : (c * k / size) & ~15
        let hi = k == size - 1 ? c : (c * (k + 1) / size) & ~15
        return (range.lowerBound + lo)..<(range.lowerBound + max(lo, hi))
    }

    /// Sums the ranges over the ranks, in place in every rank's segment (steps 1–5 above).
    public func sum(_ ranges: [Range<Int>]) throws {
        try fence()
        let own = bases[rank]
        for r in ranges {
            let s = slice(r, rank)
            guard !s.isEmpty else { continue }
            for k in 0..<size { sources[k] = UnsafePointer(bases[k] + s.lowerBound) }
            ck_sum_sources(VectorPath.current.ck, sources, size, own + s.lowerBound, s.count)
        }
        try fence()
        for r in ranges {
            for k in 0..<size where k != rank {
                let s = slice(r, k)
                if !s.isEmpty { (own + s.lowerBound).update(from: bases[k] + s.lowerBound, count: s.count) }
            }
        }
        try fence()
    }

    /// A watched barrier with this rank's stores made visible before it and the others' after it.
    private func fence() throws {
        MPI_Win_sync(window)
        try communicator.barrier()
        MPI_Win_sync(window)
    }
}

/// A gradient synchronisation that counts its calls (one per contiguous range) and bytes, for the summary.
public protocol CountingSynchronizer: GradientSynchronizer {
    var calls: Int { get }
    var bytes: Int { get }
}

extension GradientAllreduce: CountingSynchronizer {}

/// An OptimScheduler's gradient synchronisation through the node's SharedGradientWindow, counted as
/// GradientAllreduce counts its MPI calls (one per contiguous range).
public final class SharedMemoryAllreduce: CountingSynchronizer {
    public let window: SharedGradientWindow
    public private(set) var calls = 0
    public private(set) var bytes = 0

    public init(window: SharedGradientWindow) { self.window = window }

    public var averagingFactor: Float { 1 / Float(window.size) }

    public func synchronize(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>]) throws {
        precondition(gradients == window.segment, "the gradients are not the shared window's")
        try window.sum(ranges)
        calls += ranges.count
        bytes += ranges.reduce(0) { $0 + $1.count } * MemoryLayout<Float>.size
    }
}
