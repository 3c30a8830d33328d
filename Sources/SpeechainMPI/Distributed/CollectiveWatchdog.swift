import CMPI
import Foundation

/// The collectives an MPICommunicator offers, as a timeout names them.
public enum Collective: Int64, Sendable, CustomStringConvertible {
    case allreduce = 1, allreduceMin, broadcast, allgather, barrier, gather

    public var description: String {
        switch self {
        case .allreduce: return "allreduce"
        case .allreduceMin: return "allreduce min"
        case .broadcast: return "broadcast"
        case .allgather: return "allgather"
        case .barrier: return "barrier"
        case .gather: return "gather"
        }
    }
}

/// A collective some rank did not reach within `collective_timeout` seconds: names the collective, what the caller
/// was doing (the communicator's `context`, e.g. "step 37") or else this rank's call count, and the missing ranks.
public struct CollectiveTimeout: Error, CustomStringConvertible, Equatable {
    public var collective: Collective
    public var context: String?
    /// This rank's collectives so far, this one included.
    public var call: Int
    public var seconds: Double
    /// The ranks that did not answer from this collective (in rank order).
    public var missing: [Int]
    /// Ranks that answered from another collective, as "rank 2 is in barrier (call 13)".
    public var elsewhere: [String] = []

    public var description: String {
        let label = context.map { $0.isEmpty ? "call \(call)" : $0 } ?? "call \(call)"
        let time = seconds == seconds.rounded() && seconds < 1e15 ? String(Int(seconds)) : String(format: "%g", seconds)
        var line = "collective \(collective) (\(label)) timed out after \(time) s "
        if missing.isEmpty {
            line += "with every rank in it (the transfer itself stalled)"
        } else {
            let shown = missing.prefix(16).map(String.init).joined(separator: ", ")
            line += "waiting for rank(s) \(shown)" + (missing.count > 16 ? ", … (\(missing.count) ranks)" : "")
        }
        if !elsewhere.isEmpty { line += "; " + elsewhere.joined(separator: "; ") }
        return line
    }
}

/// The watchdog on every collective of an MPICommunicator: a rank that is alive but stuck (stopped, swapping, hung)
/// ends the job after `timeout` seconds instead of leaving the others spinning in MPI forever.
///
/// Each collective is nonblocking MPI polled against a deadline, `timeout` seconds after this rank entered it, in
/// two phases on the caller's thread (no thread of its own; MPI stays MPI_THREAD_FUNNELED):
/// - arrival: an MPI_Ibarrier, complete once every rank has entered the collective. Spun on for `arrivalSpin`,
///   then tested after naps growing from `firstNap` to `maxNap`, so a rank waiting for a late or stuck one sleeps
///   instead of burning a core; a late arrival costs this rank at most one nap.
/// - transfer: the data collective (MPI_Iallreduce, MPI_Ibcast, MPI_Iallgather), spun on for up to `transferSpin`
///   (every rank is in it, so this is the transfer's own time), then tested after naps likewise.
/// MPI_Iallreduce alone cannot say who is missing, so past the deadline this rank asks every other rank, point to
/// point on a communicator of the watchdog's own, which collective it is in; a rank answers from its polling loop
/// whenever it waits in a collective. Ranks that do not answer within `grace`, or answer from another collective,
/// are the missing ones. The lowest rank present throws at once (the Launcher prints its line and MPI_Aborts);
/// the others give it one more `grace` before throwing themselves, so the job usually ends with one line, within
/// timeout + 1 s (+ 1 s), + the abort. While collectives complete in time the only cost is the arrival barrier
/// (≈ 1 µs between two ranks of a node) and one clock read per test.
final class CollectiveWatchdog {
    let rank: Int
    let size: Int
    /// Seconds a rank waits in one collective before it ends the job.
    var timeout: Double = 600
    /// What the caller is doing, named in a timeout ("step 37"); nil: this rank's call count is named instead.
    var context: String?
    /// Collectives entered so far on this rank.
    private(set) var calls = 0

    static let arrivalSpin = 0.005
    static let transferSpin = 1.0
    static let firstNap = 0.000_05
    static let maxNap = 0.001
    static let grace = 1.0
    static let queryTag: Int32 = 1
    static let answerTag: Int32 = 2

    private let comm: MPI_Comm
    private let probeComm: MPI_Comm
    private var current = Collective.barrier
    private var deadline = 0.0
    /// Incoming query (2 values) and outgoing query (2 values).
    private let queryBuffer: UnsafeMutablePointer<Int64>
    /// One outgoing answer (call, collective) per asking rank, stable until MPI has sent it.
    private let answerBuffer: UnsafeMutablePointer<Int64>

    /// `comm` carries the collectives; `probeComm` (a duplicate) carries only the watchdog's queries and answers.
    init(rank: Int, size: Int, comm: MPI_Comm, probeComm: MPI_Comm) {
        self.rank = rank
        self.size = size
        self.comm = comm
        self.probeComm = probeComm
        queryBuffer = .allocate(capacity: 4)
        queryBuffer.initialize(repeating: 0, count: 4)
        answerBuffer = .allocate(capacity: 2 * size)
        answerBuffer.initialize(repeating: 0, count: 2 * size)
    }

    deinit {
        queryBuffer.deallocate()
        answerBuffer.deallocate()
    }

    /// Runs one collective: waits until every rank has entered it, then runs `transfer`, whose data requests go
    /// through `complete`. The deadline covers both.
    func run(_ collective: Collective, _ transfer: () throws -> Void) throws {
        calls += 1
        current = collective
        deadline = Self.now() + timeout
        var request: MPI_Request? = nil
        try check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
        try wait(&request, spin: Self.arrivalSpin)
        try transfer()
    }

    /// Starts one nonblocking data request (`start` returns its MPI error code) and waits for it.
    func complete(_ call: String, _ start: (inout MPI_Request?) -> Int32) throws {
        var request: MPI_Request? = nil
        try check(start(&request), call)
        try wait(&request, spin: Self.transferSpin)
    }

    private func wait(_ request: inout MPI_Request?, spin: Double) throws {
        var done: Int32 = 0
        try check(MPI_Test(&request, &done, scm_status_ignore()), "MPI_Test")
        if done != 0 { return }
        let spinEnd = Self.now() + spin
        var nap = Self.firstNap
        var polls = 0
        while true {
            try check(MPI_Test(&request, &done, scm_status_ignore()), "MPI_Test")
            if done != 0 { return }
            let t = Self.now()
            if t >= deadline { try timedOut() }
            polls &+= 1
            if t < spinEnd {
                if polls & 255 == 0 { try answerQueries() }
            } else {
                try answerQueries()
                Self.sleep(nap)
                nap = min(nap * 2, Self.maxNap)
            }
        }
    }

    /// Answers every waiting query with this rank's call count and collective.
    private func answerQueries() throws {
        while true {
            var source: Int32 = -1
            try check(scm_iprobe_any_source(Self.queryTag, probeComm, &source), "MPI_Iprobe")
            guard source >= 0 else { return }
            try check(MPI_Recv(queryBuffer, 2, scm_int64(), source, Self.queryTag, probeComm, scm_status_ignore()), "MPI_Recv")
            let answer = answerBuffer + 2 * Int(source)
            answer[0] = Int64(calls)
            answer[1] = current.rawValue
            var request: MPI_Request? = nil
            try check(MPI_Isend(answer, 2, scm_int64(), source, Self.answerTag, probeComm, &request), "MPI_Isend")
            try check(MPI_Request_free(&request), "MPI_Request_free")
        }
    }

    /// Past the deadline: find who is missing, then throw (after the lowest present rank had its chance to abort).
    private func timedOut() throws -> Never {
        let call = calls, collective = current
        let peers = (0..<size).filter { $0 != rank }
        let answers = UnsafeMutablePointer<Int64>.allocate(capacity: 2 * size)   // kept: the job is ending
        answers.initialize(repeating: -1, count: 2 * size)
        var receives = [MPI_Request?](repeating: nil, count: size)
        for p in peers {
            try check(MPI_Irecv(answers + 2 * p, 2, scm_int64(), Int32(p), Self.answerTag, probeComm, &receives[p]), "MPI_Irecv")
        }
        queryBuffer[2] = Int64(call)
        queryBuffer[3] = collective.rawValue
        for p in peers {
            var request: MPI_Request? = nil
            try check(MPI_Isend(queryBuffer + 2, 2, scm_int64(), Int32(p), Self.queryTag, probeComm, &request), "MPI_Isend")
            try check(MPI_Request_free(&request), "MPI_Request_free")
        }
        var answered = Set<Int>()
        let end = Self.now() + Self.grace
        while answered.count < peers.count && Self.now() < end {
            for p in peers where !answered.contains(p) {
                var done: Int32 = 0
                try check(MPI_Test(&receives[p], &done, scm_status_ignore()), "MPI_Test")
                if done != 0 { answered.insert(p) }
            }
            try answerQueries()
            if answered.count < peers.count { Self.sleep(Self.maxNap) }
        }
        var missing: [Int] = [], elsewhere: [String] = []
        for p in peers {
            if answered.contains(p) && answers[2 * p] == Int64(call) && answers[2 * p + 1] == collective.rawValue { continue }
            missing.append(p)
            if answered.contains(p) {
                let place = Collective(rawValue: answers[2 * p + 1]).map(String.init(describing:)) ?? "an unknown collective"
                elsewhere.append("rank \(p) is in \(place) (call \(answers[2 * p]))")
            }
        }
        let lowestPresent = ([rank] + peers.filter { !missing.contains($0) }).min() ?? rank
        if lowestPresent != rank {
            let end = Self.now() + Self.grace
            while Self.now() < end {
                try answerQueries()
                Self.sleep(Self.maxNap)
            }
        }
        throw CollectiveTimeout(collective: collective, context: context, call: call, seconds: timeout,
                                missing: missing, elsewhere: elsewhere)
    }

    private func check(_ rc: Int32, _ call: String) throws {
        guard rc == MPI_SUCCESS else { throw DistributedError.mpi(call: call, code: rc, rank: rank) }
    }

    /// Monotonic seconds.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static func sleep(_ seconds: Double) {
        var ts = timespec(tv_sec: 0, tv_nsec: Int(seconds * 1e9))
        nanosleep(&ts, nil)
    }
}
