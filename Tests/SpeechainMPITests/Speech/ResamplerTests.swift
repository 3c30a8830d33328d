import Foundation
import Testing
@testable import SpeechainMPI

// Lengths from torchaudio's rule worked out by hand; waveforms against sampled sines and against sox's own
// conversion (`sox … rate -h`, which is soxr too).

private func sine(_ frequency: Double, rate: Int, count: Int, amplitude: Double = 0.5) -> [Float] {
    (0..<count).map { Float(amplitude * sin(2 * Double.pi * frequency * Double($0) / Double(rate))) }
}

@Suite struct ResamplerTests {
    @Test func outputLengthIsTorchaudiosCeilOfAFloat32Quotient() {
        // 16000 → 14400: gcd 1600, 9/10 of the input, rounded up
        #expect(Resampler.outputLength(16000, from: 16000, to: 14400) == 14400)
        #expect(Resampler.outputLength(1, from: 16000, to: 14400) == 1)          // 0.9 → 1
        #expect(Resampler.outputLength(11829, from: 16000, to: 14400) == 10647)  // 10646.1 → 10647
        #expect(Resampler.outputLength(11829, from: 16000, to: 17600) == 13012)  // 13011.9 → 13012
        #expect(Resampler.outputLength(16302, from: 22050, to: 16000) == 11830)  // 320·16302/441 = 11829.12
        #expect(Resampler.outputLength(0, from: 22050, to: 16000) == 0)
        // 44100 → 16000 (160/441): 160·180697/441 = 65559.0023, which float32 rounds to 65559.0 before the
        // ceiling; an exact ceiling would give 65560
        #expect(Resampler.outputLength(180697, from: 44100, to: 16000) == 65559)
        #expect(Resampler.outputLength(180698, from: 44100, to: 16000) == 65560)  // 65559.365
        #expect(Resampler.outputLength(12345, from: 16000, to: 16000) == 12345)
    }

    @Test(arguments: [(16000, 14400), (16000, 17600), (22050, 16000), (48000, 16000), (44100, 16000)])
    func sinePassesWithItsFrequencyAndAmplitude(_ from: Int, _ to: Int) throws {
        let n = from / 2                                  // half a second
        let input = sine(1000, rate: from, count: n)
        var output: [Float] = [9, 9]
        try Resampler(from: from, to: to).resample(input, into: &output)
        #expect(output.count == Resampler.outputLength(n, from: from, to: to))
        // away from both ends (filter ramp), the output is the same 1 kHz sine sampled at the new rate
        let ideal = sine(1000, rate: to, count: output.count)
        let margin = to / 50
        let inner = margin..<(output.count - margin)
        let worst = inner.map { abs(output[$0] - ideal[$0]) }.max()!
        #expect(worst < 1e-5, "max error \(worst)")
        let peak = inner.map { abs(output[$0]) }.max()!
        #expect(abs(peak - 0.5) < 2e-3)
    }

    @Test func aToneAboveTheNewNyquistIsRemoved() throws {
        // 7 kHz is below 8 kHz (16 kHz input) and above 6 kHz (12 kHz output): it must not alias to 5 kHz
        let input = sine(7000, rate: 16000, count: 8000)
        var output: [Float] = []
        try Resampler(from: 16000, to: 12000).resample(input, into: &output)
        let rms = (output[600..<5400].map { $0 * $0 }.reduce(0, +) / 4800).squareRoot()
        #expect(rms < 1e-5, "rms \(rms)")
    }

    @Test func matchesSoxRateOnSpeech() throws {
        let path = SpeechFixtures.path("seven16k.wav")
        var input: [Float] = []
        try AudioFile.read(path, into: &input)
        for rate in [14400, 17600] {
            var output: [Float] = []
            try Resampler(from: 16000, to: rate).resample(input, into: &output)
            let sox = try SpeechFixtures.soxFloats(path, ["rate", "-h", String(rate)])
            // sox ends at round(n·ratio); ours at torchaudio's ceiling: they differ by at most one sample
            #expect(abs(output.count - sox.count) <= 1)
            let peak = sox.map(abs).max()!
            let worst = zip(output, sox).map { abs($0 - $1) }.max()!
            #expect(worst < 5e-4 * peak, "rate \(rate): max |ours − sox| = \(worst), peak \(peak)")
        }
    }

    @Test func reusesOneResamplerAcrossUtterances() throws {
        let r = try Resampler(from: 16000, to: 14400)
        let a = sine(440, rate: 16000, count: 4000), b = sine(880, rate: 16000, count: 3000)
        var first: [Float] = [], again: [Float] = [], other: [Float] = []
        try r.resample(a, into: &first)
        try r.resample(b, into: &other)
        try r.resample(a, into: &again)
        #expect(first == again)   // no state leaks from one utterance into the next
        #expect(other.count == 2700)
    }

    @Test func refusesNonPositiveRates() {
        #expect(speechError { _ = try Resampler(from: 0, to: 16000) }?.description.contains("positive") == true)
        #expect(speechError { _ = try Resampler(from: 16000, to: -1) } != nil)
    }
}

@Suite struct SpeedPerturbationTests {
    @Test func targetRatesArePythonIntOfTheProduct() throws {
        #expect(try SpeedPerturbation(sampleRate: 16000).targetRates == [14400, 16000, 17600])  // 17600.000000000004
        #expect(try SpeedPerturbation(sampleRate: 22050).targetRates == [19845, 22050, 24255])
        // int() truncates: 48000·1.15 = 55199.99999999999 and 22050·0.7 = 15434.999999999998 in doubles
        #expect(try SpeedPerturbation(sampleRate: 48000, factors: [1.15]).targetRates == [55199])
        #expect(try SpeedPerturbation(sampleRate: 22050, factors: [0.7]).targetRates == [15434])
    }

    @Test func perturbedLengthsAndTheIdentityFactor() throws {
        let p = try SpeedPerturbation(sampleRate: 16000)
        let input = sine(300, rate: 16000, count: 11829)
        var out: [Float] = []
        try p.perturb(input, factorIndex: 1, into: &out)
        #expect(out == input)                                  // factor 1.0: torchaudio returns the waveform
        try p.perturb(input, factorIndex: 0, into: &out)
        #expect(out.count == 10647 && p.outputLength(11829, factorIndex: 0) == 10647)
        try p.perturb(input, factorIndex: 2, into: &out)
        #expect(out.count == 13012 && p.outputLength(11829, factorIndex: 2) == 13012)
        // played at 16 kHz, 300 Hz resampled to 17.6 kHz sounds at 300·16000/17600 Hz: slower speech
        let ideal = sine(300, rate: 17600, count: out.count)
        #expect(zip(out[400..<12600], ideal[400..<12600]).map { abs($0 - $1) }.max()! < 1e-4)
    }

    @Test func factorsAreDrawnUniformly() throws {
        let p = try SpeedPerturbation()
        var rng = Xoshiro256(seed: 11, stream: 3)
        var counts = [0, 0, 0]
        for _ in 0..<3000 { counts[p.randomFactorIndex(using: &rng)] += 1 }
        #expect(counts.allSatisfy { abs($0 - 1000) < 120 }, "\(counts)")
    }

    @Test func refusesFactorsWithoutAPositiveRate() {
        for f in [0.0, -1.0, .nan, .infinity, 1e-9] {
            #expect(speechError { _ = try SpeedPerturbation(sampleRate: 16000, factors: [f]) } != nil, "\(f)")
        }
        #expect(speechError { _ = try SpeedPerturbation(sampleRate: 16000, factors: []) } != nil)
    }
}
