import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi bench-asr`: the ASR training-step benchmark (ASRBenchmark), one process.
struct BenchASRCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-asr",
        abstract: "Time training steps of ar_asr.ARASR at the workload of scripts/bench/asr_torch.py (its PyTorch twin).",
        discussion: """
            Features [16, 300, 80] (16 utterances × 3 s), 40 tokens, vocabulary 32, conv prenet [256, 256] → 256, \
            6 encoder and 3 decoder layers (4 heads, FFN 1024), CTC weight 0.3, Adam; prints the median step split \
            into forward, backward and optimizer, and the time inside sgemm against the 1024³ sgemm peak. One BLAS \
            thread unless --blas_threads is given.
            """)

    @Option(help: ArgumentHelp("Timed steps.", valueName: "n")) var steps: OptionText = "10"
    @Option(help: ArgumentHelp("Untimed steps before.", valueName: "n")) var warmup: OptionText = "2"
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Utterances per step (default 16).", valueName: "n")) var batchSize: OptionText?
    @Option(help: ArgumentHelp("Feature frames per utterance (10 ms each).", valueName: "n")) var frames: OptionText = "300"
    @Option(help: ArgumentHelp("Tokens per sentence.", valueName: "n")) var tokens: OptionText = "40"
    @Option(name: .customLong("blas_threads"), help: ArgumentHelp("OpenBLAS threads.", valueName: "n")) var blasThreads: OptionText = "1"
    @Option(name: .customLong("result_path"), help: ArgumentHelp("Folder for bench_asr.json and bench_asr.txt.", valueName: "dir"))
    var resultPath: String?

    func run() throws {
        do {
            var c = ASRBenchmark.Configuration()
            c.steps = try OptionText.integer(steps, "steps")
            c.warmup = try OptionText.integer(warmup, "warmup")
            // the root command declares --batch_size too: read it from after the subcommand (see orArgument)
            c.batchSize = try OptionText.integer(batchSize.orArgument("batch_size", after: "bench-asr", default: "16"), "batch_size")
            c.frames = try OptionText.integer(frames, "frames")
            c.tokens = try OptionText.integer(tokens, "tokens")
            let threads = try OptionText.integer(blasThreads, "blas_threads")
            guard threads >= 1 else { throw BenchmarkError.invalid(option: "blas_threads", reason: "must be >= 1, found \(threads)") }
            try c.validate()
            BLAS.setThreadCount(threads)
            let result = try ASRBenchmark.run(c) { print($0) }
            print(result.text)
            if let resultPath {
                try writeReport(result, text: result.text, name: "bench_asr", to: URL(fileURLWithPath: resultPath, isDirectory: true))
            }
        } catch {
            Launcher.report(error, nil, "speechain-mpi bench-asr")
            throw ExitCode(1)
        }
    }
}
