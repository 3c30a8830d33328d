import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi bench-frontend`: the log-mel frontend's throughput in seconds of audio per second of compute, on
/// one thread; scripts/bench/frontend_torchaudio.py measures SpeeChain's torch frontend on the same batch.
struct BenchFrontendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-frontend",
        abstract: "Time Speech2MelSpec (SpeeChain's recipe conf by default) on a padded batch of 16-bit PCM wavs.",
        discussion: """
            The batch holds batch_size utterances cycling through the given wavs, zero-padded to the longest; each \
            repeat computes its features once. Prints the median time per batch and the seconds of audio (the sum of \
            the utterances' true lengths) per second of compute, with the min and max over the repeats. One thread.
            """)

    @Argument(help: ArgumentHelp("16-bit PCM mono wav files at the frontend's sample rate.", valueName: "wav"))
    var wavs: [String] = []
    @Option(name: .customLong("batch_size"), help: ArgumentHelp("Utterances per batch (cycling through the wavs).", valueName: "n"))
    var batchSize: OptionText?
    @Option(help: ArgumentHelp("Timed repeats.", valueName: "n")) var repeats: OptionText = "30"
    @Option(help: ArgumentHelp("Untimed repeats before.", valueName: "n")) var warmup: OptionText = "3"
    @Option(name: .customLong("n_mels"), help: "Mel filters.") var nMels: OptionText = "80"
    @Option(name: .customLong("hop_length"), help: ArgumentHelp("Hop in samples.", valueName: "samples")) var hopLength: OptionText = "160"
    @Option(name: .customLong("win_length"), help: ArgumentHelp("Window in samples (also n_fft).", valueName: "samples")) var winLength: OptionText = "400"

    func run() throws {
        do {
            let batch = try OptionText.integer(batchSize.orArgument("batch_size", after: "bench-frontend", default: "16"), "batch_size")
            let repeatCount = try OptionText.integer(repeats, "repeats"), warmupCount = try OptionText.integer(warmup, "warmup")
            guard batch >= 1 else { throw BenchmarkError.invalid(option: "batch_size", reason: "must be >= 1, found \(batch)") }
            guard repeatCount >= 1, warmupCount >= 0 else {
                throw BenchmarkError.invalid(option: "repeats", reason: "must be >= 1 (and warmup >= 0), found \(repeatCount)")
            }
            guard !wavs.isEmpty else { throw BenchmarkError.invalid(option: "wav", reason: "give at least one 16-bit PCM wav file") }
            let frontend = try Speech2MelSpec(nMels: try OptionText.integer(nMels, "n_mels"),
                                              hopLength: try OptionText.integer(hopLength, "hop_length"),
                                              winLength: try OptionText.integer(winLength, "win_length"))
            BLAS.setThreadCount(1)
            let audio = try wavs.map { try readPCM16(path: $0, sampleRate: frontend.sampleRate) }
            let lengths = (0..<batch).map { audio[$0 % audio.count].count }
            let samples = lengths.max()!
            var waveforms = [Float](repeating: 0, count: batch * samples)
            for b in 0..<batch { for (t, v) in audio[b % audio.count].enumerated() { waveforms[b * samples + t] = v } }
            let frames = frontend.frameCount(samples: samples)
            var features = [Float](repeating: 0, count: batch * frames * frontend.nMels)
            var featLens = [Int](repeating: 0, count: batch)
            let seconds = Double(lengths.reduce(0, +)) / Double(frontend.sampleRate)
            var times: [Double] = []
            try waveforms.withUnsafeBufferPointer { w in
                try features.withUnsafeMutableBufferPointer { f in
                    try featLens.withUnsafeMutableBufferPointer { l in
                        for i in 0..<(warmupCount + repeatCount) {
                            let start = DispatchTime.now().uptimeNanoseconds
                            try frontend.compute(waveforms: w.baseAddress!, batchSize: batch, samples: samples, lengths: lengths,
                                                 output: f.baseAddress!, featureLengths: l.baseAddress!)
                            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
                            if i >= warmupCount { times.append(elapsed) }
                        }
                    }
                }
            }
            times.sort()
            let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
            print(String(format: "bench-frontend swift: %d utterances, %.3f s of audio (batch %d x %d samples, %d frames), n_mels %d hop %d win %d, 1 thread",
                         batch, seconds, batch, samples, frames, frontend.nMels, frontend.hopLength, frontend.winLength))
            print(String(format: "bench-frontend swift: median %.6f s per batch = %.1f s of audio per second (min %.6f s, max %.6f s, %d repeats)",
                         median, seconds / median, times.first!, times.last!, times.count) + "; CPU \(cpuModel())")
        } catch {
            Launcher.report(error, nil, "speechain-mpi bench-frontend")
            throw ExitCode(1)
        }
    }

    /// 16-bit PCM mono WAV → float32 in [−1, 1) (int / 32768, as soundfile reads it); enough for the benchmark's input.
    private func readPCM16(path: String, sampleRate: Int) throws -> [Float] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BenchmarkError.invalid(option: "wav", reason: "cannot read '\(path)'")
        }
        let bytes = [UInt8](data)
        func u32(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24 }
        func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("RIFF".utf8), bytes[8..<12].elementsEqual("WAVE".utf8) else {
            throw BenchmarkError.invalid(option: "wav", reason: "'\(path)' is not a RIFF/WAVE file")
        }
        var i = 12, format: (tag: Int, channels: Int, rate: Int, bits: Int)?
        while i + 8 <= bytes.count {
            let size = u32(i + 4), body = i + 8
            if bytes[i..<(i + 4)].elementsEqual("fmt ".utf8), body + 16 <= bytes.count {
                format = (u16(body), u16(body + 2), u32(body + 4), u16(body + 14))
            }
            if bytes[i..<(i + 4)].elementsEqual("data".utf8) {
                guard let f = format, f.tag == 1, f.channels == 1, f.bits == 16 else {
                    throw BenchmarkError.invalid(option: "wav", reason: "'\(path)' is not 16-bit PCM mono")
                }
                guard f.rate == sampleRate else {
                    throw BenchmarkError.invalid(option: "wav", reason: "'\(path)' is at \(f.rate) Hz, the frontend at \(sampleRate) Hz")
                }
                let n = min(size, bytes.count - body) / 2
                return (0..<n).map { Float(Int16(bitPattern: UInt16(u16(body + 2 * $0)))) / 32768 }
            }
            i = body + size + (size & 1)
        }
        throw BenchmarkError.invalid(option: "wav", reason: "'\(path)' has no data chunk")
    }

    private func cpuModel() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
              let value = line.split(separator: ":", maxSplits: 1).last else { return "unknown" }
        return value.trimmingCharacters(in: .whitespaces)
    }
}
