import CKernels
import CMPI
import Foundation

/// The gradient buffer of a model as segments of one MPI shared-memory window per node, one segment per rank; and
/// the sum of the gradients across the ranks through it instead of one MPI_Allreduce over all of them.
///
/// A sum of the ranges R, with W ranks on each node: (1) a watched barrier: every rank's gradients are written;
/// (2) each rank sums its own 1/W slice of every range over the node's W segments — in node-rank order,
/// ((g₀ + g₁) + g₂) + …, so that whichever rank sums a slice, every rank ends with the same bits — into its own
/// segment; (2b) with several nodes, the ranks holding the same slice on each node (one per node) sum it by
/// MPI_Iallreduce among themselves, every slice at once; (3) a barrier; (4) each rank copies the other ranks' summed
/// slices into its segment; (5) a barrier, before any rank writes its segment again (the optimizer zeroes gradients
/// as it reads them). Per rank and n floats that reads about 2n and writes n inside the node, where Open MPI's ring
/// over CMA copies each part into a temporary first; between nodes each rank sends only its slice, so the network
/// carries the node's sum once rather than every rank's gradient. The barriers and the MPI call are the
/// communicator's own, under the CollectiveWatchdog: a stopped rank ends the job as in any collective. Slices
/// start on 64-byte boundaries, so no two ranks write one cache line.
public final class SharedGradientWindow {
    /// The job's world size (the average divides by it).
    public let worldSize: Int
    /// Ranks per node and this rank's place on its node.
    public let nodeSize: Int
    public let nodeRank: Int
    /// Nodes of the job (1: the sum never leaves the node).
    public let nodes: Int
    private let communicator: MPICommunicator
    private let window: MPI_Win
    /// With several nodes: the ranks of this node rank on every node.
    private let cross: MPI_Comm?
    private let bases: [UnsafeMutablePointer<Float>]
    private let sources: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// This rank's segment: the store's gradients.
    public var segment: UnsafeMutablePointer<Float> { bases[nodeRank] }

    /// Why a job sums by MPI_Allreduce instead, for the start line.
    public enum Fallback: Error, CustomStringConvertible, Equatable {
        case disabled
        case oneRankPerNode(nodes: Int)
        case unevenNodes(nodes: Int, fewest: Int, most: Int)
        case noRoom(directory: String, freeBytes: Int, neededBytes: Int)
        case windowFailed(code: Int32)

        public var description: String {
            switch self {
            case .disabled: return "shared memory switched off"
            case .oneRankPerNode(let n): return "one rank on each of \(n) nodes"
            case .unevenNodes(let n, let fewest, let most): return "ranks on \(n) nodes, \(fewest) to \(most) per node"
            case .noRoom(let dir, let free, let needed):
                return "\(dir) takes \(free / 1_000_000) MB on some rank (free space or file-size limit), a shared gradient window needs \(needed / 1_000_000) MB"
            case .windowFailed(let code): return "MPI_Win_allocate_shared failed with MPI error \(code)"
            }
        }
    }

    /// How the sum runs, for the start line.
    public var description: String {
        nodes == 1 ? "summed in shared memory (\(nodeSize) ranks on one node)"
                   : "summed in shared memory on each of \(nodes) nodes (\(nodeSize) ranks each), then by MPI_Allreduce between them"
    }

    private init(communicator: MPICommunicator, window: MPI_Win, cross: MPI_Comm?, bases: [UnsafeMutablePointer<Float>],
                 nodeRank: Int, nodes: Int) {
        self.communicator = communicator
        self.window = window
        self.cross = cross
        self.bases = bases
        self.nodeRank = nodeRank
        self.nodes = nodes
        nodeSize = bases.count
        worldSize = communicator.size
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
    /// of a new window and returns it, or returns why not (then nothing changed): not enabled, one rank per node,
    /// nodes with different numbers of ranks, too little room in the backing directory (or under a rank's file-size
    /// limit) for every segment of a node with 10% to spare, or the window could not be made. Every rank gets the
    /// same answer. GradientAllreduce(communicator:window:) then sums through it.
    public static func make(for store: ParameterStore, communicator: MPICommunicator, enabled: Bool) throws
        -> Result<SharedGradientWindow, Fallback> {
        let n = store.gradients.count, bytes = n * MemoryLayout<Float>.size
        guard enabled else { return .failure(.disabled) }
        var node: MPI_Comm? = scm_comm_null()
        var rc = scm_split_shared(communicator.comm, &node)
        guard rc == MPI_SUCCESS, let node else { throw DistributedError.mpi(call: "MPI_Comm_split_type", code: rc, rank: communicator.rank) }
        var nodeSize: Int32 = 0, nodeRank: Int32 = 0
        MPI_Comm_size(node, &nodeSize)
        MPI_Comm_rank(node, &nodeRank)
        // nodes = ranks that lead their node; every rank learns the count, and the fewest and most ranks per node
        let nodes = try communicator.allgather(nodeRank == 0 ? 1 : 0).reduce(0, +)
        let fewest = try communicator.allreduceMin(Int(nodeSize)), most = -(try communicator.allreduceMin(-Int(nodeSize)))
        let needed = Int(Double(bytes) * Double(most) * 1.1)
        let leastFree = try communicator.allreduceMin(freeBytes(backingDirectory) ?? 0)
        var fallback: Fallback? = nil
        if most == 1 { fallback = .oneRankPerNode(nodes: Int(nodes)) }   // nothing to share
        else if fewest != most { fallback = .unevenNodes(nodes: Int(nodes), fewest: fewest, most: most) }
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
        precondition(bases[Int(nodeRank)] == base)
        var cross: MPI_Comm? = nil
        if nodes > 1 {
            // one rank per node, the same node rank everywhere, ordered by world rank
            rc = MPI_Comm_split(communicator.comm, nodeRank, Int32(communicator.rank), &cross)
            guard rc == MPI_SUCCESS, cross != nil else { throw DistributedError.mpi(call: "MPI_Comm_split", code: rc, rank: communicator.rank) }
        }
        rc = scm_win_lock_all(window)
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: "MPI_Win_lock_all", code: rc, rank: communicator.rank) }
        let made = SharedGradientWindow(communicator: communicator, window: window, cross: cross, bases: bases,
                                        nodeRank: Int(nodeRank), nodes: Int(nodes))
        store.adoptGradients(FloatBuffer(borrowing: base, count: n, release: { _ = made }))
        communicator.keepUntilFinalize(window)
        return .success(made)
    }

    /// Node rank k's slice of `range`: its 1/W share, boundaries rounded down to 16 floats (64 bytes) from the start.
    @inline(__always) func slice(_ range: Range<Int>, _ k: Int) -> Range<Int> {
        let c = range.count
        let lo = k == 0 ? 0 : (c * k / nodeSize) & ~15
        let hi = k == nodeSize - 1 ? c : (c * (k + 1) / nodeSize) & ~15
        return (range.lowerBound + lo)..<(range.lowerBound + max(lo, hi))
    }

    /// Sums the ranges over the ranks, in place in every rank's segment (steps 1–5 above).
    public func sum(_ ranges: [Range<Int>]) throws {
        try fence()
        let own = bases[nodeRank]
        for r in ranges {
            let s = slice(r, nodeRank)
            guard !s.isEmpty else { continue }
            for k in 0..<nodeSize { sources[k] = UnsafePointer(bases[k] + s.lowerBound) }
            ck_sum_sources(VectorPath.current.ck, sources, nodeSize, own + s.lowerBound, s.count)
        }
        if let cross {
            // the same slices on every node: one watched collective, one MPI_Iallreduce per non-empty slice
            try communicator.allreduceSum(over: cross, parts: ranges.count) { i in
                let s = slice(ranges[i], nodeRank)
                return (own + s.lowerBound, s.count)
            }
        }
        try fence()
        for r in ranges {
            for k in 0..<nodeSize where k != nodeRank {
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
