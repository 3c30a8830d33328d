import Foundation
import Testing
@testable import SpeechainMPI

// References: Resources/speech/char (scripts/reference/speech_char_vocab_ref.py, SpeeChain's char vocabulary code
// path) and Resources/speech/sp_bpe (scripts/reference/speech_tokenizer_refs.sh: spm_train with SpeeChain's
// options, spm_encode / spm_decode outputs).

private func lines(_ path: String) throws -> [String] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        .dropLast().map(String.init)
}

private func writeText(_ text: String, _ name: String, in dir: URL) throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
    return url.path
}

@Suite struct VocabularyTests {
    @Test func layoutOfSpeechainsVocabulary() throws {
        let v = try Vocabulary.load(TestResources.url("speech/char/vocab").path)
        #expect(v.count == 27)
        #expect(v.blank == 0 && v.tokens[0] == "<blank>")
        #expect(v.unknown == 25 && v.tokens[25] == "<unk>")
        #expect(v.sosEos == 26 && v.tokens[26] == "<sos/eos>")
        #expect(v.space == 1)
    }

    @Test(arguments: [
        ("<blank>\na\nb\na\n<unk>\n<sos/eos>\n", 4, "token 'a' is already on line 2"),
        ("<blank>\na\n\n<unk>\n<sos/eos>\n", 3, "is empty"),
    ])
    func refusesBadLinesNamingTheLine(_ text: String, _ line: Int, _ words: String) throws {
        let path = try writeText(text, "vocab", in: try TestResources.scratchDirectory("vocab"))
        let d = speechError { _ = try Vocabulary.load(path) }?.description ?? "no error"
        #expect(d.hasPrefix("\(path):\(line): ") && d.contains(words), "\(d)")
    }

    @Test(arguments: [
        ("a\n<blank>\n<unk>\n<sos/eos>\n", "<blank> must be token 0 (line 1) of 4"),
        ("<blank>\na\n<sos/eos>\n<unk>\n", "<unk> must be token 2 (line 3) of 4"),
        ("<blank>\na\nb\n<sos/eos>\n", "<unk> must be token 2 (line 3) of 4, as SpeeChain lays a vocabulary out"),
        ("<blank>\n<unk>\n", "holds 2 tokens"),
    ])
    func refusesAnotherLayout(_ text: String, _ words: String) throws {
        let path = try writeText(text, "vocab", in: try TestResources.scratchDirectory("vocab"))
        let d = speechError { _ = try Vocabulary.load(path) }?.description ?? "no error"
        #expect(d.hasPrefix("\(path): ") && d.contains(words), "\(d)")
    }

    @Test func charVocabularyIsSpeechainsOrder() throws {
        // the transcripts as SpeeChain reads them: sorted by index
        let text = try IndexFile.loadTranscripts(TestResources.url("speech/char/idx2no-punc_text").path)
        #expect(text.indices == ["utt-A1", "utt-a10", "utt-a9", "utt-b10", "utt-b2"])
        let sentences = text.indices.map { text[$0]! }
        #expect(Vocabulary.charTokens(sentences: sentences) == (try lines(TestResources.url("speech/char/vocab").path)))
        #expect(Vocabulary.charTokens(sentences: sentences, vocabSize: 10)
            == (try lines(TestResources.url("speech/char/vocab_size10").path)))
        // a vocab_size above the number of characters keeps them all
        #expect(Vocabulary.charTokens(sentences: sentences, vocabSize: 100).count == 27)
    }

    @Test func writtenVocabularyIsByteForByteSpeechains() throws {
        let text = try IndexFile.loadTranscripts(TestResources.url("speech/char/idx2no-punc_text").path)
        let dir = try TestResources.scratchDirectory("vocab")
        let out = dir.appendingPathComponent("vocab").path
        try Vocabulary.write(Vocabulary.charTokens(sentences: text.indices.map { text[$0]! }), to: out)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(contentsOf: TestResources.url("speech/char/vocab")))
    }
}

@Suite struct CharTokenizerTests {
    let tokenizer: CharTokenizer
    init() throws { tokenizer = CharTokenizer(vocabulary: try Vocabulary.load(TestResources.url("speech/char/vocab").path)) }

    func id(_ token: String) -> Int32 { Int32(tokenizer.vocabulary.tokens.firstIndex(of: token)!) }

    @Test func text2tensorIsSosIdsEos() throws {
        let ids = try tokenizer.text2tensor("a cat")
        #expect(ids == [26, id("a"), 1, id("c"), id("a"), id("t"), 26])
        #expect(try tokenizer.text2tensor("a cat", sos: false, eos: false) == Array(ids.dropFirst().dropLast()))
        #expect(try tokenizer.text2tensor("") == [26, 26])
    }

    @Test func unknownCharactersBecomeUnk() throws {
        // 'q', '!' and 'Z' are not in the vocabulary
        #expect(try tokenizer.text2tensor("q!Z", sos: false, eos: false) == [25, 25, 25])
    }

    @Test func charactersAreUnicodeScalarsAsPythonIteratesThem() throws {
        // "é" precomposed is one token; "e" + U+0301 is two, each in the vocabulary
        #expect(try tokenizer.text2tensor("\u{e9}", sos: false, eos: false) == [id("\u{e9}")])
        #expect(try tokenizer.text2tensor("e\u{301}", sos: false, eos: false) == [id("e"), id("\u{301}")])
    }

    @Test func tensor2textSkipsSpecialsAndWritesUnkAsStar() throws {
        #expect(try tokenizer.tensor2text(try tokenizer.text2tensor("zebra crossing")) == "zebra crossing")
        #expect(try tokenizer.tensor2text([26, 0, id("a"), 25, 1, id("b"), 0, 26]) == "a* b")
        let d = speechError { _ = try tokenizer.tensor2text([3, 27]) }?.description
        #expect(d?.contains("token id 27 is outside the vocabulary's 27 tokens") == true)
    }

    @Test func encodingIntoAReusedBuffer() throws {
        var ids: [Int32] = []
        try tokenizer.text2tensor("a long sentence in the city", into: &ids)
        let capacity = ids.capacity
        try tokenizer.text2tensor("a cat", into: &ids)
        #expect(ids.count == 7 && ids.capacity == capacity)
    }
}

@Suite struct SentencePieceTokenizerTests {
    let folder = TestResources.url("speech/sp_bpe").path

    @Test func idsAreSentencePiecesWithSosAndEos() throws {
        let sp = try makeTokenizer(tokenType: "sentencepiece", tokenPath: folder)
        #expect(sp is SentencePieceTokenizer)
        #expect(sp.vocabulary.count == 48 && sp.vocabulary.unknown == 46 && sp.vocabulary.sosEos == 47)
        let sentences = try lines(folder + "/sentences")
        let references = try lines(folder + "/sentences.ids").map { $0.split(separator: " ").map { Int32($0)! } }
        #expect(sentences.count == 4)
        for (sentence, reference) in zip(sentences, references) {
            #expect(try sp.text2tensor(sentence) == [47] + reference + [47], "\(sentence)")
        }
        #expect(try sp.text2tensor("") == [47, 47])
        // a reused buffer: contents replaced
        var ids: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        try sp.text2tensor(sentences[0], into: &ids)
        #expect(ids == [47] + references[0] + [47])
    }

    @Test func unknownCharactersGetTheUnkIdAtVMinus2() throws {
        let sp = try makeTokenizer(tokenType: "SentencePiece", tokenPath: folder)
        // spm_encode of "café ñ!": é and "ñ!" are not pieces of the model
        #expect(try sp.text2tensor("café ñ!", sos: false, eos: false).filter { $0 == 46 }.count == 2)
    }

    @Test func tensor2textIsSentencePiecesDecodingWithoutSpecials() throws {
        let sp = try makeTokenizer(tokenType: "sentencepiece", tokenPath: folder)
        let sentences = try lines(folder + "/sentences")
        let decoded = try lines(folder + "/sentences.decoded")
        for (sentence, reference) in zip(sentences, decoded) {
            #expect(try sp.tensor2text(try sp.text2tensor(sentence)) == reference)
        }
        #expect(decoded[0] == sentences[0])                      // known characters round-trip
        #expect(try sp.tensor2text([47, 0, 0, 47]) == "")        // padding and sos/eos vanish
    }

    @Test func aModelAndAVocabularyThatDoNotBelongTogether() throws {
        let dir = try TestResources.scratchDirectory("sp")
        try FileManager.default.copyItem(atPath: folder + "/model", toPath: dir.path + "/model")
        // SpeeChain's char vocabulary beside the BPE model: 27 tokens, the model has 47 pieces
        try FileManager.default.copyItem(at: TestResources.url("speech/char/vocab"), to: dir.appendingPathComponent("vocab"))
        let d = speechError { _ = try makeTokenizer(tokenType: "sentencepiece", tokenPath: dir.path) }?.description
        #expect(d == "\(dir.path)/model: has 47 pieces but \(dir.path)/vocab has 27 tokens; SpeeChain's vocabulary is "
            + "the model's pieces plus <sos/eos>")
        // the right size, one piece swapped
        var tokens = try lines(folder + "/vocab")
        tokens.swapAt(3, 4)
        try Vocabulary.write(tokens, to: dir.path + "/vocab")
        let d2 = speechError { _ = try makeTokenizer(tokenType: "sentencepiece", tokenPath: dir.path) }?.description
        #expect(d2?.hasPrefix("\(dir.path)/model: piece 3 is '-0' but line 4 of \(dir.path)/vocab is 'tt'") == true, "\(d2 ?? "")")
        // not a model at all
        try Data("not a model".utf8).write(to: dir.appendingPathComponent("model"))
        try FileManager.default.removeItem(atPath: dir.path + "/vocab")
        try FileManager.default.copyItem(atPath: folder + "/vocab", toPath: dir.path + "/vocab")
        let d3 = speechError { _ = try makeTokenizer(tokenType: "sentencepiece", tokenPath: dir.path) }?.description
        #expect(d3?.hasPrefix("\(dir.path)/model: is not a SentencePiece model") == true, "\(d3 ?? "")")
    }

    @Test func backupInTheResultFolderIsUsedWhenTokenPathHasNone() throws {
        let sp = try makeTokenizer(tokenType: "sentencepiece", tokenPath: folder)
        let result = try TestResources.scratchDirectory("result").path
        try sp.writeBackup(toFolder: result)
        #expect(try Data(contentsOf: URL(fileURLWithPath: result + "/token_model"))
            == Data(contentsOf: URL(fileURLWithPath: folder + "/model")))
        let restored = try makeTokenizer(tokenType: "sentencepiece", tokenPath: "/nonexistent/folder", copyPath: result)
        #expect(restored.vocabulary.tokens == sp.vocabulary.tokens)
        #expect(try restored.text2tensor("the lazy fox") == sp.text2tensor("the lazy fox"))
    }

    @Test func unknownTokenTypeIsOneLine() {
        let d = speechError { _ = try makeTokenizer(tokenType: "g2p", tokenPath: folder) }?.description
        #expect(d == "unknown token_type 'g2p'; valid: char, sentencepiece")
    }
}
