import Foundation
import Testing
@testable import SpeechainMPI

/// recipes/asr/spoken_digits/data_prep.sh in tiny mode: SpeeChain's dump layout and line formats, readable 16 kHz
/// mono audio whose lengths are the index's, digit-word transcripts, held-out test voices, SpeeChain's char
/// vocabulary, and the same bytes again for the same seed.
@Suite(.serialized) struct SpokenDigitsCorpusTests {
    static let script = ClusterSupport.repository.appendingPathComponent("recipes/asr/spoken_digits/data_prep.sh")
    static let sets = ["train", "valid", "test"]
    static let sizes = ["train": 60, "valid": 12, "test": 12]
    static let words: Set<String> = ["oh", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    /// The per-set index files; every one holds every idx of its set.
    static let indexFiles = ["idx2wav", "idx2wav_len", "idx2no-punc_text", "idx2spk", "idx2gen", "idx2synth"]

    static func prepare(_ out: URL, seed: Int, jobs: Int) throws -> ClusterSupport.Result {
        try ClusterSupport.run("/bin/bash", [script.path, "--tiny", "--seed", "\(seed)", "--jobs", "\(jobs)",
                                             "--out", out.path], timeout: 300)
    }

    /// The corpus of seed 7 made once for the whole suite.
    static let corpus: Result<URL, Error> = Result {
        let out = try TestResources.scratchDirectory("digits-a").appendingPathComponent("data")
        let r = try prepare(out, seed: 7, jobs: 2)
        guard r.status == 0 else { throw Failure("data_prep.sh failed (\(r.status)): \(r.output)") }
        return out
    }

    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// Lines of an index file as (idx, value) split at the first space, checking the line format on the way.
    static func lines(_ url: URL) throws -> [(String, String)] {
        let text = try String(contentsOf: url, encoding: .utf8)
        #expect(text.hasSuffix("\n"), "\(url.path) does not end with a newline")
        return try text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).map { line in
            guard let space = line.firstIndex(of: " ") else { throw Failure("\(url.path): no space in '\(line)'") }
            let key = String(line[..<space]), value = String(line[line.index(after: space)...])
            #expect(!key.isEmpty && !value.isEmpty && !value.hasPrefix(" ") && !value.hasSuffix(" "),
                    "\(url.lastPathComponent): '\(line)'")
            return (key, value)
        }
    }

    static func map(_ url: URL) throws -> [String: String] {
        Dictionary(try lines(url), uniquingKeysWith: { a, _ in a })
    }

    /// The RIFF/WAVE header read by hand: format tag, channels, sample rate, bits, and the sample count of `data`.
    static func wavInfo(_ url: URL) throws -> (format: Int, channels: Int, rate: Int, bits: Int, samples: Int) {
        let d = [UInt8](try Data(contentsOf: url))
        func u32(_ i: Int) -> Int { Int(d[i]) | Int(d[i + 1]) << 8 | Int(d[i + 2]) << 16 | Int(d[i + 3]) << 24 }
        func u16(_ i: Int) -> Int { Int(d[i]) | Int(d[i + 1]) << 8 }
        func tag(_ i: Int) -> String { String(decoding: d[i..<i + 4], as: UTF8.self) }
        guard d.count >= 12, tag(0) == "RIFF", tag(8) == "WAVE" else { throw Failure("\(url.path): not RIFF/WAVE") }
        guard u32(4) == d.count - 8 else { throw Failure("\(url.path): RIFF size \(u32(4)) for \(d.count) bytes") }
        var i = 12
        var fmt: (Int, Int, Int, Int)?
        while i + 8 <= d.count {
            let id = tag(i), size = u32(i + 4)
            guard i + 8 + size <= d.count else { throw Failure("\(url.path): chunk '\(id)' runs past the end") }
            if id == "fmt " {
                guard size >= 16 else { throw Failure("\(url.path): short fmt chunk") }
                fmt = (u16(i + 8), u16(i + 10), u32(i + 12), u16(i + 22))
                // byte rate and block align agree with the rest
                #expect(u32(i + 16) == fmt!.2 * fmt!.1 * fmt!.3 / 8 && u16(i + 20) == fmt!.1 * fmt!.3 / 8)
            } else if id == "data" {
                guard let f = fmt else { throw Failure("\(url.path): data before fmt") }
                return (f.0, f.1, f.2, f.3, size / (f.1 * f.3 / 8))
            }
            i += 8 + size + size % 2
        }
        throw Failure("\(url.path): no data chunk")
    }

    /// Every regular file under `root`, by relative path.
    static func files(_ root: URL) -> [String: URL] {
        var out: [String: URL] = [:]
        let base = root.standardizedFileURL.path
        for case let url as URL in FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)! {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue {
                out[String(url.standardizedFileURL.path.dropFirst(base.count + 1))] = url
            }
        }
        return out
    }

    @Test func layoutAndLineFormats() throws {
        let out = try Self.corpus.get()
        for set in Self.sets {
            let folder = out.appendingPathComponent("wav/\(set)")
            var idxSets: [String: [String]] = [:]
            for name in Self.indexFiles {
                let rows = try Self.lines(folder.appendingPathComponent(name))
                idxSets[name] = rows.map(\.0)
                #expect(rows.count == Self.sizes[set], "\(set)/\(name): \(rows.count) lines")
            }
            // every idx in every index file, each once, sorted as SpeeChain sorts them
            let idx = idxSets["idx2wav"]!
            #expect(idx == idx.sorted() && Set(idx).count == idx.count, "\(set): idx not sorted or repeated")
            for (name, keys) in idxSets { #expect(keys == idx, "\(set)/\(name) has other indices than idx2wav") }
            for i in idx {
                #expect(i.range(of: "^\(set)-[0-9]{5}-[A-Za-z0-9_]+$", options: .regularExpression) != nil, "idx '\(i)'")
            }

            let spk = try Self.map(folder.appendingPathComponent("idx2spk"))
            let gen = try Self.map(folder.appendingPathComponent("idx2gen"))
            let spkList = try String(contentsOf: folder.appendingPathComponent("spk_list"), encoding: .utf8)
            #expect(spkList == Set(spk.values).sorted().map { $0 + "\n" }.joined(), "\(set)/spk_list")
            for i in idx {
                #expect(!spk[i]!.contains(" ") && i.hasSuffix("-" + spk[i]!), "\(set): \(i) spoken by '\(spk[i]!)'")
                #expect(["M", "F", "U"].contains(gen[i]!), "\(set): gender '\(gen[i]!)'")
            }
            // one gender per voice
            for s in Set(spk.values) { #expect(Set(idx.filter { spk[$0] == s }.map { gen[$0]! }).count == 1) }

            for (i, text) in try Self.lines(folder.appendingPathComponent("idx2no-punc_text")) {
                let w = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                #expect((1...7).contains(w.count) && w.allSatisfy(Self.words.contains), "\(set) \(i): '\(text)'")
            }
        }
        let meta = try String(contentsOf: out.appendingPathComponent("corpus_meta.txt"), encoding: .utf8)
        #expect(meta.contains("\nespeak-ng: eSpeak NG text-to-speech: ") && meta.contains("\nsox: SoX v"), "\(meta)")
        #expect(meta.contains("\nseed: 7\n"))
    }

    @Test func everyWavIs16kMonoWithItsIndexedLength() throws {
        let out = try Self.corpus.get()
        var count = 0
        for set in Self.sets {
            let folder = out.appendingPathComponent("wav/\(set)")
            let lengths = try Self.map(folder.appendingPathComponent("idx2wav_len"))
            for (i, path) in try Self.lines(folder.appendingPathComponent("idx2wav")) {
                #expect(path.hasPrefix("/") && path.hasSuffix(".wav"), "\(path)")
                let url = URL(fileURLWithPath: path)
                #expect(url.standardizedFileURL.path.hasPrefix(folder.standardizedFileURL.path + "/"), "\(path)")
                let w = try Self.wavInfo(url)
                #expect(w.format == 1 && w.channels == 1 && w.rate == 16000 && w.bits == 16, "\(path): \(w)")
                #expect(lengths[i] == String(w.samples), "\(i): idx2wav_len \(lengths[i] ?? "-"), file \(w.samples)")
                // between a word and seven words with their padding: 0.2 s to 10 s
                #expect((3200...160_000).contains(w.samples), "\(i): \(w.samples) samples")
                count += 1
            }
            // the audio folder holds exactly the indexed files
            let audio = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("audio").path)
            #expect(audio.count == Self.sizes[set])
        }
        #expect(count == 84)
    }

    @Test func testAndValidVoicesNeverSpeakInTraining() throws {
        let out = try Self.corpus.get()
        var voices: [String: Set<String>] = [:]
        for set in Self.sets {
            voices[set] = Set(try Self.map(out.appendingPathComponent("wav/\(set)/idx2spk")).values)
        }
        #expect(voices["test"]!.isDisjoint(with: voices["train"]!), "\(voices["test"]!.intersection(voices["train"]!))")
        #expect(voices["valid"]!.isDisjoint(with: voices["train"]!))
        #expect(voices["valid"]!.isDisjoint(with: voices["test"]!))
        // tiny as it is, the train set is spoken by many voices
        #expect(voices["train"]!.count >= 20, "\(voices["train"]!.count) training voices")

        // A tiny train set hears only some of its voices, so the pools themselves (corpus_meta.txt's
        // "voices <set> (N): spk(G) …" lines) must be disjoint too, and each set speaks from its own pool.
        let meta = try String(contentsOf: out.appendingPathComponent("corpus_meta.txt"), encoding: .utf8)
        var pools: [String: Set<String>] = [:]
        for line in meta.split(separator: "\n") where line.hasPrefix("voices ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            let set = String(parts[0].split(separator: " ")[1])
            let list = parts[1].split(separator: " ").map { String($0.split(separator: "(")[0]) }
            #expect(Set(list).count == list.count, "\(set): a voice listed twice")
            pools[set] = Set(list)
        }
        #expect(Set(pools.keys) == Set(Self.sets), "\(meta)")
        for set in Self.sets { #expect(voices[set]!.isSubset(of: pools[set] ?? []), "\(set) speaks outside its pool") }
        if let train = pools["train"], let valid = pools["valid"], let test = pools["test"] {
            #expect(test.isDisjoint(with: train), "test voices in the train pool: \(test.intersection(train))")
            #expect(valid.isDisjoint(with: train), "valid voices in the train pool: \(valid.intersection(train))")
            #expect(valid.isDisjoint(with: test))
            #expect(test.count >= 8 && valid.count >= 4 && train.count >= 40, "\(test.count) \(valid.count) \(train.count)")
        }
    }

    /// SpeeChain's vocab_generator.py for token_type char: data/char/<set>/full_tokens/<txt_format>/vocab holds
    /// '<blank>', the characters by descending count in the train transcripts (ties by first appearance, in idx
    /// order), '<unk>', '<sos/eos>'; ' ' is '<space>'. idx2text_len beside it counts each sentence's tokens.
    @Test func charVocabularyFollowsSpeeChain() throws {
        let out = try Self.corpus.get()
        let folder = out.appendingPathComponent("char/train/full_tokens/no-punc")
        let vocabText = try String(contentsOf: folder.appendingPathComponent("vocab"), encoding: .utf8)
        #expect(vocabText.hasSuffix("\n"))
        let vocab = vocabText.dropLast().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(vocab.first == "<blank>" && Array(vocab.suffix(2)) == ["<unk>", "<sos/eos>"], "\(vocab)")
        #expect(Set(vocab).count == vocab.count)

        let train = try Self.lines(out.appendingPathComponent("wav/train/idx2no-punc_text"))
        var counts: [String: Int] = [:], order: [String] = []
        for (_, text) in train {
            for c in text {
                let token = c == " " ? "<space>" : String(c)
                if counts[token] == nil { order.append(token) }
                counts[token, default: 0] += 1
            }
        }
        let expected = order.enumerated().sorted { a, b in
            counts[a.element]! != counts[b.element]! ? counts[a.element]! > counts[b.element]! : a.offset < b.offset
        }.map(\.element)
        #expect(Array(vocab.dropFirst().dropLast(2)) == expected)

        // every character of every set is in the vocabulary
        for set in Self.sets {
            for (i, text) in try Self.lines(out.appendingPathComponent("wav/\(set)/idx2no-punc_text")) {
                for c in text { #expect(vocab.contains(c == " " ? "<space>" : String(c)), "\(set) \(i): '\(c)'") }
            }
        }
        let lengths = try Self.lines(folder.appendingPathComponent("idx2text_len"))
        #expect(lengths.map(\.0) == train.map(\.0))
        for ((_, n), (_, text)) in zip(lengths, train) { #expect(n == String(text.count)) }
    }

    @Test func sameSeedSameBytesOtherSeedOtherCorpus() throws {
        let a = try Self.corpus.get()
        // another folder and another number of jobs: only idx2wav's absolute paths may differ
        let b = try TestResources.scratchDirectory("digits-b").appendingPathComponent("data")
        let rb = try Self.prepare(b, seed: 7, jobs: 1)
        #expect(rb.status == 0, "\(rb.output)")
        let filesA = Self.files(a), filesB = Self.files(b)
        #expect(filesA.keys.sorted() == filesB.keys.sorted())
        #expect(filesA.count == 84 + 3 * Self.indexFiles.count + 3 + 2 + 1, "\(filesA.count) files")
        for (name, urlA) in filesA {
            guard let urlB = filesB[name] else { continue }
            var dataA = try Data(contentsOf: urlA)
            let dataB = try Data(contentsOf: urlB)
            if name.hasSuffix("/idx2wav") {
                dataA = Data(String(decoding: dataA, as: UTF8.self)
                    .replacingOccurrences(of: a.standardizedFileURL.path + "/", with: b.standardizedFileURL.path + "/").utf8)
            }
            #expect(dataA == dataB, "\(name) differs between two runs of seed 7")
        }

        let c = try TestResources.scratchDirectory("digits-c").appendingPathComponent("data")
        let rc = try Self.prepare(c, seed: 8, jobs: 2)
        #expect(rc.status == 0, "\(rc.output)")
        let filesC = Self.files(c)
        let audioA = Set(try filesA.filter { $0.key.hasSuffix(".wav") }.values.map { try Data(contentsOf: $0) })
        let audioC = Set(try filesC.filter { $0.key.hasSuffix(".wav") }.values.map { try Data(contentsOf: $0) })
        #expect(audioA.isDisjoint(with: audioC), "seed 8 repeats audio of seed 7")
        for set in Self.sets {
            let textA = try String(contentsOf: a.appendingPathComponent("wav/\(set)/idx2no-punc_text"), encoding: .utf8)
            let textC = try String(contentsOf: c.appendingPathComponent("wav/\(set)/idx2no-punc_text"), encoding: .utf8)
            #expect(textA != textC, "\(set): seed 8 gives the transcripts of seed 7")
        }
        for dir in [b, c] { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
    }

    @Test func badArgumentsAndForeignFoldersAreRefusedInOneLine() throws {
        let dir = try TestResources.scratchDirectory("digits-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let foreign = dir.appendingPathComponent("foreign")
        try FileManager.default.createDirectory(at: foreign, withIntermediateDirectories: true)
        try "keep me\n".write(to: foreign.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["--train", "5"], "--train must be an integer >= 11, found '5'"),
            (["--noise", "maybe"], "--noise must be on or off, found 'maybe'"),
            (["--seed", "-1"], "--seed must be an integer >= 0, found '-1'"),
            (["--bogus"], "unknown argument '--bogus'"),
            (["--out", foreign.path], "holds no spoken_digits corpus"),
        ]
        for (args, message) in cases {
            let r = try ClusterSupport.run("/bin/bash", [Self.script.path, "--tiny"] + args, timeout: 60)
            #expect(r.status == 1, "\(args): \(r.status)")
            let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("data_prep.sh: error: ") }
            #expect(errors.count == 1 && errors[0].contains(message), "\(args): \(r.stderr)")
        }
        #expect(try String(contentsOf: foreign.appendingPathComponent("notes.txt"), encoding: .utf8) == "keep me\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: foreign.path) == ["notes.txt"])
    }
}
