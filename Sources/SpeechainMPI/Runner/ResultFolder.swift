import Foundation

/// The result folder, checked before training starts: one line naming the path and the reason for an empty path,
/// a file where a folder should be, a folder that cannot be created or written, a read-only file system, or too
/// little space for one checkpoint. Rank 0 creates it; every rank checks what it can see without writing, so that
/// on a shared file system every rank gives the same line.
public enum ResultFolder {
    public static func prepare(_ path: String, create: Bool, neededBytes: Int) throws {
        guard !path.isEmpty else {
            throw ConfigError.invalidValue(context: "experiment", key: "train_result_path", reason: "is empty; give a folder (it is created if missing)")
        }
        // the deepest existing ancestor must be a folder; a file on the way is named
        var existing = URL(fileURLWithPath: path).standardizedFileURL
        while !FileManager.default.fileExists(atPath: existing.path) && existing.path != "/" { existing.deleteLastPathComponent() }
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: existing.path, isDirectory: &isDirectory)
        guard isDirectory.boolValue else {
            let which = existing.standardizedFileURL.path == URL(fileURLWithPath: path).standardizedFileURL.path ? "" : " (\(existing.path) is a file)"
            throw InteropError.writeFailed(path: path, reason: "is not a folder\(which)")
        }
        var fs = statvfs()
        if statvfs(existing.path, &fs) == 0 {
            if fs.f_flag & UInt(ST_RDONLY) != 0 { throw InteropError.writeFailed(path: path, reason: "is on a read-only file system") }
            let free = Int(clamping: UInt64(fs.f_bavail) &* UInt64(fs.f_frsize))
            if free < neededBytes {
                throw InteropError.writeFailed(path: path, reason: "has \(sizeText(free)) free; one checkpoint and its model files need about \(sizeText(neededBytes))")
            }
        }
        guard access(existing.path, W_OK | X_OK) == 0 else {
            throw InteropError.writeFailed(path: path, reason: "cannot be written (\(existing.path): \(String(cString: strerror(errno))))")
        }
        guard create else { return }
        try makeDirectory(URL(fileURLWithPath: path))
        // a probe file proves what permissions alone cannot (quota, ACLs, a file system that lies)
        let probe = URL(fileURLWithPath: path).appendingPathComponent(".speechain-write-probe-\(getpid())").path
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw InteropError.writeFailed(path: path, reason: "cannot be written (\(String(cString: strerror(errno))))") }
        close(fd)
        unlink(probe)
    }

    static func sizeText(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? "\(bytes >> 20) MiB" : bytes >= 1 << 10 ? "\(bytes >> 10) KiB" : "\(bytes) bytes"
    }

    /// `mkdir -p` with a one-line error naming the folder and the system's reason (instead of Foundation's
    /// multi-line NSError).
    public static func makeDirectory(_ url: URL) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw InteropError.writeFailed(path: url.path, reason: "is a file, not a folder") }
            return
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path { try makeDirectory(parent) }
        guard mkdir(url.path, 0o755) == 0 || errno == EEXIST else {
            throw InteropError.writeFailed(path: url.path, reason: "cannot be created (\(String(cString: strerror(errno))))")
        }
    }
}
