import Foundation

/// An error reading or writing an interchange file (safetensors, .npy); its
/// `description` is one line naming the file and the problem in plain words.
public enum InteropError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file could not be opened or read at all (missing, permissions, ...).
    case unreadable(path: String, reason: String)
    /// The file ends before the data its header promises.
    case truncated(path: String, reason: String)
    /// The magic bytes, header length or header text is not valid.
    case malformedHeader(path: String, reason: String)
    /// The element type is not one this reader accepts.
    case unsupportedDType(path: String, reason: String)
    /// The header is well formed but describes an impossible or unsupported
    /// layout: offsets out of range, overlapping or with gaps, a shape that does
    /// not match the byte count, the wrong number of dimensions, duplicate names.
    case invalidLayout(path: String, reason: String)
    /// The values handed to a writer are inconsistent (shape vs. count, names).
    case invalidArgument(path: String, reason: String)
    /// The file could not be written, synced or renamed into place.
    case writeFailed(path: String, reason: String)

    /// The path of the file the error is about.
    public var path: String {
        switch self {
        case .unreadable(let path, _), .truncated(let path, _), .malformedHeader(let path, _),
             .unsupportedDType(let path, _), .invalidLayout(let path, _),
             .invalidArgument(let path, _), .writeFailed(let path, _):
            return path
        }
    }

    /// The problem, without the path.
    public var reason: String {
        switch self {
        case .unreadable(_, let reason), .truncated(_, let reason), .malformedHeader(_, let reason),
             .unsupportedDType(_, let reason), .invalidLayout(_, let reason),
             .invalidArgument(_, let reason), .writeFailed(_, let reason):
            return reason
        }
    }

    public var description: String {
        InteropError.oneLine("\(path): \(reason)")
    }

    /// Replaces line breaks and other control characters (which may come from a
    /// corrupted header quoted in the reason) so the description stays one line.
    static func oneLine(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\u{2028}" || scalar == "\u{2029}" {
                out.append(" ")
            } else {
                out.append(scalar)
            }
        }
        return String(out)
    }

    /// Quotes a short excerpt of untrusted text for use inside a reason.
    static func excerpt(_ text: String, limit: Int = 40) -> String {
        let clipped = text.count > limit ? String(text.prefix(limit)) + "..." : text
        return "'" + oneLine(clipped) + "'"
    }
}
