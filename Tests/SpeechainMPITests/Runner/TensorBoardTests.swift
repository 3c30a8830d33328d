import Foundation
import Testing
@testable import SpeechainMPI

/// The event files TensorBoardWriter writes, checked against CRC-32C's published check values and read back by
/// the `tensorboard` Python package itself (its reader verifies every record's CRCs).
@Suite struct TensorBoardTests {
    @Test func crc32cMatchesPublishedCheckValues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        // RFC 3720 appendix B.4
        #expect(CRC32C.checksum([UInt8](repeating: 0x00, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func maskRotatesRightBy15AndAddsTheConstant() {
        #expect(CRC32C.masked(0) == 0xA282_EAD8)
        #expect(CRC32C.masked(1 << 15) == 0xA282_EAD8 &+ 1)
        #expect(CRC32C.masked(1) == 0xA282_EAD8 &+ (1 << 17))
        #expect(CRC32C.masked(0xFFFF_FFFF) == 0xA282_EAD8 &- 1)
    }

    /// Every (tag, step, value) written comes back from TensorBoard's EventAccumulator, and nothing else.
    @Test func tensorBoardReadsBackEveryScalar() throws {
        let directory = try TestResources.scratchDirectory("tensorboard")
        defer { try? FileManager.default.removeItem(at: directory) }
        let points = Self.samplePoints
        let writer = try TensorBoardWriter(directory: directory, wallTime: 1_700_000_000.25)
        for point in points {
            writer.addScalar(tag: point.tag, value: point.value, step: point.step, wallTime: point.wallTime)
            if point.step == 2 { try writer.flush() }   // a flush in the middle, then more records after it
        }
        try writer.close()

        let name = writer.fileURL.lastPathComponent
        #expect(name.hasPrefix("events.out.tfevents.1700000000."))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [name])

        let read = try Self.readWithTensorBoard(directory)
        #expect(read.files == [name])
        #expect(read.fileVersion == "brain.Event:2")
        #expect(read.firstWallTime == 1_700_000_000.25)
        #expect(read.scalars.count == points.count)
        let expected = Set(points.map { ScalarKey(tag: $0.tag, step: $0.step, value: Double(Float($0.value)), wallTime: $0.wallTime) })
        let got = Set(read.scalars.map { ScalarKey(tag: $0.tag, step: $0.step, value: $0.value, wallTime: $0.wallTime) })
        #expect(got == expected)
        #expect(got.contains(ScalarKey(tag: "valid/accuracy", step: 3, value: 0.12345670163631439, wallTime: 1_700_000_003.5)))
    }

    /// A flipped byte inside a record fails its CRC: our reader throws naming the file, and TensorBoard's stops
    /// at that record, returning exactly the scalars before it.
    @Test func corruptedByteFailsTheCRCCheck() throws {
        let directory = try TestResources.scratchDirectory("tensorboard-corrupt")
        defer { try? FileManager.default.removeItem(at: directory) }
        let writer = try TensorBoardWriter(directory: directory)
        for step in 0..<6 { writer.addScalar(tag: "loss", value: Double(step) / 8, step: step) }
        try writer.close()
        let path = writer.fileURL.path
        var bytes = [UInt8](try Data(contentsOf: writer.fileURL))
        let records = try TFRecord.records(in: bytes, path: path)
        #expect(records.count == 7)   // the version record, then one per scalar

        // Flip one bit in the data of record 4 (the scalar of step 3).
        let recordStart = records[0..<4].reduce(0) { $0 + 16 + $1.count }
        bytes[recordStart + 12 + records[4].count / 2] ^= 0x10
        try Data(bytes).write(to: writer.fileURL)

        do {
            _ = try TFRecord.records(in: bytes, path: path)
            Issue.record("a corrupted record passed the CRC check")
        } catch let error as InteropError {
            #expect(error == .malformedHeader(path: path, reason: "record at byte \(recordStart) fails its data CRC-32C check"))
            #expect(error.description.hasPrefix(path + ": "))
        }
        let read = try Self.readWithTensorBoard(directory)
        #expect(read.scalars.map(\.step).sorted() == [0, 1, 2])

        // A file cut inside a record is reported as truncated.
        let cut = #expect(throws: InteropError.self) {
            try TFRecord.records(in: Array(bytes[0..<(recordStart + 20)]), path: path)
        }
        if case .truncated(path, _)? = cut {} else { Issue.record("expected a truncation error, got \(String(describing: cut))") }
    }

    /// A resumed run starting in the same second gets a new file; the earlier one is left byte for byte.
    @Test func secondWriterNeverOverwritesAnEarlierFile() throws {
        let directory = try TestResources.scratchDirectory("tensorboard-resume")
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try TensorBoardWriter(directory: directory, wallTime: 1_700_000_000)
        first.addScalar(tag: "loss", value: 1, step: 1)
        try first.close()
        let firstBytes = try Data(contentsOf: first.fileURL)
        let second = try TensorBoardWriter(directory: directory, wallTime: 1_700_000_000.9)
        second.addScalar(tag: "loss", value: 0.5, step: 2)
        try second.close()
        #expect(second.fileURL.lastPathComponent == first.fileURL.lastPathComponent + ".1")
        #expect(try Data(contentsOf: first.fileURL) == firstBytes)
        #expect(try TFRecord.records(in: [UInt8](Data(contentsOf: second.fileURL)), path: "").count == 2)
        try second.close()   // closing twice does nothing
    }

    @Test func unwritableDirectoryIsAOneLineErrorNamingIt() throws {
        let directory = try TestResources.scratchDirectory("tensorboard-bad")
        defer { try? FileManager.default.removeItem(at: directory) }
        // A path below a regular file cannot be created, even by root.
        let file = directory.appendingPathComponent("not-a-directory")
        try Data("x".utf8).write(to: file)
        let logDirectory = file.appendingPathComponent("tb")
        do {
            _ = try TensorBoardWriter(directory: logDirectory)
            Issue.record("created a TensorBoard writer below a regular file")
        } catch let error as InteropError {
            #expect(error.path == logDirectory.path)
            #expect(error.description.hasPrefix(logDirectory.path + ": cannot create the TensorBoard log directory"))
            #expect(!error.description.contains("\n"))
        }
    }

    // MARK: - Helpers

    struct Point {
        let tag: String
        let value: Double
        let step: Int
        let wallTime: Double
    }

    struct ScalarKey: Hashable {
        let tag: String
        let step: Int
        let value: Double
        let wallTime: Double
    }

    /// Three tags interleaved, with a value of exactly 0 (which proto3 would leave off the wire without explicit
    /// presence), a value that is not a Float32, a negative one, a step past Int32 and a non-ASCII tag.
    static let samplePoints: [Point] = {
        var points: [Point] = []
        for step in 0..<4 {
            let wallTime = 1_700_000_000.5 + Double(step)
            points.append(Point(tag: "train/loss", value: step == 0 ? 0 : 2.5 / Double(step), step: step, wallTime: wallTime))
            points.append(Point(tag: "valid/accuracy", value: step == 3 ? 0.1234567 : -Double(step + 1) * 1e-3, step: step, wallTime: wallTime))
        }
        points.append(Point(tag: "lr/Noam λ", value: 3.0e-4, step: 5_000_000_123, wallTime: 1_700_009_999.125))
        points.append(Point(tag: "train/loss", value: 1e30, step: 5_000_000_123, wallTime: 1_700_009_999.125))
        return points
    }()

    struct TensorBoardRead: Decodable {
        struct Scalar: Decodable {
            let tag: String
            let step: Int
            let value: Double
            let wallTime: Double
        }
        let files: [String]
        let fileVersion: String
        let firstWallTime: Double
        let scalars: [Scalar]
    }

    /// Reads a log directory with the `tensorboard` package: the first event of its one event file through
    /// EventFileLoader, and every scalar through EventAccumulator (what TensorBoard's UI shows) keeping all points.
    /// Fails (never skips) when python3 or tensorboard is missing: scripts/test.sh installs it.
    static func readWithTensorBoard(_ directory: URL) throws -> TensorBoardRead {
        let script = #"""
            import json, os, sys
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
            d = sys.argv[1]
            files = sorted(f for f in os.listdir(d) if "tfevents" in f)
            first = next(iter(EventFileLoader(os.path.join(d, files[0])).Load()))
            acc = EventAccumulator(d, size_guidance={"scalars": 0})
            acc.Reload()
            scalars = [{"tag": tag, "step": e.step, "value": e.value, "wallTime": e.wall_time}
                       for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
            print(json.dumps({"files": files, "fileVersion": first.file_version,
                              "firstWallTime": first.wall_time, "scalars": scalars}))
            """#
        let result = try ClusterSupport.run("python3", ["-c", script, directory.path], timeout: 120)
        guard result.status == 0 else {
            throw PythonReadError(message: "reading \(directory.path) with python3's tensorboard failed (status \(result.status); "
                + "if tensorboard is missing, scripts/test.sh installs it with `python3 -m pip install tensorboard`):\n"
                + result.stderr.split(separator: "\n").suffix(8).joined(separator: "\n"))
        }
        let json = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return try JSONDecoder().decode(TensorBoardRead.self, from: Data(json.utf8))
    }

    struct PythonReadError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
