import Foundation

/// Reads utterances as SpeeChain's `SpeechTextDataset.extract_main_data_fn` does: float32 mono (see `AudioFile`)
/// at the configured `sampleRate` (`dataset_conf.sample_rate`, 16000 by default). A file recorded at a higher rate
/// is resampled down (`Resampler`, one per input rate, kept like SpeeChain's `wav_resampler_dict`); a lower rate is
/// refused with one line naming the file and both rates.
///
/// Paths are opened as given: a relative path in an `idx2wav` file is relative to the current directory, as
/// `soundfile.read` takes it in SpeeChain (whose data scripts write absolute paths).
///
/// Holds a scratch buffer and resamplers: one reader per loading thread.
public final class AudioReader {
    public let sampleRate: Int
    private var resamplers: [Int: Resampler] = [:]
    private var scratch: [Float] = []

    public init(sampleRate: Int = 16000) throws {
        guard sampleRate > 0 else { throw SpeechDataError.setting("sample_rate must be positive, found \(sampleRate)") }
        self.sampleRate = sampleRate
    }

    /// What `read` checks before decoding, from the header alone (a truncated WAV shows there too; a damaged
    /// compressed file only when decoded): the file opens, is mono, not empty, and not below `sampleRate`.
    public func checkHeader(_ path: String) throws {
        let info = try AudioFile.info(path)
        try AudioFile.checkHeader(info, path)
        try checkRate(info.sampleRate, path)
    }

    private func checkRate(_ fileRate: Int, _ path: String) throws {
        if fileRate < sampleRate {
            throw SpeechDataError.audio(path: path, failure: .sampleRateTooLow,
                                        reason: "is sampled at \(fileRate) Hz, below the configured sample_rate of "
                                            + "\(sampleRate) Hz (audio is only resampled down)")
        }
    }

    /// Reads `path` into `samples` at `sampleRate` (contents replaced, capacity kept) and returns the file's own
    /// sample rate.
    @discardableResult
    public func read(_ path: String, into samples: inout [Float]) throws -> Int {
        let fileRate = try AudioFile.read(path, into: &scratch)
        try checkRate(fileRate, path)
        if fileRate == sampleRate {
            swap(&samples, &scratch)
            return fileRate
        }
        let resampler: Resampler
        if let r = resamplers[fileRate] {
            resampler = r
        } else {
            resampler = try Resampler(from: fileRate, to: sampleRate)
            resamplers[fileRate] = resampler
        }
        try resampler.resample(scratch, into: &samples)
        return fileRate
    }
}
