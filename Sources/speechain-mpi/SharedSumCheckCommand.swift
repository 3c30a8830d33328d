import ArgumentParser
import Foundation
import SpeechainMPI

/// A test hook (hidden): under mpirun, rank r fills a gradient buffer of `--count` floats with
/// `SharedSumCheckCommand.value(r, i)`, sums `--ranges` through the node's shared-memory window (the trainer's
/// gradient sum); rank 0 gathers the buffers and prints each as one line `rank r: <hex bit patterns>` — or every rank
/// prints why the window was not made. The tests compare every value with the formula.
struct SharedSumCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_shared-sum",
        abstract: "Test hook: the shared-memory gradient sum on a known buffer.", shouldDisplay: false)

    @Option(help: "Floats in the buffer.") var count: Int = 1000
    @Option(help: "Ranges summed, lo-hi (half-open), comma-separated.") var ranges: String = "0-1000"
    @Option(help: "Sums in a row (the buffer is refilled before each).") var repeats: Int = 1

    /// Values whose sums depend on the order of addition (magnitudes differ by rank).
    static func value(_ rank: Int, _ i: Int) -> Float {
        Float(sin(Double(i) * 0.37 + Double(rank) * 1.91)) * Float(1 + 7 * rank) + Float(i % 13) * 1e-3
    }

    func run() throws {
        let count = self.count, repeats = self.repeats
        let parsed: [Range<Int>] = try ranges.split(separator: ",").map { part in
            let ends = part.split(separator: "-").compactMap { Int($0) }
            guard ends.count == 2, ends[0] <= ends[1], ends[1] <= count, ends[0] >= 0 else {
                throw ValidationError("--ranges: '\(part)' is not lo-hi inside 0...\(count)")
            }
            return ends[0]..<ends[1]
        }
        let status = Launcher.run(program: "speechain-mpi _shared-sum", setUp: { _ in () }, work: { _, communicator in
            guard let mpi = communicator as? MPICommunicator else { print("no MPI"); return }
            let store = ParameterStore()
            _ = store.declare("g", shape: [count], module: "m")
            store.allocate()
            switch try SharedGradientWindow.make(for: store, communicator: mpi, enabled: true) {
            case .failure(let why): print("rank \(communicator.rank): fallback \(why)")
            case .success(let window):
                let sum = GradientAllreduce(communicator: communicator, window: window)
                for _ in 0..<repeats {
                    let g = store.gradients.pointer
                    for i in 0..<count { g[i] = Self.value(communicator.rank, i) }
                    try sum.synchronize(g, ranges: parsed)
                }
                // rank 0 prints every rank's buffer (lines printed by several ranks interleave in mpirun's output)
                var all = [Float](repeating: 0, count: communicator.isRoot ? communicator.size * count : 0)
                try all.withUnsafeMutableBufferPointer { receive in
                    try communicator.gather(store.gradients.pointer, count: count, into: receive.baseAddress, root: 0)
                }
                if communicator.isRoot {
                    for r in 0..<communicator.size {
                        print("rank \(r): " + all[(r * count)..<((r + 1) * count)].map { String($0.bitPattern, radix: 16) }.joined(separator: " "))
                    }
                }
            }
        })
        if status != 0 { throw ExitCode(status) }
    }
}
