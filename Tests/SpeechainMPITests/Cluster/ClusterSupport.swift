import Foundation
import Testing

/// Runs the repository's cluster scripts and the commands around them with a deadline: a process still running
/// at its deadline is killed, so no cluster test can hang.
enum ClusterSupport {
    /// The repository (this file is Tests/SpeechainMPITests/Cluster/ClusterSupport.swift).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func script(_ path: String) -> URL { repository.appendingPathComponent(path) }

    /// Creating namespaces, installing packages and starting slurmd all need root. A suite that needs it has the
    /// trait `.enabled(if: ClusterSupport.isRoot, "…")`: run as another user it shows in the output as
    /// `Suite … skipped: "…: needs root"`.
    static var isRoot: Bool { getuid() == 0 }

    /// Why this machine cannot run the Slurm tests although they run as root (nil: it can): slurm-cluster.sh puts
    /// the daemons in PID and UTS namespaces and installs the Slurm packages when missing.
    static let slurmUnavailable: String? = probe("PID and UTS namespaces (unshare --pid --fork --uts --mount-proc)",
                                                 "unshare", ["--pid", "--fork", "--uts", "--mount-proc", "true"])
        ?? probe("the Slurm and munge packages (scripts/cluster/slurm-cluster.sh install)",
                 script("scripts/cluster/slurm-cluster.sh").path, ["install"], timeout: 600)

    /// Why this machine cannot run the hostfile test as root (nil: it can): netns-hosts.sh makes network namespaces.
    static let networkNamespacesUnavailable: String? = probe("network namespaces (unshare --net)", "unshare", ["--net", "true"])
        ?? probe("mpirun", "mpirun", ["--version"])

    /// nil when the probe exits 0, else what was probed and the first line it printed.
    static func probe(_ what: String, _ executable: String, _ arguments: [String], timeout: Double = 60) -> String? {
        guard let r = try? run(executable, arguments, timeout: timeout) else { return "\(what): \(executable) could not be started" }
        if r.status == 0 && !r.timedOut { return nil }
        let first = r.output.split(separator: "\n").first.map(String.init)
        return "\(what): " + (r.timedOut ? "no answer within \(Int(timeout)) s" : first ?? "exit status \(r.status)")
    }

    /// Ends the running test as cancelled when the machine lacks what it needs: the output then shows
    /// `Test … was cancelled …: "cannot run here: <reason>"`, neither a pass nor a failure. (A cluster that does not
    /// start on a machine that has all of it is a failure, not a cancellation.)
    static func cancelUnlessAvailable(_ unavailable: String?) throws {
        guard let reason = unavailable else { return }
        try Test.cancel(Comment(rawValue: "cannot run here: \(reason)"))
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        let timedOut: Bool
        var output: String { stdout + stderr }
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    directory: URL? = nil, timeout: Double = 120) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
        p.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let directory { p.currentDirectoryURL = directory }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        let outBox = DataBox(), errBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let exited = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in exited.signal() }
        try p.run()
        var timedOut = false
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)
            _ = exited.wait(timeout: .now() + 10)
        }
        _ = group.wait(timeout: .now() + 10)
        // terminationStatus traps while Foundation still sees the process running
        let status: Int32 = p.isRunning ? -1 : p.terminationStatus
        return Result(status: status, stdout: String(decoding: outBox.data, as: UTF8.self),
                      stderr: String(decoding: errBox.data, as: UTF8.self), timedOut: timedOut)
    }
}
