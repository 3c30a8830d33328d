import Foundation

/// SpeeChain's rule for the paths a config gives (index files, `token_path`): `parse_path_args`.
public enum SpeechainPath {
    /// SpeeChain's `parse_path_args` for the path of an index file (or a vocabulary folder) in a config: an
    /// absolute path stays; one starting with "." is made absolute from the current directory (normalised like
    /// `os.path.abspath`); any other is joined to `$SPEECHAIN_ROOT`, which must then be set.
    public static func resolve(_ path: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                               currentDirectory: String = FileManager.default.currentDirectoryPath) throws -> String {
        if path.hasPrefix("/") { return path }
        if path.hasPrefix(".") { return normalisedPath(currentDirectory + "/" + path) }
        guard let root = environment["SPEECHAIN_ROOT"], !root.isEmpty else {
            throw SpeechDataError.setting("\(path): a relative path that does not start with '.' is taken from "
                + "$SPEECHAIN_ROOT (as in SpeeChain), which is not set; give an absolute path, start it with ./, or set SPEECHAIN_ROOT")
        }
        return root.hasSuffix("/") ? root + path : root + "/" + path
    }

    /// `os.path.normpath` of an absolute path: ".", "..", repeated and trailing slashes removed, no symlinks read.
    static func normalisedPath(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }
}
