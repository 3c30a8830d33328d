import Foundation
import Testing
@testable import SpeechainMPI

/// A resume refuses, with one line and without changing a byte of the result folder, a checkpoint that is damaged
/// (flipped bytes in any tensor or in the state record, a truncated file, an unreadable header), a state record
/// that disagrees with itself, and an experiment that changed what shapes the trajectory; a longer num_epochs
/// continues bit-identically.
@Suite struct CheckedResumeTests {
    /// The default experiment (1024 rows, batch 32: 32 steps per epoch) for two epochs.
    static func args(_ dir: URL, epochs: Int = 2) -> [String] {
        ["--num_epochs", "\(epochs)", "--report_per_steps", "100", "--train_result_path", dir.path]
    }

    /// A two-epoch result folder, made once and copied for every case.
    static let base: URL = {
        let dir = try! TestResources.scratchDirectory("checked-base")
        let r = try! Executable.run(args(dir))
        precondition(r.status == 0, r.stderr)
        return dir
    }()

    func copyOfBase(_ label: String) throws -> URL {
        let dir = try TestResources.scratchDirectory(label)
        try FileManager.default.removeItem(at: dir)
        try FileManager.default.copyItem(at: Self.base, to: dir)
        return dir
    }

    /// Every file and folder under `dir` (hidden ones too) with its bytes.
    func snapshot(_ dir: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let fm = FileManager.default
        for case let rel as String in fm.enumerator(atPath: dir.path)! {
            var isDir: ObjCBool = false
            let url = dir.appendingPathComponent(rel)
            _ = fm.fileExists(atPath: url.path, isDirectory: &isDir)
            files[rel] = isDir.boolValue ? Data("<folder>".utf8) : try Data(contentsOf: url)
        }
        return files
    }

    /// FNV-1a of the folder's paths and bytes, for the message.
    func hash(_ s: [String: Data]) -> String {
        var d = Data()
        for k in s.keys.sorted() { d.append(Data(k.utf8)); d.append(0); d.append(s[k]!); d.append(0) }
        return String(d.withUnsafeBytes { FNV1a.hash($0) }, radix: 16)
    }

    /// Resumes (num_epochs 3) and expects a refusal: exit status 1, one line on stderr containing every `needle`,
    /// and the folder byte-identical before and after.
    func expectRefusal(_ dir: URL, extra: [String] = [], _ needles: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = try snapshot(dir)
        let r = try Executable.run(Self.args(dir, epochs: 3) + ["--resume"] + extra)
        let lines = r.stderr.split(separator: "\n")
        #expect(r.status == 1, "\(r.stdout)", sourceLocation: sourceLocation)
        #expect(lines.count == 1, "\(r.stderr)", sourceLocation: sourceLocation)
        for n in needles { #expect(r.stderr.contains(n), "no '\(n)' in: \(r.stderr)", sourceLocation: sourceLocation) }
        let after = try snapshot(dir)
        let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.sorted()
        #expect(hash(before) == hash(after) && changed.isEmpty, "changed: \(changed)", sourceLocation: sourceLocation)
    }

    /// The header of a safetensors file: where its JSON ends, each tensor's [begin, end) in the file, the metadata.
    struct Layout {
        var headerEnd: Int
        var tensors: [String: Range<Int>]
        var header: Data
    }

    func layout(_ url: URL) throws -> Layout {
        let bytes = try Data(contentsOf: url)
        let n = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = bytes.subdata(in: 8..<(8 + n))
        let json = try #require(try JSONSerialization.jsonObject(with: header) as? [String: Any])
        var tensors: [String: Range<Int>] = [:]
        for (name, v) in json where name != "__metadata__" {
            let o = try #require((v as? [String: Any])?["data_offsets"] as? [Int])
            tensors[name] = (8 + n + o[0])..<(8 + n + o[1])
        }
        return Layout(headerEnd: 8 + n, tensors: tensors, header: header)
    }

    func flip(_ url: URL, at positions: [Int], with mask: UInt8) throws {
        var bytes = try Data(contentsOf: url)
        for p in positions { bytes[p] ^= mask }
        try bytes.write(to: url)
    }

    var checkpointName: String { Checkpoint.fileName }

    // MARK: - Damage

    /// 16 bytes of each tensor (or all of a smaller one) get their lowest bit flipped: the values stay finite, so
    /// only the digest can tell.
    @Test func flippedBytesInAnyTensorAreRefusedNamingIt() throws {
        let names = try layout(Self.base.appendingPathComponent(checkpointName)).tensors.keys.sorted()
        #expect(names.contains("gradients") && names.contains("optim.main.exp_avg") && names.contains("model.encoder.0.weight"))
        for name in names {
            let dir = try copyOfBase("flip-tensor")
            defer { try? FileManager.default.removeItem(at: dir) }
            let file = dir.appendingPathComponent(checkpointName)
            let range = try #require(try layout(file).tensors[name])
            let positions = Set((0..<16).map { range.lowerBound + $0 * range.count / 16 }).sorted()
            try flip(file, at: positions, with: 0x01)
            try expectRefusal(dir, [file.path, "tensor '\(name)'", "CRC-32C"])
        }
    }

    /// Digits of the epoch times and train losses in the state record flip to other digits (0↔1, 2↔3, …): the
    /// JSON stays valid and consistent, so only the digest can tell.
    @Test func flippedBytesInTheStateRecordAreRefused() throws {
        let dir = try copyOfBase("flip-state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent(checkpointName)
        let l = try layout(file)
        let header = [UInt8](l.header)
        var digits: [Int] = []
        for key in [#"\"seconds\":"#, #"\"loss\":"#] {
            let k = [UInt8](key.utf8)
            var i = 0
            while i + k.count < header.count {
                if Array(header[i..<(i + k.count)]) == k {
                    var j = i + k.count + 1   // the first digit stays (no leading zero appears)
                    while j < header.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(header[j]) || header[j] == UInt8(ascii: ".") {
                        if header[j] != UInt8(ascii: ".") { digits.append(8 + j) }
                        j += 1
                    }
                }
                i += 1
            }
        }
        #expect(digits.count >= 16)
        try flip(file, at: Array(digits.prefix(16)), with: 0x01)
        try expectRefusal(dir, [file.path, "state record", "CRC-32C"])
    }

    /// The same bytes inverted: the header is no longer UTF-8 JSON.
    @Test func anUnreadableHeaderIsRefused() throws {
        let dir = try copyOfBase("flip-header")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent(checkpointName)
        let header = [UInt8](try layout(file).header)
        let start = try #require(header.indices.first { header[$0...].starts(with: Array(#"\"history\":"#.utf8)) })
        try flip(file, at: (0..<16).map { 8 + start + 20 + $0 }, with: 0xFF)
        try expectRefusal(dir, [file.path, "header is not valid"])
    }

    /// Negative: that many bytes cut from the end; positive: only that many bytes kept (4: not even the length).
    @Test(arguments: [-1, -4000, 100, 4])
    func aTruncatedCheckpointIsRefused(length: Int) throws {
        let dir = try copyOfBase("truncated")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent(checkpointName)
        let bytes = try Data(contentsOf: file)
        try bytes.prefix(length < 0 ? bytes.count + length : length).write(to: file)
        try expectRefusal(dir, [file.path, "truncated"])
    }

    // MARK: - Forged state records (digests recomputed)

    /// Rewrites the checkpoint with `edit` applied to its state record and the digests made to match.
    func reseal(_ url: URL, _ edit: (inout CheckpointState) -> Void) throws {
        let file = try Safetensors.read(contentsOf: url)
        var metadata = file.metadata
        var state = try JSONCoding.decoder(snakeCase: false).decode(CheckpointState.self, from: Data(try #require(metadata[Checkpoint.metadataKey]).utf8))
        edit(&state)
        let json = String(decoding: try JSONCoding.encoder(snakeCase: false).encode(state), as: UTF8.self)
        var digests = try JSONDecoder().decode([String: String].self, from: Data(try #require(metadata[Checkpoint.digestsKey]).utf8))
        digests[Checkpoint.stateRecord] = Checkpoint.hex(CRC32C.checksum(Array(json.utf8)))
        metadata[Checkpoint.metadataKey] = json
        metadata[Checkpoint.digestsKey] = String(decoding: try JSONEncoder().encode(digests), as: UTF8.self)
        try Safetensors.write(file.tensors, metadata: metadata, to: url)
    }

    @Test func aResealedUnchangedStateRecordResumes() throws {
        let dir = try copyOfBase("resealed")
        defer { try? FileManager.default.removeItem(at: dir) }
        try reseal(dir.appendingPathComponent(checkpointName)) { _ in }
        let r = try Executable.run(Self.args(dir, epochs: 3) + ["--resume"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    static let forgeries: [(String, @Sendable (inout CheckpointState) -> Void, String)] = [
        ("7 epochs, 1 history entry", { $0.epoch = 7; $0.history = [$0.history[0]] }, "it records 7 epochs but its history has 1"),
        ("negative step count", { $0.stepNum = -64 }, "step count -64 is negative"),
        ("steps not epochs × steps per epoch", { $0.stepNum = 63 }, "63 steps is not 2 epochs × 32 steps per epoch"),
        ("NaN lr", { $0.schedulers["main"]?.lr = .nan }, "lr nan of 'main'"),
        ("optimizer steps", { $0.schedulers["main"]?.step = 10 }, "the optimizer of 'main' took 10 steps"),
        ("best models", { $0.history[0].valid?["accuracy"] = 2 }, "do not follow from its history"),
        ("update count", { $0.updates = 3 }, "3 update steps in 64 steps"),
    ]

    @Test(arguments: 0..<forgeries.count)
    func aForgedStateRecordIsRefused(index: Int) throws {
        let (label, edit, needle) = Self.forgeries[index]
        let dir = try copyOfBase("forged")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent(checkpointName)
        try reseal(file, edit)
        try expectRefusal(dir, [file.path, "state record is inconsistent", needle])
        _ = label
    }

    // MARK: - What shapes the trajectory

    @Test(arguments: [(["--seed", "1"], "seed 0 → 1"), (["--batch_size", "16"], "batch_size 32 → 16"),
                      (["--accum_grad", "2"], "accum_grad 1 → 2"), (["--lr", "0.01"], "optim_sches.conf.optim_conf.lr 0.005 → 0.01"),
                      (["--set", "data_cfg.train.conf.seed=3"], "data_cfg.train 1024 rows"),
                      (["--set", "train_cfg.model.model_conf.module_conf.encoder.activation=GELU"], "model_conf.module_conf.encoder.activation ReLU → GELU"),
                      (["--use_amp", "true"], "use_amp false → true"), (["--grad_clip", "0.5"], "grad_clip 1 → 0.5"),
                      (["--best_model_selection", "valid loss min 2"], "best_model_selection valid accuracy max 2 → valid loss min 2")])
    func aChangedTrajectoryKeyIsRefusedNamingIt(change: [String], needle: String) throws {
        let dir = try copyOfBase("changed")
        defer { try? FileManager.default.removeItem(at: dir) }
        try expectRefusal(dir, extra: change, ["cannot resume", needle])
    }

    /// num_epochs, report_per_steps and last_model_number may change: 2 epochs then a resume to 3 end where a
    /// straight 3-epoch run ends, bit for bit.
    @Test func aLongerRunContinuesBitIdentically() throws {
        let straight = try TestResources.scratchDirectory("checked-straight"), resumed = try copyOfBase("checked-longer")
        defer { for d in [straight, resumed] { try? FileManager.default.removeItem(at: d) } }
        let a = try Executable.run(Self.args(straight, epochs: 3))
        #expect(a.status == 0, "\(a.stderr)")
        let b = try Executable.run(Self.args(resumed, epochs: 3) + ["--resume", "--report_per_steps", "7", "--last_model_number", "2"])
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stdout.contains("resumed from checkpoint.safetensors: 2 epochs and 64 steps done"))
        for f in ["model.safetensors", "steps.jsonl", "models/latest.safetensors"] {
            #expect(try Data(contentsOf: straight.appendingPathComponent(f)) == Data(contentsOf: resumed.appendingPathComponent(f)), "\(f) differs")
        }
    }

    /// The world size may change only with the global batch (batch_size × ranks) unchanged.
    @Test func theWorldSizeMayChangeOnlyWithTheGlobalBatch() throws {
        let dir = try copyOfBase("world")
        defer { try? FileManager.default.removeItem(at: dir) }
        func mpirun(_ extra: [String]) throws -> Executable.Result {
            try Executable.run(["-np", "2", "--oversubscribe", "--bind-to", "none", Executable.url.path] + Self.args(dir, epochs: 3) + ["--resume"] + extra,
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"], executable: MPIRun.mpirun)
        }
        let before = try snapshot(dir)
        let refused = try mpirun([])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("rank 0: \(dir.appendingPathComponent(checkpointName).path): cannot resume"), "\(refused.stderr)")
        #expect(refused.stderr.contains("rank 1: ") && refused.stderr.contains("world size 1 → 2 (global batch 32 → 64)"), "\(refused.stderr)")
        #expect(try snapshot(dir) == before)
        let same = try mpirun(["--batch_size", "16"])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout.contains("resumed from checkpoint.safetensors: 2 epochs and 64 steps done"))
    }
}
