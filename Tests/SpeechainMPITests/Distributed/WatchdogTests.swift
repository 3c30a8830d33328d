import Foundation
import MallocCounter
import Testing
@testable import SpeechainMPI

/// A job under real `mpirun` that a test watches while it runs: its output so far, its ranks' PIDs (mpirun's
/// children, told apart by OMPI_COMM_WORLD_RANK in their environment), their CPU time; signals rank by rank.
final class RunningJob: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var out = Data(), err = Data()
    private let readers = DispatchGroup()
    private var ranks: [Int: pid_t] = [:]

    init(np: Int, _ arguments: [String]) throws {
        process.executableURL = MPIRun.mpirun
        process.arguments = ["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + arguments
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_odls_base_sigkill_timeout"] = "0"
        process.environment = env
        let o = Pipe(), e = Pipe()
        process.standardOutput = o
        process.standardError = e
        try process.run()
        read(o.fileHandleForReading, error: false)
        read(e.fileHandleForReading, error: true)
    }

    private func read(_ handle: FileHandle, error: Bool) {
        readers.enter()
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                lock.withLock { if error { err.append(chunk) } else { out.append(chunk) } }
            }
            readers.leave()
        }
    }

    var stdout: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var stderr: String { lock.withLock { String(decoding: err, as: UTF8.self) } }
    var isRunning: Bool { process.isRunning }
    var status: Int32 { process.terminationStatus }

    /// Polls until `condition` holds or `seconds` pass.
    static func poll(seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    /// Waits until mpirun has exited and its output is read; false after `seconds`.
    func waitForExit(seconds: Double) -> Bool {
        guard Self.poll(seconds: seconds, { !process.isRunning }) else { return false }
        process.waitUntilExit()
        _ = readers.wait(timeout: .now() + 10)
        return true
    }

    /// The PID of every rank, once all `count` have started the executable.
    func rankPIDs(count: Int, seconds: Double = 10) -> [Int: pid_t]? {
        let parent = process.processIdentifier
        let found = Self.poll(seconds: seconds) {
            var found: [Int: pid_t] = [:]
            for pid in Self.children(of: parent) {
                let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
                guard exe.hasSuffix("/speechain-mpi"),
                      let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
                for entry in environ.split(separator: 0) {
                    let text = String(decoding: entry, as: UTF8.self)
                    if text.hasPrefix("OMPI_COMM_WORLD_RANK="), let r = Int(text.dropFirst("OMPI_COMM_WORLD_RANK=".count)) { found[r] = pid }
                }
            }
            lock.withLock { ranks = found }
            return found.count == count
        }
        return found ? lock.withLock { ranks } : nil
    }

    static func children(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { statFields($0).count > 1 && statFields($0)[1] == "\(parent)" }
    }

    /// /proc/PID/stat from the field after the command name: state, ppid, … (utime and stime are [11] and [12]).
    static func statFields(_ pid: pid_t) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return [] }
        let text = String(decoding: data, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return [] }
        return text[text.index(after: close)...].split(separator: " ").map(String.init)
    }

    /// CPU seconds (user + system) the process has used.
    static func cpuSeconds(_ pid: pid_t) -> Double {
        let f = statFields(pid)
        guard f.count > 12, let user = Double(f[11]), let system = Double(f[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Leaves nothing behind: SIGKILL to every rank found (a stopped one too) and to mpirun.
    func killAll() {
        for pid in lock.withLock({ Array(ranks.values) }) { kill(pid, SIGKILL) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        _ = readers.wait(timeout: .now() + 10)
    }
}

/// The collective watchdog (collective_timeout): a rank that is alive but never reaches a collective ends the job,
/// named, instead of hanging it; a shorter stall is only a wait; a world of one has no MPI at all.
@Suite(.serialized) struct WatchdogTests {
    /// The case: rank 1 stopped (SIGSTOP) mid-training. Rank 0 must end the job within the timeout plus
    /// a few seconds, with a non-zero status and one line naming rank 1, and must sleep, not spin, while it waits.
    @Test func aStoppedRankEndsTheJobNamedWithinTheTimeout() throws {
        let job = try RunningJob(np: 2, ["--num_epochs", "1000000", "--report_per_steps", "1000", "--collective_timeout", "5"])
        defer { job.killAll() }
        #expect(RunningJob.poll(seconds: 60) { job.stdout.contains("epoch 2:") }, "training never ran: \(job.stderr)")
        let ranks = try #require(job.rankPIDs(count: 2))
        let zero = try #require(ranks[0]), one = try #require(ranks[1])
        try #require(job.isRunning, "the job ended before the test stopped a rank: \(job.stderr)")
        kill(one, SIGSTOP)
        let stopped = Date()
        // Rank 0's CPU between 0.5 s and 4.5 s after the stop (it is waiting; the timeout is at 5 s).
        Thread.sleep(forTimeInterval: 0.5)
        let cpu0 = RunningJob.cpuSeconds(zero)
        Thread.sleep(forTimeInterval: 4)
        let waitingCPU = (RunningJob.cpuSeconds(zero) - cpu0) / 4
        let ended = job.waitForExit(seconds: 40)
        let seconds = Date().timeIntervalSince(stopped)
        #expect(ended && seconds < 15, "the job ran on \(seconds) s after rank 1 stopped")
        #expect(!ended || job.status != 0)
        let lines = job.stderr.split(separator: "\n").filter { $0.hasPrefix("speechain-mpi: error:") }
        // the line says where the job was: a step, or the end of an epoch (validation, the early-stopping vote)
        #expect(lines.count == 1 && (lines[0].contains(" (step ") || lines[0].contains(" (end of epoch ")), "\(job.stderr)")
        #expect(lines.count == 1 && lines[0].hasPrefix("speechain-mpi: error: rank 0: collective ")
                    && lines[0].hasSuffix(" timed out after 5 s waiting for rank(s) 1"), "\(job.stderr)")
        #expect(waitingCPU < 0.25, "the waiting rank used \(waitingCPU) of a core")
    }

    /// A stall shorter than the timeout (rank 1 stopped for 2 s of a 5 s timeout) is only a wait: the job finishes.
    @Test func aStallShorterThanTheTimeoutIsOnlyAWait() throws {
        let job = try RunningJob(np: 2, ["--num_epochs", "1000", "--report_per_steps", "1000", "--collective_timeout", "5"])
        defer { job.killAll() }
        #expect(RunningJob.poll(seconds: 60) { job.stdout.contains("epoch 2:") }, "training never ran: \(job.stderr)")
        let ranks = try #require(job.rankPIDs(count: 2))
        let one = try #require(ranks[1])
        kill(one, SIGSTOP)
        Thread.sleep(forTimeInterval: 2)
        let stillRunning = job.isRunning
        kill(one, SIGCONT)
        #expect(stillRunning, "the job ended during the stall: \(job.stderr)")
        #expect(job.waitForExit(seconds: 300))
        #expect(job.status == 0, "\(job.stderr)")
        #expect(job.stdout.contains("epoch 1000:"))
    }

    /// Started alone, the Launcher hands the job a LocalCommunicator and MPI is never initialised (the watchdog
    /// is code in the MPI collectives, with no thread of its own, so nothing of it exists either).
    @Test func aWorldOfOneNeverInitialisesMPI() throws {
        try #require(!MPICommunicator.launchedByMPI)
        var kind = ""
        let status = Launcher.run(setUp: { communicator in communicator }, work: { communicator, _ in
            kind = String(describing: type(of: communicator))
            try communicator.barrier()
            #expect(try communicator.allreduceMin(3) == 3)
        })
        #expect(status == 0)
        #expect(kind == "LocalCommunicator")
        #expect(!MPICommunicator.isInitialized)
    }

    /// The line a timeout prints, from its parts.
    @Test func theTimeoutLineNamesCollectiveContextAndRanks() {
        var t = CollectiveTimeout(collective: .allreduce, context: "step 37", call: 12, seconds: 5, missing: [1])
        #expect(t.description == "collective allreduce (step 37) timed out after 5 s waiting for rank(s) 1")
        t.context = nil
        t.collective = .barrier
        t.seconds = 2.5
        t.missing = [1, 3]
        t.elsewhere = ["rank 3 is in allgather (call 13)"]
        #expect(t.description == "collective barrier (call 12) timed out after 2.5 s waiting for rank(s) 1, 3; rank 3 is in allgather (call 13)")
        t.missing = []
        t.elsewhere = []
        #expect(t.description == "collective barrier (call 12) timed out after 2.5 s with every rank in it (the transfer itself stalled)")
    }

    /// The label costs the step nothing: a step-number label is a small string, no heap allocation.
    @Test func settingTheStepLabelAllocatesNothing() {
        let communicator: Communicator = LocalCommunicator()
        communicator.context = "step 0"
        malloc_counter_start()
        for step in 1...1000 { communicator.context = "step \(step)" }
        let allocations = malloc_counter_stop()
        #expect(allocations == 0)
        #expect(communicator.context == "step 1000")
    }

    @Test func collectiveTimeoutIsAnExperimentKey() throws {
        let exp = try Experiment(config: Experiment.defaultConfig(), source: "default")
        #expect(exp.collectiveTimeout == 600)
        #expect(exp.effectiveKeys["collective_timeout"] == .double(600))
        var config = try Experiment.defaultConfig()
        config["collective_timeout"] = .int(5)
        #expect(try Experiment(config: config, source: "c.yaml").collectiveTimeout == 5)
        for bad: ConfigValue in [.int(0), .double(-1)] {
            config["collective_timeout"] = bad
            #expect { try Experiment(config: config, source: "c.yaml") } throws: { error in
                "\(error)".contains("'collective_timeout' must be positive finite seconds")
            }
        }
        config["collective_timeout"] = .double(.infinity)
        #expect(throws: (any Error).self) { try Experiment(config: config, source: "c.yaml") }
    }

    @Test func aBadTimeoutOnTheCommandLineIsOneLine() throws {
        let r = try Executable.run(["--collective_timeout", "0"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("'collective_timeout' must be positive finite seconds, found 0"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
