import Foundation
import Testing
@testable import SpeechainMPI

/// A 2-host job, launched as across two nodes: two network-namespace hosts on this machine
/// (scripts/cluster/netns-hosts.sh) joined by a veth pair, a hostfile with their addresses and slots, and
/// scripts/cluster/netns-agent.sh as mpirun's ssh. mpirun runs on the first host, as on a login or head node.
@Suite(.serialized, .enabled(if: ClusterSupport.isRoot, "creates network namespaces: needs root"))
struct HostfileTests {
    static let hosts = ClusterSupport.script("scripts/cluster/netns-hosts.sh").path
    static let agent = ClusterSupport.script("scripts/cluster/netns-agent.sh").path
    static let prefix = "scmpi"

    /// Bytes received by the host's veth interface so far.
    static func receivedBytes(namespace: String, interface: String) throws -> Int {
        let r = try ClusterSupport.run("ip", ["-n", namespace, "-s", "link", "show", interface], timeout: 20)
        let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let header = lines.firstIndex(where: { $0.hasPrefix("RX:") }), header + 1 < lines.count,
              let bytes = Int(lines[header + 1].split(separator: " ").first ?? "") else { return -1 }
        return bytes
    }

    @Test func twoHostJobFromAHostfile() throws {
        try ClusterSupport.cancelUnlessAvailable(ClusterSupport.networkNamespacesUnavailable)
        let name = "\(Self.prefix)\(getpid())"
        _ = try ClusterSupport.run(Self.hosts, ["reap", Self.prefix], timeout: 60)   // namespaces of dead test runs
        let up = try ClusterSupport.run(Self.hosts, ["up", name, "10.231.0"], timeout: 120)
        defer {
            _ = try? ClusterSupport.run(Self.hosts, ["down", name], timeout: 60)
            let left = (try? ClusterSupport.run("ip", ["netns", "list"], timeout: 20).stdout) ?? ""
            #expect(!left.contains(name), "namespaces left: \(left)")
        }
        try #require(up.status == 0, "\(up.output)")
        // "NAME-a 10.231.0.1 vaNNN" / "NAME-b 10.231.0.2 vbNNN"
        let hosts = up.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        try #require(hosts.count == 2 && hosts.allSatisfy { $0.count == 3 }, "\(up.stdout)")

        let dir = try TestResources.scratchDirectory("hostfile")
        let hostfile = dir.appendingPathComponent("two-nodes.hostfile")
        try "\(hosts[0][1]) slots=2\n\(hosts[1][1]) slots=2\n".write(to: hostfile, atomically: true, encoding: .utf8)
        let agentLog = dir.appendingPathComponent("agent.log")
        let results = dir.appendingPathComponent("run")
        let before = try Self.receivedBytes(namespace: hosts[1][0], interface: hosts[1][2])

        let mpirun = ["mpirun", "--hostfile", hostfile.path, "-np", "4", "--mca", "plm_rsh_agent", Self.agent,
                      "--mca", "btl", "tcp,self", "--bind-to", "none",
                      Executable.url.path, "--num_epochs", "1", "--batch_size", "8", "--report_per_steps", "1000",
                      "--train_result_path", results.path]
        // On the first host, with its own host name, exactly as a user on node 1 would type it.
        let run = try ClusterSupport.run("ip", ["netns", "exec", hosts[0][0], "unshare", "--uts", "sh", "-c",
                                                "hostname host-a; exec \"$@\"", "sh"] + mpirun,
            environment: ["NETNS_HOSTS": "\(hosts[0][1])=\(hosts[0][0]) \(hosts[1][1])=\(hosts[1][0])",
                          "NETNS_AGENT_LOG": agentLog.path, "OPENBLAS_NUM_THREADS": "1",
                          "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
            timeout: 180)
        #expect(run.status == 0 && !run.timedOut, "\(run.output)")

        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let s = try decoder.decode(TrainingSummaryFile.self, from: Data(contentsOf: results.appendingPathComponent("summary.json")))
        #expect(s.worldSize == 4)
        #expect(s.steps == 1024 / (8 * 4))
        #expect(s.parameterChecksums.count == 4 && Set(s.parameterChecksums).count == 1, "\(s.parameterChecksums)")
        #expect(FileManager.default.fileExists(atPath: results.appendingPathComponent("model.safetensors").path))
        // mpirun launched the second host through the agent, as it would through ssh …
        let launches = (try? String(contentsOf: agentLog, encoding: .utf8)) ?? ""
        #expect(launches.contains("\(hosts[1][1]) \(hosts[1][0])"), "agent log: \(launches)")
        // … and the gradients crossed the wire: on every update, host b must receive at least one float per
        // parameter (each element of the average depends on host a's gradients), P = 16·64+64 + 64·64+64 + 64·4+4.
        let parameters = 16 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4
        let received = try Self.receivedBytes(namespace: hosts[1][0], interface: hosts[1][2]) - before
        #expect(received >= s.steps * parameters * 4, "host b received \(received) bytes")
        // the sum ran in shared memory on each host and by MPI between the two
        let log = (try? String(contentsOf: results.appendingPathComponent("train.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("gradients summed in shared memory on each of 2 nodes (2 ranks each), then by MPI_Allreduce between them"),
                "\(log.prefix(1500))")

        // every value of the two-level sum against the formula: ranks 0, 1 on host a and 2, 3 on host b (by slot);
        // each host sums in rank order, and a sum of two hosts' values is the same in either order
        let hook = mpirun.prefix(while: { $0 != Executable.url.path }) + [Executable.url.path, "_shared-sum", "--count", "300",
                                                                          "--ranges", "0-100,100-290", "--repeats", "2"]
        let sum = try ClusterSupport.run("ip", ["netns", "exec", hosts[0][0], "unshare", "--uts", "sh", "-c",
                                                "hostname host-a; exec \"$@\"", "sh"] + Array(hook),
            environment: ["NETNS_HOSTS": "\(hosts[0][1])=\(hosts[0][0]) \(hosts[1][1])=\(hosts[1][0])",
                          "NETNS_AGENT_LOG": agentLog.path, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
            timeout: 120)
        #expect(sum.status == 0 && !sum.timedOut, "\(sum.output)")
        var checked = 0
        for line in sum.stdout.split(separator: "\n") where line.hasPrefix("rank ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            let rank = try #require(Int(parts[0].dropFirst(5)))
            let values = parts[1].split(separator: " ").compactMap { UInt32($0, radix: 16) }.map(Float.init(bitPattern:))
            let v = SharedMemoryAllreduceTests.value
            let wrong = (0..<300).filter { i in
                let want = i < 290 ? (v(0, i) + v(1, i)) + (v(2, i) + v(3, i)) : v(rank, i)
                return i >= values.count || values[i].bitPattern != want.bitPattern
            }
            #expect(wrong.isEmpty, "rank \(rank): \(wrong.count) values differ from the two-level sum")
            checked += 1
        }
        #expect(checked == 4, "\(sum.output)")
    }
}
