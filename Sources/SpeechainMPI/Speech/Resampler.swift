import CSoxr
import Foundation

/// Converts float32 mono audio from `inputRate` to `outputRate` (any ratio) with libsoxr at its "HQ" recipe
/// (20-bit precision, linear phase, the quality of `sox … rate -h`; the filter delay is removed, so output sample j
/// sits at time j / outputRate like input sample i at i / inputRate).
///
/// The output length is SpeeChain's, i.e. torchaudio's `Resample`:
///
///     n_out = ceil(float32(new · n_in / orig)),  (orig, new) = (inputRate, outputRate) / gcd(inputRate, outputRate)
///
/// where the quotient is computed in double and rounded to float32 before the ceiling, as `torch.as_tensor` does
/// with a Python float. soxr's own end of stream may differ from that by a sample; the output is cut or padded with
/// zeros to `n_out`. Equal rates copy the input (torchaudio returns the waveform untouched).
///
/// Not thread-safe: soxr keeps stream state. The filter is designed once in `init`; each call starts a fresh
/// stream on it (`soxr_clear`).
public final class Resampler {
    public let inputRate: Int
    public let outputRate: Int
    private let soxr: soxr_t?

    public init(from inputRate: Int, to outputRate: Int) throws {
        guard inputRate > 0, outputRate > 0 else {
            throw SpeechDataError.setting("resampling needs positive sample rates, found \(inputRate) Hz → \(outputRate) Hz")
        }
        self.inputRate = inputRate
        self.outputRate = outputRate
        if inputRate == outputRate { soxr = nil; return }
        var error: soxr_error_t? = nil
        var io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I)
        var quality = soxr_quality_spec(UInt(SOXR_HQ), UInt(SOXR_LINEAR_PHASE))
        var runtime = soxr_runtime_spec(1)
        let handle = soxr_create(Double(inputRate), Double(outputRate), 1, &error, &io, &quality, &runtime)
        guard let handle, error == nil else {
            let why = error.map { String(cString: $0) } ?? "unknown error"
            if let handle { soxr_delete(handle) }
            throw SpeechDataError.setting("libsoxr cannot resample \(inputRate) Hz → \(outputRate) Hz: \(why)")
        }
        soxr = handle
    }

    deinit { if let soxr { soxr_delete(soxr) } }

    /// torchaudio's output length for `inputLength` samples (see the type's comment).
    public static func outputLength(_ inputLength: Int, from inputRate: Int, to outputRate: Int) -> Int {
        precondition(inputRate > 0 && outputRate > 0 && inputLength >= 0)
        if inputRate == outputRate { return inputLength }
        let g = gcd(inputRate, outputRate)
        let orig = inputRate / g, new = outputRate / g
        // Python: new * length / orig (exact integer product, correctly rounded true division), then float32
        let (product, overflow) = new.multipliedReportingOverflow(by: inputLength)
        let quotient: Double = overflow ? Double(new) * Double(inputLength) / Double(orig) : Double(product) / Double(orig)
        return Int(Float(quotient).rounded(.up))
    }

    public func outputLength(_ inputLength: Int) -> Int {
        Resampler.outputLength(inputLength, from: inputRate, to: outputRate)
    }

    /// Resamples `input` into `output` (replaced; capacity kept, so a reused buffer stops allocating).
    public func resample(_ input: UnsafeBufferPointer<Float>, into output: inout [Float]) throws {
        let target = outputLength(input.count)
        guard let soxr else {
            output.removeAll(keepingCapacity: true)
            output.append(contentsOf: input)
            return
        }
        AudioFile.resize(&output, to: target)
        guard target > 0 else { return }
        if let e = soxr_clear(soxr) { throw processFailure(e) }
        var consumed = 0, produced = 0
        try output.withUnsafeMutableBufferPointer { out in
            // feed everything, then signal the end (in = NULL) and drain until the target length is reached
            var idle = 0
            while produced < target {
                let ending = consumed >= input.count
                var idone = 0, odone = 0
                let e = soxr_process(soxr,
                                     ending ? nil : UnsafeRawPointer(input.baseAddress! + consumed),
                                     ending ? 0 : input.count - consumed, &idone,
                                     UnsafeMutableRawPointer(out.baseAddress! + produced), target - produced, &odone)
                if let e { throw processFailure(e) }
                consumed += idone
                produced += odone
                if idone == 0 && odone == 0 {
                    idle += 1
                    if ending || idle > 2 { break }
                } else {
                    idle = 0
                }
            }
            // soxr's stream ended a sample short of torchaudio's length: the rest is silence
            for j in produced..<target { out[j] = 0 }
        }
    }

    public func resample(_ input: [Float], into output: inout [Float]) throws {
        try input.withUnsafeBufferPointer { try resample($0, into: &output) }
    }

    private func processFailure(_ e: soxr_error_t) -> SpeechDataError {
        .setting("libsoxr failed resampling \(inputRate) Hz → \(outputRate) Hz: \(String(cString: e))")
    }
}

/// SpeeChain's `use_speed_perturb` (dataset_conf of SpeechTextDataset): each utterance is resampled from
/// `sampleRate` to `int(sampleRate · factor)` Hz for a factor drawn uniformly from `factors` (`perturb_range`,
/// default [0.9, 1.0, 1.1]) and then used as if it were still at `sampleRate`. A factor below 1 therefore gives
/// fewer samples (faster speech) and one above 1 more (slower speech); 1.0 leaves the waveform as it is.
///
/// SpeeChain draws the factor with `torch.randint(len(factors))`; here the caller's generator draws it
/// (`randomFactorIndex(using:)`), so that the draw is reproducible from the experiment's seed.
public final class SpeedPerturbation {
    public let sampleRate: Int
    public let factors: [Double]
    /// `int(sample_rate * factor)`: the product in double, truncated toward zero, as Python's `int()`.
    public let targetRates: [Int]
    private let resamplers: [Resampler]

    public init(sampleRate: Int = 16000, factors: [Double] = [0.9, 1.0, 1.1]) throws {
        guard sampleRate > 0 else { throw SpeechDataError.setting("sample_rate must be positive, found \(sampleRate)") }
        guard !factors.isEmpty else { throw SpeechDataError.setting("perturb_range must hold at least one factor") }
        var rates: [Int] = []
        for f in factors {
            let rate = SpeedPerturbation.targetRate(sampleRate: sampleRate, factor: f)
            guard f.isFinite, f > 0, let rate, rate > 0 else {
                throw SpeechDataError.setting("perturb_range factor \(f) does not give a positive sample rate from \(sampleRate) Hz")
            }
            rates.append(rate)
        }
        self.sampleRate = sampleRate
        self.factors = factors
        self.targetRates = rates
        self.resamplers = try rates.map { try Resampler(from: sampleRate, to: $0) }
    }

    /// `int(sampleRate * factor)` as Python computes it; nil when it is not a representable integer.
    public static func targetRate(sampleRate: Int, factor: Double) -> Int? {
        let product = Double(sampleRate) * factor
        guard product.isFinite, abs(product) < 9.0e18 else { return nil }
        return Int(product.rounded(.towardZero))
    }

    /// A factor index drawn uniformly from 0..<factors.count.
    public func randomFactorIndex<G: RandomNumberGenerator>(using generator: inout G) -> Int {
        Int.random(in: 0..<factors.count, using: &generator)
    }

    /// The perturbed length of an utterance of `inputLength` samples (torchaudio's rule, see `Resampler`).
    public func outputLength(_ inputLength: Int, factorIndex: Int) -> Int {
        resamplers[factorIndex].outputLength(inputLength)
    }

    /// Writes the waveform `input` perturbed by `factors[factorIndex]` into `output`.
    public func perturb(_ input: UnsafeBufferPointer<Float>, factorIndex: Int, into output: inout [Float]) throws {
        try resamplers[factorIndex].resample(input, into: &output)
    }

    public func perturb(_ input: [Float], factorIndex: Int, into output: inout [Float]) throws {
        try input.withUnsafeBufferPointer { try perturb($0, factorIndex: factorIndex, into: &output) }
    }
}

private func gcd(_ a: Int, _ b: Int) -> Int {
    var (a, b) = (a, b)
    while b != 0 { (a, b) = (b, a % b) }
    return a
}
