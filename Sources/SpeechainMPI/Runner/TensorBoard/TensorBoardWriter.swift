import Foundation

/// Writes scalar curves as a TensorBoard event file: `events.out.tfevents.<unix seconds>.<hostname>` in a log
/// directory, a sequence of TFRecord-framed `tensorflow.Event` protos, the first one
/// `Event{wall_time, file_version: "brain.Event:2"}` and then one `Event{wall_time, step, summary{tag, simple_value}}`
/// per scalar. `addScalar` only buffers; `flush` appends the buffered records to the file in one write and `close`
/// flushes and closes it. An existing file is never overwritten (a resumed run in the same second gets a suffix).
/// Not thread-safe: one writer per process (rank 0), driven by one thread.
public final class TensorBoardWriter {
    /// The event file this writer appends to.
    public let fileURL: URL

    private var descriptor: Int32
    private var pending: [UInt8] = []

    /// Creates `directory` (and its parents) if needed and a new event file in it holding the version record.
    /// Throws `InteropError.writeFailed` naming the directory or file when either cannot be created or written.
    public init(directory: URL, wallTime: Double = Date().timeIntervalSince1970) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw InteropError.writeFailed(path: directory.path, reason: "cannot create the TensorBoard log directory (\(error.localizedDescription))")
        }
        // TensorBoard's own writers zero-pad the seconds to 10 digits, so file names sort by creation time.
        let seconds = String(Int(wallTime.rounded(.down)))
        let base = "events.out.tfevents.\(String(repeating: "0", count: max(0, 10 - seconds.count)) + seconds).\(Self.hostName())"
        var suffix = 0
        while true {
            let url = directory.appendingPathComponent(suffix == 0 ? base : "\(base).\(suffix)")
            let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
            if fd >= 0 {
                fileURL = url
                descriptor = fd
                break
            }
            guard errno == EEXIST else {
                throw InteropError.writeFailed(path: url.path, reason: "cannot create the TensorBoard event file (\(Self.errnoText()))")
            }
            suffix += 1
        }
        var header = Tensorflow_Event()
        header.wallTime = wallTime
        header.fileVersion = "brain.Event:2"
        append(header)
        try flush()
    }

    deinit {
        if descriptor >= 0 {
            try? flush()
            _ = closeDescriptor(descriptor)
        }
    }

    /// Buffers one point of the curve `tag`. The value is stored as Float32, as TensorBoard's simple_value is.
    public func addScalar(tag: String, value: Double, step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        var point = Tensorflow_Summary.Value()
        point.tag = tag
        point.simpleValue = Float(value)
        var event = Tensorflow_Event()
        event.wallTime = wallTime
        event.step = Int64(step)
        event.summary.value = [point]
        append(event)
    }

    /// Appends the buffered records to the file with one write (no fsync: a crash loses at most the last points).
    public func flush() throws {
        guard !pending.isEmpty else { return }
        guard descriptor >= 0 else {
            throw InteropError.writeFailed(path: fileURL.path, reason: "TensorBoard writer used after close()")
        }
        var offset = 0
        try pending.withUnsafeBytes { bytes in
            while offset < bytes.count {
                let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw InteropError.writeFailed(path: fileURL.path, reason: "write failed (\(Self.errnoText()))")
                }
                offset += written
            }
        }
        pending.removeAll(keepingCapacity: true)
    }

    /// Flushes and closes the file; later calls do nothing.
    public func close() throws {
        guard descriptor >= 0 else { return }
        defer {
            _ = closeDescriptor(descriptor)
            descriptor = -1
        }
        try flush()
    }

    private func append(_ event: Tensorflow_Event) {
        // Cannot fail: these proto3 messages have no required fields and are far below protobuf's 2 GiB limit.
        let data: [UInt8] = try! event.serializedBytes()
        TFRecord.append(data, to: &pending)
    }

    private static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(cString: buffer)
        // A host name never holds '/', but keep the file name a single path component whatever the system says.
        return name.isEmpty ? "localhost" : name.replacingOccurrences(of: "/", with: "_")
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

// Outside the class, where `close` is the C function rather than `TensorBoardWriter.close()`.
private func closeDescriptor(_ fd: Int32) -> Int32 {
    close(fd)
}
