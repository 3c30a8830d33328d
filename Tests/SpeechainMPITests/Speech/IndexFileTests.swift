import Foundation
import Testing
@testable import SpeechainMPI

private func write(_ text: String, _ name: String, in dir: URL) throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
    return url.path
}

private func writeBytes(_ bytes: [UInt8], _ name: String, in dir: URL) throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url.path
}

@Suite struct IndexFileTests {
    @Test func splitsEachLineAtItsFirstSpace() throws {
        let dir = try TestResources.scratchDirectory("index")
        let path = try write("u1 /data/a b.wav\nu2  two spaces kept \n", "idx2wav", in: dir)
        let f = try IndexFile.load(path)
        #expect(f["u1"] == "/data/a b.wav")
        #expect(f["u2"] == " two spaces kept ")
        #expect(f.origin(of: "u2")! == (path, 2))
        #expect(f.count == 2)
    }

    @Test func universalNewlinesAndAByteOrderMark() throws {
        let dir = try TestResources.scratchDirectory("index")
        let path = try writeBytes([0xEF, 0xBB, 0xBF] + Array("a 1\r\nb 2\rc 3\nd 4".utf8), "idx2wav_len", in: dir)
        let f = try IndexFile.loadLengths(path)
        #expect(f.indices == ["a", "b", "c", "d"])
        #expect(f.indices.map { f[$0]! } == [1, 2, 3, 4])
        #expect(f.origin(of: "d")!.line == 4)
    }

    @Test func indicesSortAsPythonSortsStrings() throws {
        // Python: sorted(['b', 'B', 'a10', 'a2', 'é', 'Z', 'a']) == ['B', 'Z', 'a', 'a10', 'a2', 'b', 'é']
        let dir = try TestResources.scratchDirectory("index")
        let path = try write("b x\nB x\na10 x\na2 x\né x\nZ x\na x\n", "idx2wav", in: dir)
        #expect(try IndexFile.load(path).indices == ["B", "Z", "a", "a10", "a2", "b", "é"])
    }

    @Test func severalFilesOfOneSourceMerge() throws {
        let dir = try TestResources.scratchDirectory("index")
        let a = try write("x 1\ny 2\n", "a", in: dir), b = try write("z 3\n", "b", in: dir)
        let f = try IndexFile.loadLengths([a, b])
        #expect(f.indices == ["x", "y", "z"] && f["z"] == 3 && f.origin(of: "z")! == (b, 1))
    }

    @Test func lengthsAcceptWhatPythonsIntAccepts() throws {
        let dir = try TestResources.scratchDirectory("index")
        let path = try write("a 12\nb +7\nc  30 \nd 0\n", "len", in: dir)
        let f = try IndexFile.loadLengths(path)
        #expect([f["a"], f["b"], f["c"], f["d"]] == [12, 7, 30, 0])
    }

    @Test func transcriptsKeepTheirSpaces() throws {
        let dir = try TestResources.scratchDirectory("index")
        let path = try write("u1 hello world\nu2 a  b\n", "idx2no-punc_text", in: dir)
        let f = try IndexFile.loadTranscripts(path)
        #expect(f["u1"] == "hello world" && f["u2"] == "a  b")
    }

    enum Kind: String, CaseIterable { case text, wav, length }

    @Test(arguments: [
        ("a x\nb y\na z\n", Kind.wav, 3, "index 'a' is already defined on line 1"),
        ("a x\nb\n", .wav, 2, "has no value after its index 'b'"),
        ("a x\nb\ty\n", .wav, 2, "has no value after its index 'b\\ty' (a tab does not separate them, a space does)"),
        ("a x\n\nb y\n", .wav, 2, "is empty"),
        (" a x\n", .wav, 1, "starts with a space"),
        ("a x\nb \n", .wav, 2, "index 'b': has nothing after the space"),
        ("a hello\nb    \n", .text, 2, "index 'b': empty transcript"),
        ("a hello\nb \n", .text, 2, "index 'b': empty transcript"),
        ("a 12\nb 12.5\n", .length, 2, "index 'b': length '12.5' is not an integer"),
        ("a 12\nb twelve\n", .length, 2, "length 'twelve' is not an integer"),
        ("a -3\n", .length, 1, "length '-3' is negative"),
        ("a 1_000\n", .length, 1, "is not an integer"),
    ])
    func refusesWithFileAndLine(_ text: String, _ kind: Kind, _ line: Int, _ words: String) throws {
        let dir = try TestResources.scratchDirectory("index")
        let path = try write(text, "idx2\(kind.rawValue)", in: dir)
        let error = speechError {
            switch kind {
            case .text: _ = try IndexFile.loadTranscripts(path)
            case .wav: _ = try IndexFile.load(path)
            case .length: _ = try IndexFile.loadLengths(path)
            }
        }
        let description = error?.description ?? "no error"
        #expect(description.hasPrefix("\(path):\(line): "), "\(description)")
        #expect(description.contains(words), "\(description)")
        #expect(!description.contains("\n"))
    }

    @Test func duplicateAcrossFilesNamesBoth() throws {
        let dir = try TestResources.scratchDirectory("index")
        let a = try write("x 1\ny 2\n", "a", in: dir), b = try write("z 3\ny 4\n", "b", in: dir)
        let error = speechError { _ = try IndexFile.loadLengths([a, b]) }
        #expect(error?.description == "\(b):2: index 'y' is already defined on \(a):2")
    }

    @Test func invalidUTF8AndMissingFiles() throws {
        let dir = try TestResources.scratchDirectory("index")
        let bad = try writeBytes(Array("a x\nb ".utf8) + [0xFF, 0xFE] + [0x0A], "bad", in: dir)
        #expect(speechError { _ = try IndexFile.load(bad) }?.description == "\(bad):2: is not valid UTF-8")
        let missing = dir.appendingPathComponent("nope").path
        #expect(speechError { _ = try IndexFile.load(missing) }?.description == "\(missing): no such file")
        #expect(speechError { _ = try IndexFile.load(dir.path) }?.description == "\(dir.path): is a folder, not a file")
    }
}

@Suite struct IndexJoinTests {
    @Test func commonIndicesOfMatchingFiles() throws {
        let dir = try TestResources.scratchDirectory("join")
        let wav = try IndexFile.load(try write("b /b.wav\na /a.wav\n", "idx2wav", in: dir))
        let len = try IndexFile.loadLengths(try write("a 10\nb 20\n", "idx2wav_len", in: dir))
        let text = try IndexFile.loadTranscripts(try write("a hi\nb yo\n", "idx2text", in: dir))
        #expect(try IndexJoin.commonIndices([wav, len, text]) == ["a", "b"])
    }

    @Test func anIndexMissingFromOneFileNamesThatFile() throws {
        let dir = try TestResources.scratchDirectory("join")
        let wavPath = try write("a /a.wav\nb /b.wav\nc /c.wav\n", "idx2wav", in: dir)
        let lenPath = try write("a 10\nc 30\n", "idx2wav_len", in: dir)
        let wav = try IndexFile.load(wavPath), len = try IndexFile.loadLengths(lenPath)
        let error = speechError { _ = try IndexJoin.commonIndices([wav, len]) }
        #expect(error?.description == "\(lenPath): has no line for index 'b', which \(wavPath) has on line 2")
        // the other way round: an index only the length file has
        let len2 = try IndexFile.loadLengths(try write("a 1\nb 2\nc 3\nd 4\n", "len2", in: dir))
        let error2 = speechError { _ = try IndexJoin.commonIndices([wav, len2]) }
        #expect(error2?.description.hasPrefix("\(wavPath): has no line for index 'd'") == true)
    }

    @Test func speechainsLenientIntersectionCountsWhatItDrops() throws {
        let dir = try TestResources.scratchDirectory("join")
        let wav = try IndexFile.load(try write("a /a\nb /b\nc /c\n", "w", in: dir))
        let len = try IndexFile.loadLengths(try write("a 1\nc 3\nd 4\n", "l", in: dir))
        let (indices, dropped) = IndexJoin.intersection([wav, len])
        #expect(indices == ["a", "c"])
        #expect(dropped.map(\.count) == [1, 1])
    }
}

@Suite struct SpeechainPathTests {
    @Test func resolvesAsParsePathArgs() throws {
        #expect(try SpeechainPath.resolve("/abs/idx2wav", environment: [:]) == "/abs/idx2wav")
        #expect(try SpeechainPath.resolve("./data/../x//idx2wav", environment: [:], currentDirectory: "/work/run")
            == "/work/run/x/idx2wav")
        #expect(try SpeechainPath.resolve("../up", environment: [:], currentDirectory: "/work/run") == "/work/up")
        #expect(try SpeechainPath.resolve("datasets/librispeech/data", environment: ["SPEECHAIN_ROOT": "/opt/sc"])
            == "/opt/sc/datasets/librispeech/data")
        let error = speechError { _ = try SpeechainPath.resolve("datasets/x", environment: [:]) }
        #expect(error?.description.hasPrefix("datasets/x: a relative path that does not start with '.'") == true)
    }
}
