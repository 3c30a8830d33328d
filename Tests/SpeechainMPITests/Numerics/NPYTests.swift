import Foundation
import Testing
@testable import SpeechainMPI

// Fixtures come from scripts/reference/interop_fixtures.py (np.save / np.lib.format.write_array and hand-made
// malformed files); the expected values below are the formulas that script uses.

private let featValues: [Float] = (0..<15).map { Float($0) * 0.25 - 1 }

private let labelValues: [Int64] = {
    var values = (0..<10).map { Int64($0) * 3 - 7 }
    values[9] = (1 << 40) + 5
    return values
}()

@Suite struct NPYReadTests {
    @Test(arguments: ["feat_v1.npy", "feat_v2.npy", "feat_v3.npy"])
    func readsFloat32MatrixOfEveryFormatVersion(_ name: String) throws {
        let (rows, cols, values) = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/\(name)"))
        #expect(rows == 5)
        #expect(cols == 3)
        #expect(values == featValues)
    }

    @Test func readsHandWrittenHeaderWithDoubleQuotesAndNoTrailingComma() throws {
        let (rows, cols, values) = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/feat_odd_header.npy"))
        #expect(rows == 2 && cols == 2)
        #expect(values == [0.5, 1.5, 2.5, 3.5])
    }

    @Test(arguments: ["labels_i8_v1.npy", "labels_i8_v2.npy"])
    func readsInt64Labels(_ name: String) throws {
        #expect(try NPY.readInt64Vector(contentsOf: TestResources.url("interop/\(name)")) == labelValues)
    }

    @Test func widensInt32Labels() throws {
        let values = try NPY.readInt64Vector(contentsOf: TestResources.url("interop/labels_i4.npy"))
        #expect(values == (0..<6).map { Int64($0) * 1000 - 2500 })
    }

    @Test(arguments: [
        ("feat_truncated.npy", "truncated"),
        ("feat_trailing.npy", "invalidLayout"),
        ("feat_f8.npy", "unsupportedDType"),
        ("feat_bigendian.npy", "unsupportedDType"),
        ("feat_fortran.npy", "invalidLayout"),
        ("feat_1d.npy", "invalidLayout"),
        ("feat_3d.npy", "invalidLayout"),
        ("feat_bad_header.npy", "malformedHeader"),
        ("feat_bad_magic.npy", "malformedHeader"),
        ("feat_bad_version.npy", "malformedHeader"),
        ("feat_header_past_eof.npy", "truncated"),
        ("feat_missing_key.npy", "malformedHeader"),
        ("labels_i8_v1.npy", "unsupportedDType"),
        ("labels_i4.npy", "unsupportedDType"),
    ])
    func matrixReaderRejects(_ name: String, _ kind: String) {
        let error = #expect(throws: InteropError.self) {
            _ = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/\(name)"))
        }
        #expect(error?.caseName == kind)
        #expect(error?.description.contains(name) == true)
        #expect(error?.description.contains("\n") == false)
    }

    @Test(arguments: [
        ("labels_2d.npy", "invalidLayout"),
        ("labels_f4.npy", "unsupportedDType"),
        ("labels_u8.npy", "unsupportedDType"),
        ("labels_truncated.npy", "truncated"),
        ("feat_v1.npy", "unsupportedDType"),
        ("feat_bad_header.npy", "malformedHeader"),
    ])
    func labelReaderRejects(_ name: String, _ kind: String) {
        let error = #expect(throws: InteropError.self) {
            _ = try NPY.readInt64Vector(contentsOf: TestResources.url("interop/\(name)"))
        }
        #expect(error?.caseName == kind)
        #expect(error?.description.contains(name) == true)
    }

    @Test func messagesNameTheProblem() {
        let dtype = #expect(throws: InteropError.self) {
            _ = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/feat_f8.npy"))
        }
        #expect(dtype?.description.hasSuffix("feat_f8.npy: expected float32 ('<f4') features, found '<f8'") == true)
        let shape = #expect(throws: InteropError.self) {
            _ = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/feat_1d.npy"))
        }
        #expect(shape?.description.hasSuffix("feat_1d.npy: expected 2-D features (rows, cols), found shape (6,)") == true)
        let truncated = #expect(throws: InteropError.self) {
            _ = try NPY.readFloat32Matrix(contentsOf: TestResources.url("interop/feat_truncated.npy"))
        }
        #expect(truncated?.description.hasSuffix("feat_truncated.npy: file is truncated (header says 60 bytes of data, file has 53)") == true)
    }

    @Test func everyStrictPrefixOfAValidFileThrows() throws {
        let bytes = try Data(contentsOf: TestResources.url("interop/feat_v1.npy"))
        let directory = try TestResources.scratchDirectory("npy-prefix")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("cut.npy")
        for length in 0..<bytes.count {
            try bytes.prefix(length).write(to: url)
            #expect(throws: InteropError.self, "prefix of \(length) bytes") {
                _ = try NPY.readFloat32Matrix(contentsOf: url)
            }
        }
    }

    @Test func corruptedHeaderBytesThrowOrDecodeButNeverCrash() throws {
        let bytes = try Data(contentsOf: TestResources.url("interop/labels_i8_v1.npy"))
        let directory = try TestResources.scratchDirectory("npy-corrupt")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("corrupt.npy")
        let replacements: [UInt8] = [0x00, 0xFF, 0x27, 0x28, 0x29, 0x2C, 0x39, 0x7B, 0x7D, 0x5C]
        for position in 0..<128 {
            for replacement in replacements where bytes[position] != replacement {
                var mutated = bytes
                mutated[position] = replacement
                try mutated.write(to: url)
                do {
                    _ = try NPY.readInt64Vector(contentsOf: url)
                } catch let error as InteropError {
                    #expect(error.description.contains("corrupt.npy"))
                } catch {
                    Issue.record("byte \(position) = \(replacement): unexpected error \(error)")
                }
            }
        }
    }
}

@Suite struct NPYWriteTests {
    @Test func roundTripsMatrices() throws {
        let directory = try TestResources.scratchDirectory("npy-roundtrip")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("feat.npy")
        let values: [Float] = [1, -2.5, .infinity, -0.0, 0x1p-140, .greatestFiniteMagnitude]
        try NPY.write(float32Matrix: values, rows: 2, cols: 3, to: url)
        let read = try NPY.readFloat32Matrix(contentsOf: url)
        #expect(read.rows == 2 && read.cols == 3)
        #expect(read.values.map(\.bitPattern) == values.map(\.bitPattern))

        try NPY.write(float32Matrix: [], rows: 0, cols: 80, to: url)
        let empty = try NPY.readFloat32Matrix(contentsOf: url)
        #expect(empty.rows == 0 && empty.cols == 80 && empty.values.isEmpty)
    }

    @Test func roundTripsLabels() throws {
        let directory = try TestResources.scratchDirectory("npy-labels")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("label.npy")
        let values: [Int64] = [0, -1, .min, .max, 42]
        try NPY.write(int64Vector: values, to: url)
        #expect(try NPY.readInt64Vector(contentsOf: url) == values)
        try NPY.write(int64Vector: [], to: url)
        #expect(try NPY.readInt64Vector(contentsOf: url) == [])
    }

    @Test func writesVersion1HeaderAlignedTo64Bytes() throws {
        let directory = try TestResources.scratchDirectory("npy-header")
        defer { try? FileManager.default.removeItem(at: directory) }
        let feat = directory.appendingPathComponent("feat.npy")
        try NPY.write(float32Matrix: featValues, rows: 5, cols: 3, to: feat)
        // np.save writes exactly these bytes for the same array.
        #expect(try Data(contentsOf: feat) == Data(contentsOf: TestResources.url("interop/feat_v1.npy")))

        let labels = directory.appendingPathComponent("labels.npy")
        try NPY.write(int64Vector: labelValues, to: labels)
        #expect(try Data(contentsOf: labels) == Data(contentsOf: TestResources.url("interop/labels_i8_v1.npy")))
        let bytes = [UInt8](try Data(contentsOf: labels))
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        #expect(Array(bytes.prefix(8)) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        #expect((10 + headerLength) % 64 == 0)
        let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
        #expect(header.hasPrefix("{'descr': '<i8', 'fortran_order': False, 'shape': (10,), }"))
        #expect(header.hasSuffix(" \n"))
    }

    @Test func atomicWriteReplacesExistingFileAndLeavesNoTemporaryFiles() throws {
        let directory = try TestResources.scratchDirectory("npy-atomic")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("feat.npy")
        try Data(repeating: 0xAB, count: 4096).write(to: url)
        try NPY.write(float32Matrix: [1, 2], rows: 1, cols: 2, to: url)
        #expect(try NPY.readFloat32Matrix(contentsOf: url).values == [1, 2])
        let labels = directory.appendingPathComponent("label.npy")
        try NPY.write(int64Vector: [3], to: labels)
        try NPY.write(int64Vector: [4, 5], to: labels)
        #expect(try NPY.readInt64Vector(contentsOf: labels) == [4, 5])
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == ["feat.npy", "label.npy"])
    }

    @Test func rejectsInconsistentShapeWithoutTouchingTheFile() throws {
        let directory = try TestResources.scratchDirectory("npy-reject")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("feat.npy")
        try NPY.write(float32Matrix: [1, 2], rows: 2, cols: 1, to: url)
        let before = try Data(contentsOf: url)
        for (rows, cols) in [(2, 2), (-1, -2), (Int.max, 2)] {
            let error = #expect(throws: InteropError.self) {
                try NPY.write(float32Matrix: [1, 2], rows: rows, cols: cols, to: url)
            }
            #expect(error?.caseName == "invalidArgument")
            #expect(error?.description.contains("feat.npy") == true)
        }
        #expect(try Data(contentsOf: url) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["feat.npy"])
    }
}
