import Foundation
import Testing
@testable import SpeechainMPI

/// The shared-memory gradient sum under real mpirun: every value against the formula, summed in rank order; ranges
/// not asked for untouched; the trainer's trajectory bit for bit that of MPI_Allreduce at 2 ranks (a + b is b + a).
@Suite(.serialized) struct SharedMemoryAllreduceTests {
    static func run(np: Int, _ arguments: [String]) throws -> Executable.Result {
        try Executable.run(["-np", "\(np)", "--oversubscribe", "--bind-to", "none", Executable.url.path] + arguments,
                           environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                           executable: MPIRun.mpirun)
    }

    /// The formula of the test hook (`speechain-mpi _shared-sum`), written again here.
    static func value(_ rank: Int, _ i: Int) -> Float {
        Float(sin(Double(i) * 0.37 + Double(rank) * 1.91)) * Float(1 + 7 * rank) + Float(i % 13) * 1e-3
    }

    /// Adjacent ranges, a gap left alone, a range shorter than the ranks (some slices empty), three sums in a row
    /// (a rank refilling its buffer while another still copied from it would show).
    @Test(arguments: [2, 3])
    func everyValueIsTheRankOrderSum(np: Int) throws {
        let count = 1000, ranges = [0..<37, 37..<500, 613..<995, 997..<999]
        let spec = ranges.map { "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
        let r = try Self.run(np: np, ["_shared-sum", "--count", "\(count)", "--ranges", spec, "--repeats", "3"])
        #expect(r.status == 0, "\(r.stderr)")
        var seen = Set<Int>()
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("rank ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            let rank = try #require(Int(parts[0].dropFirst(5)))
            let values = parts[1].split(separator: " ").compactMap { UInt32($0, radix: 16) }.map(Float.init(bitPattern:))
            #expect(values.count == count)
            var wrong = 0
            for i in 0..<min(count, values.count) {
                var want = Self.value(rank, i)
                if ranges.contains(where: { $0.contains(i) }) {
                    want = Self.value(0, i)
                    for k in 1..<np { want = want + Self.value(k, i) }
                }
                if values[i].bitPattern != want.bitPattern { wrong += 1 }
            }
            #expect(wrong == 0, "rank \(rank) of \(np): \(wrong) values differ from the rank-order sum")
            seen.insert(rank)
        }
        #expect(seen == Set(0..<np), "\(r.stdout)")
    }

    /// A rank under a file-size limit (`ulimit -f 0`) could not grow the window's backing file in /dev/shm (SIGXFSZ
    /// would kill it mid-creation and leave the file behind): every rank sees the least room of all and falls back.
    @Test func noRoomOnAnyRankFallsBackEverywhere() throws {
        let script = "if [ \"$OMPI_COMM_WORLD_RANK\" != 0 ]; then ulimit -f 0; fi; exec \"$0\" \"$@\""
        // (Open MPI's own shared-memory transport makes files too: TCP instead, as MPIRunTests does)
        let r = try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp", "/bin/sh", "-c", script,
                                    Executable.url.path, "_shared-sum", "--count", "100", "--ranges", "0-100"],
                                   environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"],
                                   executable: MPIRun.mpirun)
        #expect(r.status == 0, "\(r.stderr)")
        for rank in 0..<2 {
            #expect(r.stdout.contains("rank \(rank): fallback /dev/shm takes 0 MB on some rank (free space or file-size limit)"), "\(r.stdout)")
        }
    }

    /// The default experiment at 2 ranks: the same weights bit for bit whichever way the gradients are summed, and
    /// the log says which.
    @Test func trainerSumsInSharedMemoryAsMPIAllreduceDoes() throws {
        let common = ["--num_epochs", "2", "--seed", "7", "--batch_size", "16"]
        let shm = try MPIRun.run(np: 2, common)
        let mpi = try MPIRun.run(np: 2, common + ["--set", "shared_memory_allreduce=false"])
        #expect(shm.result.status == 0 && mpi.result.status == 0, "\(shm.result.stderr) \(mpi.result.stderr)")
        let a = try shm.weights(), b = try mpi.weights()
        #expect(!a.isEmpty && a == b, "weights differ between the shared-memory sum and MPI_Allreduce")
        let logA = try String(contentsOf: shm.directory.appendingPathComponent("train.log"), encoding: .utf8)
        let logB = try String(contentsOf: mpi.directory.appendingPathComponent("train.log"), encoding: .utf8)
        #expect(logA.contains("gradients summed in shared memory (2 ranks on one node)"), "\(logA.prefix(2000))")
        #expect(logB.contains("gradients summed by MPI_Allreduce (shared_memory_allreduce: false)"), "\(logB.prefix(2000))")
        #expect(try shm.summary().schedulers["main"]?.allreduceCalls == mpi.summary().schedulers["main"]?.allreduceCalls)
    }
}
