import Foundation

/// Runs the repository's cluster scripts and the commands around them with a deadline: a process still running
/// at its deadline is killed, so no cluster test can hang.
enum ClusterSupport {
    /// The repository (this file is Tests/SpeechainMPITests/Cluster/ClusterSupport.swift).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func script(_ path: String) -> URL { repository.appendingPathComponent(path) }

    /// Creating namespaces, installing packages and starting slurmd all need root.
    static var isRoot: Bool { getuid() == 0 }

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
