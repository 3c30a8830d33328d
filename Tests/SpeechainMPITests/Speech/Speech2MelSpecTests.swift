import Foundation
import MallocCounter
import Testing
@testable import SpeechainMPI

/// The reference of scripts/reference/mel_ref.py: torch.stft + torchaudio.functional.melscale_fbanks run as
/// SpeeChain's Speech2MelSpec on four espeak-ng utterances, padded batches and SpeeChain's recipe confs.
struct MelReference: Decodable {
    struct Case: Decodable {
        let name: String
        let conf: [String: ConfigValue]
        let wavs: [String]
        let lengths: [Int]
        let samples: Int
        let frames: Int
        let feat_lens: [Int]
        let n_mels: Int
    }
    struct TimeWarp: Decodable {
        let batch: Int, frames: Int, dim: Int, center: Int, position: Int, minlen: Int, mode: String
    }
    let torch: String
    let torchaudio: String
    let cases: [Case]
    let timewarp: TimeWarp

    static func load() throws -> MelReference {
        try JSONDecoder().decode(MelReference.self, from: Data(contentsOf: TestResources.url("speech/mel_ref.json")))
    }

    /// A zero-padded [B, T] batch of the case's wavs.
    static func batch(_ c: Case) throws -> [Float] {
        var out = [Float](repeating: 0, count: c.wavs.count * c.samples)
        for (b, name) in c.wavs.enumerated() {
            let w = try PCM16Wav.read(TestResources.url("speech/\(name)"))
            #expect(w.count == c.lengths[b])
            for (t, v) in w.enumerated() { out[b * c.samples + t] = v }
        }
        return out
    }
}

/// A 16-bit PCM mono WAV reader (RIFF chunks, `data` as little-endian Int16 / 32768, as soundfile reads it).
enum PCM16Wav {
    struct Malformed: Error { let reason: String }

    static func read(_ url: URL) throws -> [Float] {
        let bytes = [UInt8](try Data(contentsOf: url))
        func u32(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24 }
        func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        guard bytes.count >= 12, String(decoding: bytes[0..<4], as: UTF8.self) == "RIFF",
              String(decoding: bytes[8..<12], as: UTF8.self) == "WAVE" else { throw Malformed(reason: "not RIFF/WAVE") }
        var i = 12
        var format: (channels: Int, bits: Int, tag: Int)?
        while i + 8 <= bytes.count {
            let id = String(decoding: bytes[i..<(i + 4)], as: UTF8.self), size = u32(i + 4)
            let body = i + 8
            if id == "fmt " { format = (u16(body + 2), u16(body + 14), u16(body)) }
            if id == "data" {
                guard let f = format, f.tag == 1, f.channels == 1, f.bits == 16 else { throw Malformed(reason: "not 16-bit PCM mono") }
                let n = min(size, bytes.count - body) / 2
                return (0..<n).map { Float(Int16(bitPattern: UInt16(u16(body + 2 * $0)))) / 32768 }
            }
            i = body + size + (size & 1)
        }
        throw Malformed(reason: "no data chunk")
    }
}

@Suite struct Speech2MelSpecTests {
    /// Every case of the reference: frame counts and lengths exact; features within 1e-4 (absolute, log10 units)
    /// wherever the mel energy is at least 1e-7 (−70 dB re full scale); in near-silent cells below that, float32
    /// rounding of the FFT — torch's as much as ours — moves the log by up to a few 1e-4, so there the bound is 1e-3
    /// and `float32IsAsCloseToTheFormulaAsTorch` shows whose number is nearer the exact one.
    @Test func featuresMatchTorchAndTorchaudio() throws {
        let ref = try MelReference.load()
        #expect(ref.cases.count == 4)
        for c in ref.cases {
            let frontend = try Speech2MelSpec(conf: c.conf)
            let wave = try MelReference.batch(c)
            let (features, frames, lengths) = try frontend(wave, batchSize: c.wavs.count, lengths: c.lengths)
            #expect(frames == c.frames, "\(c.name)")
            #expect(frontend.frameCount(samples: c.samples) == c.frames)
            #expect(lengths == c.feat_lens, "\(c.name)")
            #expect(frontend.nMels == c.n_mels)
            let expected = try NPY.readFloat32Matrix(contentsOf: TestResources.url("speech/\(c.name).npy"))
            #expect(expected.rows == c.wavs.count * c.frames && expected.cols == c.n_mels)
            // 1e-7 in the output's units: log10 → −7, ln (log_base null) → −16.1
            let floor = Float(log(1e-7) / (frontend.logBase.map { log($0) } ?? 1))
            var worst: Float = 0, worstAudible: Float = 0, quiet = 0
            for (a, b) in zip(features, expected.values) {
                let e = abs(a - b)
                worst = max(worst, e)
                if b >= floor { worstAudible = max(worstAudible, e) } else { quiet += 1 }
            }
            #expect(worstAudible < 1e-4, "\(c.name): max |swift − torch| where mel ≥ 1e-7 = \(worstAudible)")
            #expect(worst < 1e-3, "\(c.name): max |swift − torch| = \(worst)")
            print("Speech2MelSpec vs torch \(ref.torch)/torchaudio \(ref.torchaudio), \(c.name): max abs error \(worstAudible) where mel ≥ 1e-7, \(worst) over all \(features.count) cells (\(quiet) below)")
        }
    }

    /// Against the formula computed in float64 (torch, stored rounded to float32), our float32 features are at
    /// least as close as torch's float32 ones: what remains between torch and us is float32 rounding, not semantics.
    @Test func float32IsAsCloseToTheFormulaAsTorch() throws {
        let ref = try MelReference.load()
        let c = ref.cases.first { $0.name == "recipe_single_yes" }!
        let (ours, _, _) = try Speech2MelSpec(conf: c.conf)(try MelReference.batch(c), batchSize: 1, lengths: c.lengths)
        let torch32 = try NPY.readFloat32Matrix(contentsOf: TestResources.url("speech/recipe_single_yes.npy")).values
        let exact = try NPY.readFloat32Matrix(contentsOf: TestResources.url("speech/recipe_single_yes_f64.npy")).values
        let oursError = zip(ours, exact).map { abs($0 - $1) }.max()!
        let torchError = zip(torch32, exact).map { abs($0 - $1) }.max()!
        #expect(oursError <= torchError, "ours \(oursError), torch's \(torchError)")
        #expect(torchError > 1e-4)   // the reason for the two bounds above
        print("Speech2MelSpec: max |swift32 − float64 formula| = \(oursError), max |torch32 − float64 formula| = \(torchError)")
    }

    /// A short utterance in a padded batch is not the same utterance alone (SpeeChain's STFT runs over the padded
    /// row), and both agree with the reference: the batch's first row against recipe_batch, alone against
    /// recipe_single_yes.
    @Test func paddingShapesTheLastFramesAsInSpeeChain() throws {
        let ref = try MelReference.load()
        let batch = ref.cases.first { $0.name == "recipe_batch" }!, single = ref.cases.first { $0.name == "recipe_single_yes" }!
        let frontend = try Speech2MelSpec(conf: batch.conf)
        let (alone, frames, lengths) = try frontend(try MelReference.batch(single), batchSize: 1, lengths: single.lengths)
        let (padded, batchFrames, _) = try frontend(try MelReference.batch(batch), batchSize: 4, lengths: batch.lengths)
        #expect(lengths == [58] && frames == 58)
        let m = frontend.nMels
        // frames well inside the utterance are the same; the last valid frame differs (reflection vs zeros)
        for f in [0, 10, 50] {
            for k in 0..<m { #expect(abs(alone[f * m + k] - padded[f * m + k]) < 1e-5) }
        }
        let last = (0..<m).map { abs(alone[57 * m + $0] - padded[57 * m + $0]) }.max()!
        #expect(last > 1e-3)
        // past its length the padded row holds log10(1e-10) = −10
        for f in 58..<batchFrames { for k in 0..<m { #expect(padded[f * m + k] == -10) } }
        #expect(frontend.paddingValue == -10)
    }

    /// Preemphasis y[t] = x[t] − 0.97·x[t−1] (x[−1] = 0), zero from each length on (SpeeChain zeroes the point that
    /// the filter leaves at t = len): the frontend with preemphasis equals the one without, fed y computed here. The
    /// rows end loud (a sine cut mid-wave), where the zeroing matters; the espeak-ng wavs end in silence.
    @Test func preemphasisIsZeroedPastEachLength() throws {
        let (B, T) = (3, 4000), lengths = [4000, 2999, 1601]
        var x = [Float](repeating: 0, count: B * T), y = x
        for b in 0..<B {
            for t in 0..<lengths[b] { x[b * T + t] = Float(0.5 * sin(Double(t) * 0.05 * Double(b + 1)) + 0.3) }
            for t in 0..<lengths[b] { y[b * T + t] = x[b * T + t] - 0.97 * (t > 0 ? x[b * T + t - 1] : 0) }
        }
        let with = try Speech2MelSpec(preemphasis: 0.97), without = try Speech2MelSpec(preemphasis: nil)
        let (a, _, la) = try with(x, batchSize: B, lengths: lengths)
        let (b, _, lb) = try without(y, batchSize: B, lengths: lengths)
        #expect(la == lb && la == [26, 19, 11])
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-5, "max difference \(worst)")
    }

    /// The recipe's filterbank against torchaudio's (stored) and against the slaney formulas written here.
    @Test func filterbankMatchesTorchaudioAndTheSlaneyFormula() throws {
        let frontend = try Speech2MelSpec(nMels: 80, hopLength: 160, winLength: 400, sampleRate: 16000)
        let torchaudio = try NPY.readFloat32Matrix(contentsOf: TestResources.url("speech/fbank_recipe.npy"))
        #expect(torchaudio.rows == 80 && torchaudio.cols == 201)
        var worst: Float = 0
        for (a, b) in zip(frontend.filterbank, torchaudio.values) { worst = max(worst, abs(a - b)) }
        #expect(worst < 1e-6)

        // Slaney (Auditory Toolbox): mel = f/(200/3) below 1 kHz, 15 + 27·ln(f/1000)/ln(6.4) above; 82 points from
        // mel(0) to mel(8000) equally spaced; triangle m rises from f_m to f_{m+1}, falls to f_{m+2}, height
        // 2/(f_{m+2} − f_m).
        func mel(_ f: Double) -> Double { f < 1000 ? 3 * f / 200 : 15 + 27 * log(f / 1000) / log(6.4) }
        func hz(_ m: Double) -> Double { m < 15 ? 200 * m / 3 : 1000 * pow(6.4, (m - 15) / 27) }
        let top = mel(8000)
        let points = (0...81).map { hz(top * Double($0) / 81) }
        for m in 0..<80 {
            let (a, b, c) = (points[m], points[m + 1], points[m + 2])
            for k in 0...200 {
                let f = 8000.0 * Double(k) / 200
                let tri = f <= a || f >= c ? 0 : (f <= b ? (f - a) / (b - a) : (c - f) / (c - b))
                let expected = tri * 2 / (c - a)
                #expect(abs(Double(frontend.filterbank[m * 201 + k]) - expected) <= 1e-6 * max(1, abs(expected) * 1e3))
            }
        }
        // the area normalisation: a wide triangle integrates to ≈ 1 over Hz (bin width 40 Hz)
        let area = (0..<201).reduce(0.0) { $0 + Double(frontend.filterbank[75 * 201 + $1]) } * 40
        #expect(abs(area - 1) < 0.05)
    }

    /// Hann window and frame arithmetic against their formulas.
    @Test func windowAndFrameCounts() throws {
        let w = Speech2MelSpec.hannWindow(length: 400, nFFT: 512)
        #expect(w.count == 512 && w[0..<56].allSatisfy { $0 == 0 } && w[456...].allSatisfy { $0 == 0 })
        for n in [0, 1, 100, 200, 399] {
            #expect(abs(Double(w[56 + n]) - (0.5 - 0.5 * cos(2 * Double.pi * Double(n) / 400))) < 1e-7)
        }
        let f = try Speech2MelSpec()
        #expect(f.nFFT == 400 && f.freqCount == 201)
        // ⌊(T + 2·200 − 400)/160⌋ + 1
        for (t, frames) in [(201, 2), (16000, 101), (16159, 101), (16160, 102), (18490, 116)] {
            #expect(f.frameCount(samples: t) == frames)
        }
        let odd = try Speech2MelSpec(hopLength: 100, winLength: 401)   // ⌊(0 + 400 − 401)/100⌋ + 1 = 0
        #expect(odd.frameCount(samples: 0) == 0 && odd.frameCount(samples: 1) == 1)
    }

    /// SpeeChain's conf keys: seconds × sr truncated, samples as given, n_fft defaulting to win_length, log_base null
    /// meaning ln; unsupported or bad values are one line naming the key.
    @Test func confKeysAndErrors() throws {
        let recipe = try Speech2MelSpec(conf: ["n_mels": 80, "hop_length": .double(0.010), "win_length": .double(0.025),
                                               "sr": 16000, "preemphasis": .double(0.97)])
        #expect(recipe.hopLength == 160 && recipe.winLength == 400 && recipe.nFFT == 400 && recipe.preemphasis == Float(0.97))
        let tts = try Speech2MelSpec(conf: ["n_mels": 80, "hop_length": .double(0.0125), "win_length": 1024, "sr": 22050,
                                            "log_base": .null, "mag_spec": true, "clamp": .double(1e-5)])
        #expect(tts.hopLength == 275 && tts.winLength == 1024 && tts.logBase == nil && tts.preemphasis == nil)
        #expect(abs(tts.paddingValue - Float(log(1e-5))) < 1e-5 && tts.fMax == 11025)

        func error(_ conf: [String: ConfigValue]) -> String {
            do { _ = try Speech2MelSpec(conf: conf, context: "frontend.conf"); return "no error" } catch { return "\(error)" }
        }
        let base: [String: ConfigValue] = ["n_mels": 80, "hop_length": .double(0.01), "win_length": .double(0.025)]
        func with(_ k: String, _ v: ConfigValue) -> [String: ConfigValue] { var c = base; c[k] = v; return c }
        #expect(error(with("hop_lenght", 160)).hasPrefix("frontend.conf: unknown key 'hop_lenght'; valid keys: n_mels"))
        #expect(error(["hop_length": 160, "win_length": 400]) == "frontend.conf: missing required key 'n_mels'")
        #expect(error(["n_mels": 80, "win_length": 400]) == "frontend.conf: missing required key 'hop_length'")
        #expect(error(with("window", "hamming")) == "frontend.conf: 'window' must be 'hann' (the only window supported), found 'hamming'")
        #expect(error(with("n_fft", 256)) == "frontend.conf: 'n_fft' must be >= win_length (400), found 256")
        #expect(error(with("hop_length", "ten ms")).contains("'hop_length' must be samples (an integer) or seconds (a float)"))
        #expect(error(with("hop_length", .double(0.00001))) == "frontend.conf: 'hop_length' must be at least one sample, found 0")
        #expect(error(with("fmax", 0)) == "frontend.conf: 'fmax' must be larger than fmin (0.0), found 0.0")
        #expect(error(with("mel_scale", "bark")) == "frontend.conf: 'mel_scale' must be 'slaney' or 'htk', found 'bark'")
        #expect(error(with("delta_order", 1)) == "frontend.conf: 'delta_order' is not supported (only null); found 1")
        #expect(error(with("onesided", false)).contains("'onesided' must be true"))
        #expect(error(with("n_mels", 0)).contains("'n_mels' must be >= 1, found 0"))
        #expect(!error(with("n_mels", 0)).contains("\n"))
    }

    /// Shapes a caller can get wrong are one line, not a crash.
    @Test func badBatchesAreOneLine() throws {
        let f = try Speech2MelSpec()
        #expect(throws: FrontendError.self) { _ = try f([Float](repeating: 0, count: 400), batchSize: 2, lengths: [200]) }
        do { _ = try f([Float](repeating: 0, count: 600), batchSize: 2, lengths: [300, 301]) } catch {
            #expect("\(error)" == "frontend.speech2mel.Speech2MelSpec: utterance 1 has length 301, outside 0...300")
        }
        do { _ = try f([Float](repeating: 0, count: 200), batchSize: 1, lengths: [200]) } catch {
            #expect("\(error)".contains("a batch of 200 samples is shorter than the 201 the STFT needs"))
        }
    }

    /// The vector log against Foundation's, over the clamp range up to large powers.
    @Test func vectorLogIsAccurate() {
        var xs: [Float] = (0..<1000).map { Float(pow(10, -12 + 18 * Double($0) / 999)) }
        xs += [1e-10, 1, 2, 0.5, 1.41421356, 1.4142137, Float.leastNormalMagnitude * 4]
        var y = xs
        Speech2MelSpec.logInPlace(&y, count: y.count, clamp: 1e-10, scale: 1)
        for (x, v) in zip(xs, y) {
            let exact = log(Double(max(x, 1e-10)))
            #expect(abs(Double(v) - exact) <= 2e-7 * max(1, abs(exact)), "log(\(x)) = \(v), expected \(exact)")
        }
    }

    /// Once warmed up on the largest batch, a call allocates nothing (the workspaces are reused, smaller batches too).
    @Test(.enabled(if: optimizedBuild, "allocation counts are only meaningful in optimised builds"))
    func aWarmCallAllocatesNothing() throws {
        let ref = try MelReference.load()
        let c = ref.cases.first { $0.name == "recipe_batch" }!
        let frontend = try Speech2MelSpec(conf: c.conf)
        let wave = try MelReference.batch(c)
        let frames = frontend.frameCount(samples: c.samples)
        var out = [Float](repeating: 0, count: 4 * frames * 80)
        var lens = [Int](repeating: 0, count: 4)
        // one OpenBLAS thread, as each rank runs: OpenBLAS's thread pool allocates on every threaded call
        let threads = BLAS.threadCount
        BLAS.setThreadCount(1)
        defer { BLAS.setThreadCount(threads) }
        let twoLengths = Array(c.lengths.map { min($0, 9000) }[0..<2])
        try wave.withUnsafeBufferPointer { w in
            try out.withUnsafeMutableBufferPointer { o in
                try lens.withUnsafeMutableBufferPointer { l in
                    try frontend.compute(waveforms: w.baseAddress!, batchSize: 4, samples: c.samples, lengths: c.lengths,
                                         output: o.baseAddress!, featureLengths: l.baseAddress!)
                    let growths = frontend.workspaceGrowths
                    malloc_counter_start()
                    for _ in 0..<3 {
                        try frontend.compute(waveforms: w.baseAddress!, batchSize: 4, samples: c.samples, lengths: c.lengths,
                                             output: o.baseAddress!, featureLengths: l.baseAddress!)
                        try frontend.compute(waveforms: w.baseAddress!, batchSize: 2, samples: 9000, lengths: twoLengths,
                                             output: o.baseAddress!, featureLengths: l.baseAddress!)
                    }
                    #expect(malloc_counter_stop() == 0)
                    // the workspaces themselves (raw pointers, which the counter may not see) were not regrown
                    #expect(frontend.workspaceGrowths == growths)
                }
            }
        }
    }
}
