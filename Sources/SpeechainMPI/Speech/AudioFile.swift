import CSndFile
import Foundation

/// Decodes an audio file with libsndfile into float32 mono samples, as SpeeChain's `read_data_by_path` does for
/// `.wav` and `.flac` (`soundfile.read(path, always_2d=True, dtype='float32')`, which is libsndfile's
/// `sf_readf_float`): integer PCM is scaled by 1/2^(bits−1) into [−1, 1), float files come as stored. Any format
/// libsndfile reads is accepted (WAV, FLAC, AIFF, OGG, …), whatever the file's extension.
///
/// Refused, each with one line naming the file (`SpeechDataError.audio`):
/// - a file libsndfile cannot open or decode (`unreadable`);
/// - a file shorter than its header says: a WAV/AIFF data chunk longer than the file, or a decoder that stops
///   before the frame count of the header (`truncated`); a header that gives no length, as a stream writer
///   leaves it (≥ 0x7F000000 bytes), is not counted as truncation;
/// - a file with no samples (`empty`: SpeeChain skips such an utterance; the caller may do the same);
/// - more than one channel (`multiChannel`): SpeeChain passes a [T, C] waveform on, its frontend expects [T, 1],
///   so a stereo file is refused here instead of being mixed down or trained on as two feature columns;
/// - a NaN or ±inf sample (`nonFinite`, possible in float files).
public enum AudioFile {
    /// What a file's header says.
    public struct Info: Equatable, Sendable {
        public let sampleRate: Int
        /// Frames (samples per channel) as libsndfile counts them; `nil` when the header gives no length.
        public let frames: Int?
        public let channels: Int
    }

    /// The sample rate, length and channel count of `path` without decoding it.
    public static func info(_ path: String) throws -> Info {
        let file = try Handle(path)
        defer { file.close() }
        return file.info
    }

    /// Decodes `path` into `samples` (replacing its contents; its capacity is kept, so a buffer reused across
    /// utterances stops allocating once it has held the longest) and returns the file's sample rate.
    @discardableResult
    public static func read(_ path: String, into samples: inout [Float]) throws -> Int {
        let file = try Handle(path)
        defer { file.close() }
        let info = file.info
        try checkHeader(info, path)
        if let frames = info.frames {
            resize(&samples, to: frames)
            let got = samples.withUnsafeMutableBufferPointer { sf_readf_float(file.sndfile, $0.baseAddress, sf_count_t(frames)) }
            try file.checkDecoder(path)
            guard got == frames else {
                throw failure(path, .truncated, "ends after \(max(got, 0)) of the \(frames) samples its header promises (truncated?)")
            }
        } else {
            // no length in the header: read in chunks to the end
            samples.removeAll(keepingCapacity: true)
            var total = 0
            while true {
                let chunk = 1 << 16
                resize(&samples, to: total + chunk)
                let got = samples.withUnsafeMutableBufferPointer {
                    sf_readf_float(file.sndfile, $0.baseAddress! + total, sf_count_t(chunk))
                }
                try file.checkDecoder(path)
                total += max(Int(got), 0)
                if got < chunk { break }
            }
            resize(&samples, to: total)
            guard total > 0 else { throw failure(path, .empty, "holds no samples") }
        }
        let finite = samples.withUnsafeBufferPointer { Kernels.allFinite($0.baseAddress!, count: $0.count) }
        if !finite, let i = samples.firstIndex(where: { !$0.isFinite }) {
            throw failure(path, .nonFinite, "sample \(i) is \(samples[i]); audio must be finite")
        }
        return info.sampleRate
    }

    /// What `read` requires of a header: one channel and, where the header gives a length, at least one sample.
    static func checkHeader(_ info: Info, _ path: String) throws {
        guard info.channels == 1 else {
            throw failure(path, .multiChannel, "has \(info.channels) channels; speech is read as mono only (SpeeChain's "
                + "frontend takes [T, 1]); mix it down first, e.g. sox in.wav -c 1 out.wav")
        }
        if let frames = info.frames, frames <= 0 { throw failure(path, .empty, "holds no samples") }
    }

    static func failure(_ path: String, _ kind: SpeechDataError.AudioFailure, _ reason: String) -> SpeechDataError {
        .audio(path: path, failure: kind, reason: reason)
    }

    /// Sets `buffer.count` to `n` without giving back capacity (new slots are zero).
    static func resize(_ buffer: inout [Float], to n: Int) {
        if buffer.count > n {
            buffer.removeLast(buffer.count - n)
        } else if buffer.count < n {
            buffer.append(contentsOf: repeatElement(0, count: n - buffer.count))
        }
    }

    /// An open libsndfile handle with the checks every reader needs.
    private final class Handle {
        let sndfile: OpaquePointer
        let info: Info

        init(_ path: String) throws {
            var sfinfo = SF_INFO()
            guard let f = sf_open(path, Int32(SFM_READ), &sfinfo) else {
                if let reason = SpeechDataError.openFailure(path) { throw failure(path, .unreadable, reason) }
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
                if size == 0 { throw failure(path, .unreadable, "is an empty file (0 bytes), not audio") }
                let why = String(cString: sf_strerror(nil)).trimmingCharacters(in: CharacterSet(charactersIn: " ."))
                throw failure(path, .unreadable, "is not audio libsndfile can read (\(why))")
            }
            sndfile = f
            guard sfinfo.samplerate > 0, sfinfo.channels > 0, sfinfo.frames >= 0 else {
                sf_close(f)
                throw failure(path, .unreadable, "has an invalid header (\(sfinfo.samplerate) Hz, \(sfinfo.channels) channels)")
            }
            let frames: Int? = sfinfo.frames == Int64.max ? nil : Int(sfinfo.frames)
            info = Info(sampleRate: Int(sfinfo.samplerate), frames: frames, channels: Int(sfinfo.channels))
            if let (declared, held) = Handle.shortDataChunk(f) {
                sf_close(f)
                throw failure(path, .truncated, "its header promises \(declared) bytes of audio but the file holds "
                    + "\(held) (truncated?)")
            }
        }

        func close() { sf_close(sndfile) }

        /// A decoder that stopped on an error (a FLAC frame that does not decode, a read error).
        func checkDecoder(_ path: String) throws {
            let code = sf_error(sndfile)
            if code != 0 {
                var why = String(cString: sf_strerror(sndfile)).trimmingCharacters(in: CharacterSet(charactersIn: " ."))
                if why.hasPrefix("Error : ") { why.removeFirst(8) }
                throw failure(path, .truncated, "cannot be decoded to the end (\(why)): truncated or damaged")
            }
        }

        /// libsndfile quietly shortens a WAV `data` or AIFF `SSND` chunk that runs past the end of the file and
        /// notes "data : N (should be M)" in its log; that note is the only trace of a truncated WAV file.
        static func shortDataChunk(_ f: OpaquePointer) -> (Int, Int)? {
            var log = [CChar](repeating: 0, count: 4096)
            let n = Int(sf_command(f, Int32(SFC_GET_LOG_INFO), &log, Int32(log.count)))
            guard n > 0 else { return nil }
            let text = String(decoding: log.prefix(min(n, log.count)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            for line in text.split(separator: "\n") {
                let trimmed = line.drop(while: { $0 == " " })
                guard trimmed.hasPrefix("data :") || trimmed.hasPrefix("SSND :"),
                      let open = trimmed.range(of: "(should be ") else { continue }
                let declared = Int(trimmed[trimmed.index(trimmed.startIndex, offsetBy: 6)..<open.lowerBound]
                    .trimmingCharacters(in: .whitespaces))
                let held = Int(trimmed[open.upperBound...].prefix(while: { $0.isNumber }))
                guard let declared, let held else { continue }
                // a stream writer that could not seek back leaves a placeholder length, not a truncation
                if declared >= 0x7F00_0000 { continue }
                if declared > held { return (declared, held) }
            }
            return nil
        }
    }
}
