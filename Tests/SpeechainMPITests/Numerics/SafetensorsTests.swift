import Foundation
import Testing
@testable import SpeechainMPI

// Fixtures come from scripts/reference/interop_fixtures.py (safetensors.numpy.save_file and hand-made
// malformed files); the expected values below are the formulas that script uses.

extension InteropError {
    /// The case name, so tests can check which kind of failure was reported.
    var caseName: String {
        switch self {
        case .unreadable: return "unreadable"
        case .truncated: return "truncated"
        case .malformedHeader: return "malformedHeader"
        case .unsupportedDType: return "unsupportedDType"
        case .invalidLayout: return "invalidLayout"
        case .invalidArgument: return "invalidArgument"
        case .writeFailed: return "writeFailed"
        }
    }
}

/// Bit-exact comparison that also treats NaN == NaN and tells -0 from +0.
private func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { x, y in
        (x.isNaN && y.isNaN) || x.bitPattern == y.bitPattern
    }
}

/// Files in `directory` other than `keep` (e.g. leftover temporary files).
private func otherFiles(in directory: URL, keep: Set<String>) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { !keep.contains($0) }
}

@Suite struct SafetensorsReadTests {
    @Test func readsPythonF32FileInOffsetOrder() throws {
        let (tensors, metadata) = try Safetensors.read(contentsOf: TestResources.url("interop/st_f32.safetensors"))
        #expect(tensors.map(\.name) == ["bias", "empty", "scalar", "weight"])
        #expect(metadata == ["format": "np", "step": "42"])
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
        #expect(byName["weight"]?.shape == [3, 4])
        #expect(byName["weight"]?.values == (0..<12).map { Float($0) * 0.5 - 1 })
        #expect(byName["bias"]?.shape == [4])
        #expect(byName["bias"]?.values == (0..<4).map { Float($0) + 100 })
        #expect(byName["scalar"]?.shape == [])
        #expect(byName["scalar"]?.values == [3.25])
        #expect(byName["empty"]?.shape == [0, 3])
        #expect(byName["empty"]?.values == [])
    }

    @Test func convertsF16AndF64() throws {
        let (tensors, metadata) = try Safetensors.read(contentsOf: TestResources.url("interop/st_f16_f64.safetensors"))
        #expect(metadata.isEmpty)
        #expect(tensors.map(\.name) == ["double", "half"])
        let double = try #require(tensors.first { $0.name == "double" })
        #expect(double.shape == [2, 3])
        #expect(double.values == (0..<6).map { Float(Double($0) * 0.1 - 0.2) })
        let half = try #require(tensors.first { $0.name == "half" })
        let expected: [Float] = [0, -0.0, 1, -2, 0.333251953125, 65504, -65504, 0x1p-14, 0x1p-24,
                                 .infinity, -.infinity, 1000.5, .nan]
        #expect(half.shape == [13])
        #expect(sameBits(half.values, expected))
    }

    @Test func convertsBF16() throws {
        let (tensors, _) = try Safetensors.read(contentsOf: TestResources.url("interop/st_bf16.safetensors"))
        #expect(tensors.map(\.name) == ["brain", "plain"])
        let expected: [Float] = [1, -3, 0.15625, 3.3895313892515355e38, 0x1p-130, .infinity, -0.0, 100.5]
        #expect(tensors.first?.shape == [8])
        #expect(sameBits(tensors.first?.values ?? [], expected))
        #expect(tensors.last?.values == [1.5, -2.5])
    }

    @Test func halfConversionMatchesFloat16ForEveryBitPattern() {
        #if !(os(macOS) && arch(x86_64))
        // Swift's software Float16 conversion needs IEEE subnormals (the process flushes them by default).
        let mismatches = DenormalMode.kept {
            (0...UInt16.max).filter { bits in
                let reference = Float(Float16(bitPattern: bits))
                let converted = Safetensors.halfToFloat(bits)
                return reference.isNaN ? !converted.isNaN : reference.bitPattern != converted.bitPattern
            }
        }
        #expect(mismatches.isEmpty, "first mismatching half bit patterns: \(mismatches.prefix(5))")
        #endif
    }

    @Test(arguments: [
        ("st_truncated.safetensors", "truncated"),
        ("st_short.safetensors", "truncated"),
        ("st_header_past_eof.safetensors", "truncated"),
        ("st_bad_json.safetensors", "malformedHeader"),
        ("st_bad_metadata.safetensors", "malformedHeader"),
        ("st_int32.safetensors", "unsupportedDType"),
        ("st_offsets_out_of_range.safetensors", "truncated"),
        ("st_overlap.safetensors", "invalidLayout"),
        ("st_gap.safetensors", "invalidLayout"),
        ("st_trailing.safetensors", "invalidLayout"),
        ("st_shape_mismatch.safetensors", "invalidLayout"),
        ("st_duplicate.safetensors", "invalidLayout"),
    ])
    func rejectsMalformedFile(_ name: String, _ kind: String) {
        let error = #expect(throws: InteropError.self) {
            _ = try Safetensors.read(contentsOf: TestResources.url("interop/\(name)"))
        }
        #expect(error?.caseName == kind)
        #expect(error?.description.contains(name) == true)
        #expect(error?.description.contains("\n") == false)
    }

    @Test func truncationMessageGivesSizes() {
        let error = #expect(throws: InteropError.self) {
            _ = try Safetensors.read(contentsOf: TestResources.url("interop/st_truncated.safetensors"))
        }
        #expect(error?.description.hasSuffix("st_truncated.safetensors: file is truncated (header says 68 bytes of data, file has 58)") == true)
    }

    @Test func missingFileIsUnreadable() {
        let error = #expect(throws: InteropError.self) {
            _ = try Safetensors.read(contentsOf: URL(fileURLWithPath: "/nonexistent/dir/model.safetensors"))
        }
        #expect(error?.caseName == "unreadable")
        #expect(error?.description == "/nonexistent/dir/model.safetensors: no such file")
    }

    @Test func everyStrictPrefixOfAValidFileThrows() throws {
        let bytes = try Data(contentsOf: TestResources.url("interop/st_f32.safetensors"))
        let directory = try TestResources.scratchDirectory("st-prefix")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("cut.safetensors")
        for length in 0..<bytes.count {
            try bytes.prefix(length).write(to: url)
            #expect(throws: InteropError.self, "prefix of \(length) bytes") {
                _ = try Safetensors.read(contentsOf: url)
            }
        }
    }

    @Test func corruptedBytesThrowOrDecodeButNeverCrash() throws {
        let bytes = try Data(contentsOf: TestResources.url("interop/st_f32.safetensors"))
        let directory = try TestResources.scratchDirectory("st-corrupt")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("corrupt.safetensors")
        let replacements: [UInt8] = [0x00, 0xFF, 0x22, 0x7D, 0x5D, 0x39, 0x2C, 0x5C]
        for position in 0..<min(bytes.count, 300) {
            for replacement in replacements where bytes[position] != replacement {
                var mutated = bytes
                mutated[position] = replacement
                try mutated.write(to: url)
                do {
                    _ = try Safetensors.read(contentsOf: url)
                } catch let error as InteropError {
                    #expect(error.description.contains("corrupt.safetensors"))
                } catch {
                    Issue.record("byte \(position) = \(replacement): unexpected error \(error)")
                }
            }
        }
    }
}

@Suite struct SafetensorsWriteTests {
    static let sample: [NamedTensor] = [
        NamedTensor(name: "encoder.0.weight", shape: [2, 3], values: [1, -2, 3.5, .infinity, -0.0, 0x1p-140]),
        NamedTensor(name: "scalar", shape: [], values: [7]),
        NamedTensor(name: "empty", shape: [0, 4], values: []),
        NamedTensor(name: "ünïcode \"quoted\"\\\n", shape: [3], values: [0.1, 0.2, 0.3]),
    ]

    @Test func roundTripsTensorsMetadataAndOrder() throws {
        let directory = try TestResources.scratchDirectory("st-roundtrip")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.safetensors")
        let metadata = ["format": "pt", "note": "line\nbreak \"quoted\" ✓"]
        try Safetensors.write(Self.sample, metadata: metadata, to: url)
        let (tensors, readMetadata) = try Safetensors.read(contentsOf: url)
        #expect(tensors.map(\.name) == Self.sample.map(\.name))
        #expect(tensors.map(\.shape) == Self.sample.map(\.shape))
        for (read, written) in zip(tensors, Self.sample) {
            #expect(sameBits(read.values, written.values))
        }
        #expect(readMetadata == metadata)
    }

    @Test func writesPaddedHeaderAndContiguousF32Offsets() throws {
        let directory = try TestResources.scratchDirectory("st-layout")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.safetensors")
        try Safetensors.write(Self.sample, metadata: ["a": "b"], to: url)
        let bytes = [UInt8](try Data(contentsOf: url))
        let headerLength = bytes.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect(headerLength % 8 == 0)
        #expect(bytes.count == 8 + headerLength + 4 * (6 + 1 + 0 + 3))
        let headerData = Data(bytes[8..<(8 + headerLength)])
        let header = try #require(try JSONSerialization.jsonObject(with: headerData) as? [String: Any])
        #expect(header["__metadata__"] as? [String: String] == ["a": "b"])
        var offset = 0
        for tensor in Self.sample {
            let info = try #require(header[tensor.name] as? [String: Any])
            #expect(info["dtype"] as? String == "F32")
            #expect(info["shape"] as? [Int] == tensor.shape)
            #expect(info["data_offsets"] as? [Int] == [offset, offset + 4 * tensor.values.count])
            offset += 4 * tensor.values.count
        }
    }

    @Test func writesAnEmptyFile() throws {
        let directory = try TestResources.scratchDirectory("st-empty")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("empty.safetensors")
        try Safetensors.write([], to: url)
        let (tensors, metadata) = try Safetensors.read(contentsOf: url)
        #expect(tensors.isEmpty)
        #expect(metadata.isEmpty)
        #expect(try Data(contentsOf: url).count == 16)  // length + "{}" padded to 8
    }

    @Test func atomicWriteReplacesExistingFileAndLeavesNoTemporaryFiles() throws {
        let directory = try TestResources.scratchDirectory("st-atomic")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.safetensors")
        try Data("old contents that are not safetensors".utf8).write(to: url)
        try Safetensors.write(Self.sample, to: url)
        #expect(try Safetensors.read(contentsOf: url).tensors.map(\.name) == Self.sample.map(\.name))
        try Safetensors.write([NamedTensor(name: "x", shape: [1], values: [2])], to: url)
        #expect(try Safetensors.read(contentsOf: url).tensors == [NamedTensor(name: "x", shape: [1], values: [2])])
        #expect(try otherFiles(in: directory, keep: ["model.safetensors"]).isEmpty)
    }

    @Test func rejectedWriteLeavesDestinationUntouched() throws {
        let directory = try TestResources.scratchDirectory("st-reject")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.safetensors")
        try Safetensors.write(Self.sample, to: url)
        let before = try Data(contentsOf: url)
        let invalid: [[NamedTensor]] = [
            [NamedTensor(name: "a", shape: [2, 2], values: [1, 2, 3])],
            [NamedTensor(name: "a", shape: [1], values: [1]), NamedTensor(name: "a", shape: [1], values: [2])],
            [NamedTensor(name: "__metadata__", shape: [1], values: [1])],
            [NamedTensor(name: "a", shape: [-1], values: [])],
        ]
        for tensors in invalid {
            let error = #expect(throws: InteropError.self) {
                try Safetensors.write(tensors, to: url)
            }
            #expect(error?.caseName == "invalidArgument")
            #expect(error?.description.contains("model.safetensors") == true)
        }
        #expect(try Data(contentsOf: url) == before)
        #expect(try otherFiles(in: directory, keep: ["model.safetensors"]).isEmpty)
    }

    @Test func writeIntoMissingDirectoryFails() {
        let url = URL(fileURLWithPath: "/nonexistent-\(UUID().uuidString)/model.safetensors")
        let error = #expect(throws: InteropError.self) {
            try Safetensors.write(Self.sample, to: url)
        }
        #expect(error?.caseName == "writeFailed")
        #expect(error?.description.contains("model.safetensors") == true)
    }

    /// Writes the files `interop_fixtures.py --check DIR` verifies with safetensors.numpy and numpy,
    /// when SPEECHAIN_INTEROP_EXPORT names a directory; always checks they read back.
    @Test func exportsFilesForThePythonCheck() throws {
        let environment = ProcessInfo.processInfo.environment["SPEECHAIN_INTEROP_EXPORT"]
        let directory = try environment.map { URL(fileURLWithPath: $0) } ?? TestResources.scratchDirectory("export")
        defer { if environment == nil { try? FileManager.default.removeItem(at: directory) } }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let tensors = [
            NamedTensor(name: "weight", shape: [3, 4], values: (0..<12).map { Float($0) * 0.5 - 1 }),
            NamedTensor(name: "bias", shape: [4], values: (0..<4).map { Float($0) + 100 }),
            NamedTensor(name: "scalar", shape: [], values: [3.25]),
            NamedTensor(name: "empty", shape: [0, 3], values: []),
        ]
        let url = directory.appendingPathComponent("swift_written.safetensors")
        try Safetensors.write(tensors, metadata: ["format": "np", "step": "42"], to: url)
        #expect(try Safetensors.read(contentsOf: url).tensors == tensors)
        try NPY.write(float32Matrix: (0..<15).map { Float($0) * 0.25 - 1 }, rows: 5, cols: 3,
                      to: directory.appendingPathComponent("swift_feat.npy"))
        var labels = (0..<10).map { Int64($0) * 3 - 7 }
        labels[9] = (1 << 40) + 5
        try NPY.write(int64Vector: labels, to: directory.appendingPathComponent("swift_labels.npy"))
        #expect(try NPY.readInt64Vector(contentsOf: directory.appendingPathComponent("swift_labels.npy")) == labels)
    }
}
