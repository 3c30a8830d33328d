import Foundation

/// File helpers shared by the interchange readers and writers (safetensors, .npy).
enum InteropFile {
    /// Reads a whole file, turning every failure into `InteropError.unreadable`.
    static func read(_ url: URL) throws -> Data {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InteropError.unreadable(path: path, reason: "no such file")
        }
        if isDirectory.boolValue {
            throw InteropError.unreadable(path: path, reason: "is a directory, not a file")
        }
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw InteropError.unreadable(path: path, reason: "cannot read file (\(error.localizedDescription))")
        }
    }

    /// Writes a file atomically: `body` streams the contents into a fresh
    /// temporary file in the destination's directory, which is then fsynced,
    /// renamed over the destination and followed by an fsync of the directory.
    /// A process killed at any point leaves either the old file or the complete
    /// new one at `url`, never a partial one; on a thrown error the temporary
    /// file is removed and the destination is untouched.
    static func writeAtomically(to url: URL, _ body: (AtomicFileWriter) throws -> Void) throws {
        let destination = url.path
        let directory = url.deletingLastPathComponent().path
        let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(suffix)").path

        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw InteropError.writeFailed(
                path: destination,
                reason: "cannot create a temporary file in \(directory) (\(posixErrorText()))")
        }
        var descriptorOpen = true
        var renamed = false
        defer {
            if descriptorOpen { _ = close(fd) }
            if !renamed { _ = unlink(temporary) }
        }

        try body(AtomicFileWriter(fd: fd, path: destination))

        guard fsync(fd) == 0 else {
            throw InteropError.writeFailed(path: destination, reason: "fsync of the temporary file failed (\(posixErrorText()))")
        }
        descriptorOpen = false
        guard close(fd) == 0 else {
            throw InteropError.writeFailed(path: destination, reason: "closing the temporary file failed (\(posixErrorText()))")
        }
        guard rename(temporary, destination) == 0 else {
            throw InteropError.writeFailed(path: destination, reason: "cannot rename the temporary file into place (\(posixErrorText()))")
        }
        renamed = true

        // Make the rename itself durable. Some file systems cannot fsync a
        // directory (EINVAL); the data is in place then, so that is not an error.
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
        guard directoryFD >= 0 else {
            throw InteropError.writeFailed(path: destination, reason: "cannot open \(directory) to fsync it (\(posixErrorText()))")
        }
        defer { _ = close(directoryFD) }
        if fsync(directoryFD) != 0 && errno != EINVAL {
            throw InteropError.writeFailed(path: destination, reason: "fsync of \(directory) failed (\(posixErrorText()))")
        }
    }
}

extension InteropFile {
    /// Writes `data` atomically (see `writeAtomically(to:_:)`).
    static func writeAtomically(_ data: Data, to url: URL) throws {
        try writeAtomically(to: url) { writer in try data.withUnsafeBytes { try writer.write($0) } }
    }
}

/// Streams bytes into the temporary file of `InteropFile.writeAtomically`.
struct AtomicFileWriter {
    fileprivate let fd: Int32
    /// The destination path, for error messages.
    let path: String

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, 1 << 30)
            let written = posixWrite(fd, base + offset, chunk)
            if written < 0 {
                if errno == EINTR { continue }
                throw InteropError.writeFailed(path: path, reason: "write failed (\(posixErrorText()))")
            }
            offset += written
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Writes Float32 values as little-endian bytes.
    func writeLittleEndian(_ values: [Float]) throws {
        #if _endian(little)
        try values.withUnsafeBytes { try write($0) }
        #else
        let chunkSize = 1 << 16
        var start = 0
        while start < values.count {
            let end = min(values.count, start + chunkSize)
            let swapped = values[start..<end].map { $0.bitPattern.littleEndian }
            try swapped.withUnsafeBytes { try write($0) }
            start = end
        }
        #endif
    }

    /// Writes Int64 values as little-endian bytes.
    func writeLittleEndian(_ values: [Int64]) throws {
        #if _endian(little)
        try values.withUnsafeBytes { try write($0) }
        #else
        let swapped = values.map { $0.littleEndian }
        try swapped.withUnsafeBytes { try write($0) }
        #endif
    }
}

private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

private func posixErrorText() -> String {
    String(cString: strerror(errno))
}
