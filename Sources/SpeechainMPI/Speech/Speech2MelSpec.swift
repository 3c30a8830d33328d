import Foundation

/// SpeeChain's `frontend.speech2mel.Speech2MelSpec` (speech2linear.py + linear2mel.py), always in float32:
///
///     y[t]   = x[t] − c·x[t−1] (x[−1] = 0), y[t ≥ len] = 0                      (preemphasis c, when given)
///     S[f,k] = |Σ_n y_pad[f·hop + n]·w[n]·e^{−2πi·kn/N}|²                         (power; magnitude if mag_spec)
///              y_pad: y reflect-padded by N/2 on both sides (center), w: periodic Hann of win_length centred in N
///     S[f ≥ feat_len, ·] = 0,  feat_len = ⌊(len + 2·⌊N/2⌋ − N) / hop⌋ + 1
///     M[f,m] = Σ_k S[f,k]·fb[m,k]                          (torchaudio melscale_fbanks: triangles, slaney norm)
///     out    = log(max(M, clamp)) / log(log_base)
///
/// N = n_fft (default win_length); hop_length and win_length given as floats are seconds (× sr, truncated).
/// As in SpeeChain the STFT runs over the whole zero-padded batch row [T], so a short utterance's last frames see the
/// batch's zero padding, and its frames past feat_len come out as log(clamp)/log(log_base) (−10 with the defaults),
/// not 0: SpeeChain zeroes the power spectrum there, before the filterbank and the log.
///
/// Input: waveforms [B, T] row-major (zero past each length) with lengths; output [B, F, n_mels] with F =
/// `frameCount(samples: T)` and per-utterance frame lengths. Workspaces grow to the largest T seen and are reused,
/// so a warm call allocates nothing.
public final class Speech2MelSpec {
    public static let typeName = "frontend.speech2mel.Speech2MelSpec"
    public static let confKeys = [
        "n_mels", "hop_length", "win_length", "n_fft", "sr", "preemphasis", "pre_stft_norm", "window", "center",
        "normalized", "onesided", "mag_spec", "return_energy", "fmin", "fmax", "clamp", "logging", "log_base",
        "mel_scale", "mel_norm", "delta_order", "delta_N",
    ]

    public enum MelScale: String, Sendable { case slaney, htk }

    public let nMels: Int
    public let hopLength: Int
    public let winLength: Int
    public let nFFT: Int
    public let sampleRate: Int
    public let preemphasis: Float?
    public let center: Bool
    public let normalized: Bool
    public let magSpec: Bool
    public let fMin: Double
    public let fMax: Double
    public let clamp: Float
    public let logging: Bool
    /// nil: natural log.
    public let logBase: Double?
    public let melScale: MelScale
    public let melNorm: Bool
    /// n_fft/2 + 1 onesided frequency bins.
    public var freqCount: Int { nFFT / 2 + 1 }
    /// The mel filterbank, [n_mels, n_fft/2 + 1] row-major (SpeeChain's `mel_fbanks.weight`).
    public let filterbank: [Float]
    /// The STFT window (periodic Hann of win_length, centred in n_fft with zeros).
    public let window: [Float]
    /// What a frame past its utterance's length holds: log(clamp)/log(log_base), or 0 without logging.
    public let paddingValue: Float

    private let fft: RealFFT
    private let fbPointer: UnsafeMutablePointer<Float>
    private let windowPointer: UnsafeMutablePointer<Float>
    private let logScale: Float
    private var signal: UnsafeMutablePointer<Float>
    private var signalCapacity = 0
    private var power: UnsafeMutablePointer<Float>
    private var powerCapacity = 0
    /// How often a workspace had to grow (tests: a warm call must not).
    private(set) var workspaceGrowths = 0

    /// The plain Swift form; defaults are SpeeChain's recipes' (80 mels, 10 ms hop, 25 ms window at 16 kHz, 0.97).
    public convenience init(nMels: Int = 80, hopLength: Int = 160, winLength: Int = 400, nFFT: Int? = nil, sampleRate: Int = 16000,
                preemphasis: Float? = 0.97, center: Bool = true, normalized: Bool = false, magSpec: Bool = false,
                fMin: Double = 0, fMax: Double? = nil, clamp: Float = 1e-10, logging: Bool = true,
                logBase: Double? = 10, melScale: MelScale = .slaney, melNorm: Bool = true) throws {
        try self.init(nMels: nMels, hopLength: hopLength, winLength: winLength, nFFT: nFFT, sampleRate: sampleRate,
                      preemphasis: preemphasis, center: center, normalized: normalized, magSpec: magSpec, fMin: fMin,
                      fMax: fMax, clamp: clamp, logging: logging, logBase: logBase, melScale: melScale, melNorm: melNorm,
                      context: Self.typeName)
    }

    private init(nMels: Int, hopLength: Int, winLength: Int, nFFT: Int?, sampleRate: Int, preemphasis: Float?,
                 center: Bool, normalized: Bool, magSpec: Bool, fMin: Double, fMax: Double?, clamp: Float, logging: Bool,
                 logBase: Double?, melScale: MelScale, melNorm: Bool, context: String) throws {
        func bad(_ key: String, _ reason: String) -> ConfigError { .invalidValue(context: context, key: key, reason: reason) }
        let n = nFFT ?? winLength
        guard nMels >= 1 else { throw bad("n_mels", "must be >= 1, found \(nMels)") }
        guard hopLength >= 1 else { throw bad("hop_length", "must be at least one sample, found \(hopLength)") }
        guard winLength >= 1 else { throw bad("win_length", "must be at least one sample, found \(winLength)") }
        guard n >= winLength else { throw bad("n_fft", "must be >= win_length (\(winLength)), found \(n)") }
        guard n <= 1 << 20 else { throw bad("n_fft", "must be <= 1048576, found \(n)") }
        guard sampleRate >= 1 else { throw bad("sr", "must be a positive sample rate, found \(sampleRate)") }
        let maxFreq = fMax ?? Double(sampleRate / 2)
        guard fMin >= 0 else { throw bad("fmin", "must be >= 0, found \(fMin)") }
        guard maxFreq > fMin else { throw bad("fmax", "must be larger than fmin (\(fMin)), found \(maxFreq)") }
        guard clamp > 0 || !logging else { throw bad("clamp", "must be > 0 when logging, found \(clamp)") }
        if let b = logBase { guard b > 0 && b != 1 else { throw bad("log_base", "must be > 0 and not 1, found \(b)") } }
        self.nMels = nMels
        self.hopLength = hopLength
        self.winLength = winLength
        self.nFFT = n
        self.sampleRate = sampleRate
        self.preemphasis = preemphasis
        self.center = center
        self.normalized = normalized
        self.magSpec = magSpec
        self.fMin = fMin
        self.fMax = maxFreq
        self.clamp = clamp
        self.logging = logging
        self.logBase = logBase
        self.melScale = melScale
        self.melNorm = melNorm
        filterbank = Self.melFilterbank(freqCount: n / 2 + 1, nMels: nMels, sampleRate: sampleRate, fMin: fMin,
                                        fMax: maxFreq, scale: melScale, slaneyNorm: melNorm)
        window = Self.hannWindow(length: winLength, nFFT: n)
        logScale = logBase.map { Float(1 / Foundation.log($0)) } ?? 1
        var pad: Float = 0
        if logging {
            var c = clamp
            Self.logInPlace(&c, count: 1, clamp: clamp, scale: logBase.map { Float(1 / Foundation.log($0)) } ?? 1)
            pad = c
        }
        paddingValue = pad
        fft = RealFFT(size: n)
        fbPointer = .allocate(capacity: filterbank.count)
        fbPointer.initialize(from: filterbank, count: filterbank.count)
        windowPointer = .allocate(capacity: n)
        windowPointer.initialize(from: window, count: n)
        signal = .allocate(capacity: 1)
        power = .allocate(capacity: 1)
    }

    /// From a SpeeChain conf (`module_conf.frontend.conf`); `context` names the section in errors.
    public convenience init(conf: [String: ConfigValue], context: String = "frontend.conf (\(Speech2MelSpec.typeName))") throws {
        let r = try ConfReader(conf, context: context, allowedKeys: Self.confKeys)
        func bad(_ key: String, _ reason: String) -> ConfigError { .invalidValue(context: context, key: key, reason: reason) }
        guard let nMels = try r.optionalInt("n_mels") else { throw ConfigError.missing(context: context, key: "n_mels") }
        let sr = try r.int("sr", default: 16000)
        guard sr >= 1 else { throw bad("sr", "must be a positive sample rate, found \(sr)") }
        // SpeeChain: an int is a number of samples, a float a duration in seconds (int(seconds × sr)).
        func samples(_ key: String, required: Bool) throws -> Int? {
            guard r.contains(key), let v = r.values[key] else {
                if required { throw ConfigError.missing(context: context, key: key) }
                return nil
            }
            switch v {
            case .int(let i): return i
            case .double(let d):
                let s = d * Double(sr)
                guard s.isFinite, abs(s) < 1e12 else { throw bad(key, "must be a finite duration in seconds, found \(d)") }
                return Int(s)   // truncation, as Python's int()
            default: throw ConfigError.wrongType(context: context, key: key, expected: "samples (an integer) or seconds (a float)", found: v)
            }
        }
        let hop = try samples("hop_length", required: true)!
        let win = try samples("win_length", required: true)!
        let nFFT = try r.optionalInt("n_fft")
        var preemphasis: Float?
        if let p = try r.optionalDouble("preemphasis") { preemphasis = Float(p) }
        if r.contains("pre_stft_norm") {
            throw bad("pre_stft_norm", "is not supported (only null); found \(r.values["pre_stft_norm"]!)")
        }
        let window = try r.string("window", default: "hann")
        guard window == "hann" else { throw bad("window", "must be 'hann' (the only window supported), found '\(window)'") }
        guard try r.bool("onesided", default: true) else { throw bad("onesided", "must be true: the mel filterbank reads the onesided spectrum") }
        guard try !r.bool("return_energy", default: false) else { throw bad("return_energy", "is not supported (only false)") }
        if r.contains("delta_order") { throw bad("delta_order", "is not supported (only null); found \(r.values["delta_order"]!)") }
        _ = try r.int("delta_N", default: 2)   // meaningful only with delta_order
        let scaleName = try r.string("mel_scale", default: "slaney")
        guard let scale = MelScale(rawValue: scaleName) else { throw bad("mel_scale", "must be 'slaney' or 'htk', found '\(scaleName)'") }
        // log_base: null means the natural log; absent means SpeeChain's default 10.
        let logBase: Double? = r.values["log_base"] == nil ? 10 : try r.optionalDouble("log_base")
        try self.init(nMels: nMels, hopLength: hop, winLength: win, nFFT: nFFT, sampleRate: sr, preemphasis: preemphasis,
                      center: try r.bool("center", default: true), normalized: try r.bool("normalized", default: false),
                      magSpec: try r.bool("mag_spec", default: false), fMin: try r.double("fmin", default: 0),
                      fMax: try r.optionalDouble("fmax"), clamp: Float(try r.double("clamp", default: 1e-10)),
                      logging: try r.bool("logging", default: true), logBase: logBase, melScale: scale,
                      melNorm: try r.bool("mel_norm", default: true), context: context)
    }

    deinit {
        fbPointer.deallocate()
        windowPointer.deallocate()
        signal.deallocate()
        power.deallocate()
    }

    /// Frames torch.stft gives for a row of `samples` samples (and so SpeeChain's feat_len for a length):
    /// ⌊(T + 2·⌊N/2⌋ − N) / hop⌋ + 1 with center, ⌊(T − N) / hop⌋ + 1 without (never below 0).
    public func frameCount(samples: Int) -> Int {
        let padded = center ? samples + 2 * (nFFT / 2) : samples
        return max(0, Self.floorDiv(padded - nFFT, hopLength) + 1)
    }

    /// The shortest row the STFT accepts: reflect padding needs T > n_fft/2; without center a row must hold a frame.
    public var minimumSamples: Int { center ? nFFT / 2 + 1 : nFFT }

    /// Features of a batch. `waveforms` is [batchSize, samples] row-major, zero past `lengths[b]`; `output` receives
    /// [batchSize, frameCount(samples:), n_mels] and `featureLengths` (count batchSize) each utterance's frames.
    public func compute(waveforms: UnsafePointer<Float>, batchSize: Int, samples: Int, lengths: [Int],
                        output: UnsafeMutablePointer<Float>, featureLengths: UnsafeMutablePointer<Int>) throws {
        guard lengths.count == batchSize else {
            throw FrontendError.shape("\(lengths.count) lengths for a batch of \(batchSize)")
        }
        guard samples >= minimumSamples else {
            throw FrontendError.shape("a batch of \(samples) samples is shorter than the \(minimumSamples) the STFT needs (n_fft \(nFFT)\(center ? ", reflect padding n_fft/2" : ""))")
        }
        for (b, len) in lengths.enumerated() where len < 0 || len > samples {
            throw FrontendError.shape("utterance \(b) has length \(len), outside 0...\(samples)")
        }
        let frames = frameCount(samples: samples)
        let pad = center ? nFFT / 2 : 0
        let paddedCount = samples + 2 * pad
        if signalCapacity < paddedCount {
            signal.deallocate()
            signal = .allocate(capacity: paddedCount)
            signalCapacity = paddedCount
            workspaceGrowths += 1
        }
        let nFreq = freqCount
        if powerCapacity < frames * nFreq {
            power.deallocate()
            power = .allocate(capacity: frames * nFreq)
            powerCapacity = frames * nFreq
            workspaceGrowths += 1
        }
        for b in 0..<batchSize {
            let len = lengths[b]
            let validFrames = min(frameCount(samples: len), frames)
            featureLengths[b] = validFrames
            let out = output + b * frames * nMels
            prepareSignal(waveforms + b * samples, samples: samples, length: len, pad: pad)
            if validFrames > 0 {
                powerSpectrum(frames: validFrames)
                // M = S·fbᵀ: [validFrames, nFreq] × [nFreq, n_mels], one GEMM per utterance.
                BLAS.sgemm(transposeA: false, transposeB: true, m: validFrames, n: nMels, k: nFreq,
                           a: power, lda: nFreq, b: fbPointer, ldb: nFreq, beta: 0, c: out, ldc: nMels)
                if logging { Self.logInPlace(out, count: validFrames * nMels, clamp: clamp, scale: logScale) }
            }
            (out + validFrames * nMels).update(repeating: paddingValue, count: (frames - validFrames) * nMels)
        }
    }

    /// Allocating convenience: features [B, F, n_mels] flat, F, and the frame lengths.
    public func callAsFunction(_ waveforms: [Float], batchSize: Int, lengths: [Int]) throws -> (features: [Float], frames: Int, lengths: [Int]) {
        guard batchSize >= 1, waveforms.count % batchSize == 0 else {
            throw FrontendError.shape("\(waveforms.count) samples do not split into \(batchSize) rows")
        }
        let samples = waveforms.count / batchSize
        let frames = frameCount(samples: samples)
        var features = [Float](repeating: 0, count: batchSize * frames * nMels)
        var featLens = [Int](repeating: 0, count: batchSize)
        try waveforms.withUnsafeBufferPointer { w in
            try features.withUnsafeMutableBufferPointer { f in
                try featLens.withUnsafeMutableBufferPointer { l in
                    try compute(waveforms: w.baseAddress!, batchSize: batchSize, samples: samples, lengths: lengths,
                                output: f.baseAddress!, featureLengths: l.baseAddress!)
                }
            }
        }
        return (features, frames, featLens)
    }

    // MARK: - The steps

    /// signal[pad ..< pad + T] = preemphasised row, zero from `length` on; then the reflect padding on both sides.
    private func prepareSignal(_ x: UnsafePointer<Float>, samples: Int, length: Int, pad: Int) {
        let y = signal + pad
        if let c = preemphasis {
            // y[t] = x[t] − c·x[t−1], x[−1] = 0; the points past the length are zeroed again (SpeeChain's loop).
            let n = min(length, samples)
            if n > 0 { y[0] = x[0] }
            let vc = Kernels.V(repeating: c)
            var t = 1
            while t + Kernels.width <= n {
                Kernels.store(Kernels.load(x + t) - vc * Kernels.load(x + t - 1), y + t)
                t += Kernels.width
            }
            while t < n { y[t] = x[t] - c * x[t - 1]; t += 1 }
            if n < samples { (y + n).update(repeating: 0, count: samples - n) }
        } else {
            y.update(from: x, count: samples)
        }
        // reflect (torch.nn.functional.pad mode 'reflect'): y[−j] = y[j], y[T−1+j] = y[T−1−j]
        for j in stride(from: 1, through: pad, by: 1) {
            y[-j] = y[j]
            y[samples - 1 + j] = y[samples - 1 - j]
        }
    }

    /// power[f, k] = |DFT(window · frame f)[k]|² (or its square root with mag_spec; / n_fft when normalized).
    private func powerSpectrum(frames: Int) {
        let n = nFFT, nFreq = freqCount, w = Kernels.width
        let input = fft.input, spec = fft.output
        let norm: Float = normalized ? 1 / Float(n) : 1
        for f in 0..<frames {
            let frame = signal + f * hopLength
            var i = 0
            while i + w <= n { Kernels.store(Kernels.load(frame + i) * Kernels.load(windowPointer + i), input + i); i += w }
            while i < n { input[i] = frame[i] * windowPointer[i]; i += 1 }
            fft.transform()
            let row = power + f * nFreq
            // spec holds (re, im) pairs: square all, add each pair.
            var k = 0
            while k + 8 <= nFreq {
                let v = Kernels.load(spec + 2 * k)
                let sq = v * v
                var p = sq.evenHalf + sq.oddHalf
                if normalized { p *= SIMD8(repeating: norm) }
                if magSpec { p = p.squareRoot() }
                UnsafeMutableRawPointer(row + k).storeBytes(of: p, as: SIMD8<Float>.self)
                k += 8
            }
            while k < nFreq {
                let re = spec[2 * k], im = spec[2 * k + 1]
                var p = re * re + im * im
                if normalized { p *= norm }
                if magSpec { p = p.squareRoot() }
                row[k] = p
                k += 1
            }
        }
    }

    // MARK: - Tables

    /// torchaudio's melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale), transposed to
    /// [n_mels, n_freqs]: bin frequencies linspace(0, sr//2, n_freqs); n_mels + 2 points equally spaced in mel from
    /// f_min to f_max; filter m = max(0, min((f − f_m)/(f_{m+1} − f_m), (f_{m+2} − f)/(f_{m+2} − f_{m+1}))), times
    /// 2/(f_{m+2} − f_m) under slaney norm. Computed in double, stored in float.
    public static func melFilterbank(freqCount: Int, nMels: Int, sampleRate: Int, fMin: Double, fMax: Double,
                                     scale: MelScale, slaneyNorm: Bool) -> [Float] {
        let nyquist = Double(sampleRate / 2)
        let freqs = (0..<freqCount).map { freqCount == 1 ? 0 : nyquist * Double($0) / Double(freqCount - 1) }
        let mMin = hzToMel(fMin, scale), mMax = hzToMel(fMax, scale)
        let points = (0..<(nMels + 2)).map { melToHz(mMin + (mMax - mMin) * Double($0) / Double(nMels + 1), scale) }
        var fb = [Float](repeating: 0, count: nMels * freqCount)
        for m in 0..<nMels {
            let lo = points[m], mid = points[m + 1], hi = points[m + 2]
            let enorm = slaneyNorm ? 2 / (hi - lo) : 1
            for k in 0..<freqCount {
                let down = (freqs[k] - lo) / (mid - lo), up = (hi - freqs[k]) / (hi - mid)
                fb[m * freqCount + k] = Float(max(0, min(down, up)) * enorm)
            }
        }
        return fb
    }

    /// Slaney: linear below 1 kHz (f / (200/3)), logarithmic above (15 + ln(f/1000)/(ln 6.4/27)); HTK: 2595·log10(1 + f/700).
    public static func hzToMel(_ f: Double, _ scale: MelScale) -> Double {
        switch scale {
        case .htk: return 2595 * log10(1 + f / 700)
        case .slaney:
            let fSp = 200.0 / 3, minLogHz = 1000.0, logStep = Foundation.log(6.4) / 27
            return f >= minLogHz ? minLogHz / fSp + Foundation.log(f / minLogHz) / logStep : f / fSp
        }
    }

    public static func melToHz(_ m: Double, _ scale: MelScale) -> Double {
        switch scale {
        case .htk: return 700 * (pow(10, m / 2595) - 1)
        case .slaney:
            let fSp = 200.0 / 3, minLogHz = 1000.0, minLogMel = minLogHz / fSp, logStep = Foundation.log(6.4) / 27
            return m >= minLogMel ? minLogHz * exp(logStep * (m - minLogMel)) : fSp * m
        }
    }

    /// torch.hann_window(win_length, periodic=True) = 0.5 − 0.5·cos(2πn/win_length), zero-padded on both sides to
    /// n_fft as torch.stft pads a shorter window (left (n_fft − win_length)/2).
    public static func hannWindow(length: Int, nFFT: Int) -> [Float] {
        var w = [Float](repeating: 0, count: nFFT)
        let left = (nFFT - length) / 2
        for n in 0..<length {
            w[left + n] = Float(0.5 - 0.5 * cos(2 * Double.pi * Double(n) / Double(length)))
        }
        return w
    }

    static func floorDiv(_ a: Int, _ b: Int) -> Int {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    // MARK: - Vector log

    /// x ← log(max(x, clamp))·scale, clamp > 0: a float32 natural log (Cephes' logf polynomial, ≈1 ulp) on SIMD16 lanes.
    static func logInPlace(_ x: UnsafeMutablePointer<Float>, count: Int, clamp: Float, scale: Float) {
        var i = 0
        let w = Kernels.width
        while i + w <= count {
            Kernels.store(vlog(Kernels.load(x + i).replacing(with: clamp, where: Kernels.load(x + i) .< clamp)) * scale, x + i)
            i += w
        }
        if i < count {
            var tail = Kernels.V(repeating: 1)
            for j in 0..<(count - i) { tail[j] = max(x[i + j], clamp) }
            let r = vlog(tail) * scale
            for j in 0..<(count - i) { x[i + j] = r[j] }
        }
    }

    /// Natural log of positive normal floats (inf and NaN are not expected here: the input is clamped power).
    @inline(__always) static func vlog(_ x: Kernels.V) -> Kernels.V {
        typealias V = Kernels.V
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        var e = V(SIMD16<Int32>(truncatingIfNeeded: bits &>> 23) &- 127)
        var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F80_0000, to: V.self)   // m ∈ [1, 2)
        let big = m .> V(repeating: 1.41421356)
        m = m.replacing(with: m * 0.5, where: big)                                // m ∈ [√½, √2)
        e = e.replacing(with: e + 1, where: big)
        let f = m - 1
        let z = f * f
        var p = V(repeating: 7.0376836292e-2)
        p = p * f - 1.1514610310e-1
        p = p * f + 1.1676998740e-1
        p = p * f - 1.2420140846e-1
        p = p * f + 1.4249322787e-1
        p = p * f - 1.6668057665e-1
        p = p * f + 2.0000714765e-1
        p = p * f - 2.4999993993e-1
        p = p * f + 3.3333331174e-1
        var y = f * z * p
        y += e * -2.12194440e-4
        y -= z * 0.5
        return f + y + e * 0.693359375
    }
}

/// A batch the frontend cannot process (a shape or length mistake by the caller or the data), as one line.
public enum FrontendError: Error, CustomStringConvertible, Equatable {
    case shape(String)

    public var description: String {
        switch self {
        case .shape(let message): return "\(Speech2MelSpec.typeName): \(message)"
        }
    }
}
