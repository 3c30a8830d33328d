import Foundation
import Testing
@testable import SpeechainMPI

// Audio comes from espeak-ng and sox (SpeechFixtures); decoded samples are checked against sox's own decoder
// (`sox file -t f32 -`), lengths against soxi-free arithmetic written here.

@Suite struct AudioFileTests {
    @Test(arguments: ["seven.wav", "seven16k.flac", "seven.aiff", "seven48k24.wav", "float.wav"])
    func decodesLikeSox(_ name: String) throws {
        let path = SpeechFixtures.path(name)
        var samples: [Float] = [1, 2, 3]
        let rate = try AudioFile.read(path, into: &samples)
        let reference = try SpeechFixtures.soxFloats(path)
        #expect(samples.count == reference.count)
        // both scale integer PCM by 1/2^(bits-1): the values are the same floats
        #expect(samples == reference)
        let expectedRate = ["seven.wav": 22050, "seven.aiff": 22050, "seven48k24.wav": 48000][name] ?? 16000
        #expect(rate == expectedRate)
    }

    @Test func sixteenBitSamplesAreIntegersOver32768() throws {
        var samples: [Float] = []
        try AudioFile.read(SpeechFixtures.path("seven.wav"), into: &samples)
        #expect(samples.allSatisfy { ($0 * 32768).rounded() == $0 * 32768 && $0 >= -1 && $0 < 1 })
        #expect(samples.contains { $0 != 0 })
    }

    @Test func infoReadsTheHeader() throws {
        let info = try AudioFile.info(SpeechFixtures.path("seven.wav"))
        #expect(info.sampleRate == 22050 && info.channels == 1)
        // espeak-ng's 16-bit file: (file size − 44-byte header) / 2 bytes per sample
        let size = try FileManager.default.attributesOfItem(atPath: SpeechFixtures.path("seven.wav"))[.size] as! Int
        #expect(info.frames == (size - 44) / 2)
        #expect(try AudioFile.info(SpeechFixtures.path("stereo.wav")).channels == 2)
    }

    @Test func reusedBufferKeepsItsCapacity() throws {
        var samples: [Float] = []
        try AudioFile.read(SpeechFixtures.path("seven.wav"), into: &samples)
        let capacity = samples.capacity
        try AudioFile.read(SpeechFixtures.path("seven16k.flac"), into: &samples)
        #expect(samples.count < capacity && samples.capacity == capacity)
    }

    @Test(arguments: [
        ("stereo.wav", SpeechDataError.AudioFailure.multiChannel, "has 2 channels"),
        ("truncated.wav", .truncated, "truncated"),
        ("truncated.flac", .truncated, "cannot be decoded to the end (flac decoder lost sync): truncated or damaged"),
        ("truncated.aiff", .truncated, "truncated"),
        ("silent0.wav", .empty, "holds no samples"),
        ("nan.wav", .nonFinite, "sample 5 is nan"),
        ("zero-bytes.wav", .unreadable, "empty file (0 bytes)"),
        ("garbage.wav", .unreadable, "is not audio libsndfile can read"),
        ("missing.wav", .unreadable, "no such file"),
        ("folder.wav", .unreadable, "is a folder"),
    ])
    func refusesWithOneLineNamingTheFile(_ name: String, _ failure: SpeechDataError.AudioFailure, _ words: String) {
        let path = SpeechFixtures.path(name)
        var samples: [Float] = []
        let error = speechError { try AudioFile.read(path, into: &samples) }
        #expect(error?.audioFailure == failure)
        let line = error?.description ?? ""
        #expect(line.hasPrefix(path + ": "))
        #expect(line.contains(words), "\(line)")
        #expect(!line.contains("\n"))
    }
}

@Suite struct AudioReaderTests {
    @Test func sameRateIsTheDecodedFile() throws {
        let reader = try AudioReader(sampleRate: 16000)
        var samples: [Float] = []
        #expect(try reader.read(SpeechFixtures.path("seven16k.flac"), into: &samples) == 16000)
        #expect(samples == (try SpeechFixtures.soxFloats(SpeechFixtures.path("seven16k.flac"))))
    }

    @Test func higherRateIsResampledDownAsSoxDoes() throws {
        let reader = try AudioReader(sampleRate: 16000)
        var samples: [Float] = []
        let path = SpeechFixtures.path("seven.wav")
        #expect(try reader.read(path, into: &samples) == 22050)
        // torchaudio's length: gcd(22050, 16000) = 50, so 320 · 16302 / 441 = 11829.12 → 11830
        let frames = try AudioFile.info(path).frames!
        #expect(frames == 16302)
        #expect(samples.count == 11830)
        // sox's rate effect (soxr, HQ) ends at round(): 11829 samples; the shared ones agree closely
        let sox = try SpeechFixtures.soxFloats(path, ["rate", "-h", "16000"])
        #expect(sox.count == 11829)
        let peak = sox.map(abs).max()!
        let worst = zip(samples, sox).map { abs($0 - $1) }.max()!
        #expect(worst < 5e-4 * peak, "max |ours − sox| = \(worst), peak \(peak)")
        // 48 kHz → 16 kHz: gcd 16000, so n / 3 rounded up
        var from48k: [Float] = []
        let frames48 = try AudioFile.info(SpeechFixtures.path("seven48k24.wav")).frames!
        #expect(try reader.read(SpeechFixtures.path("seven48k24.wav"), into: &from48k) == 48000)
        #expect(from48k.count == (frames48 + 2) / 3)
    }

    @Test func lowerRateIsOneLineNamingFileAndBothRates() throws {
        let reader = try AudioReader(sampleRate: 16000)
        var samples: [Float] = []
        let path = SpeechFixtures.path("seven8k.wav")
        let error = speechError { try reader.read(path, into: &samples) }
        #expect(error?.audioFailure == .sampleRateTooLow)
        #expect(error?.description == "\(path): is sampled at 8000 Hz, below the configured sample_rate of 16000 Hz "
            + "(audio is only resampled down)")
    }

    @Test func badSampleRateSettingIsRefused() {
        #expect(speechError { _ = try AudioReader(sampleRate: 0) } != nil)
    }
}
