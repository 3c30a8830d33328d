import Foundation
import Testing
@testable import SpeechainMPI

/// CER/WER, the word alignment and the test-stage report files, against SpeeChain's definitions
/// (criterion/error_rate.py, utilbox/eval_util.py, monitor.py TestMonitor.finish_epoch, runner.py test), with
/// hand-computed numbers.
@Suite struct ErrorRateTests {
    // MARK: Edit distance and rates

    @Test func editDistanceOfSequences() {
        #expect(ErrorRate.editDistance([Int](), []) == 0)
        #expect(ErrorRate.editDistance([1, 2, 3], []) == 3)
        #expect(ErrorRate.editDistance([], ["a", "b"]) == 2)
        // kitten → sitting: k→s, e→i, +g = 3
        #expect(ErrorRate.editDistance(Array("kitten"), Array("sitting")) == 3)
        #expect(ErrorRate.editDistance(["a", "b", "c"], ["a", "b", "c"]) == 0)
    }

    @Test func substitution() {
        // words: [the cat sat] vs [the bat sat]: 1 substitution / 3 reference words
        #expect(ErrorRate.wer(hypothesis: "the cat sat", reference: "the bat sat") == 1.0 / 3.0)
        // chars: "thecatsat" vs "thebatsat": 1 / 9
        #expect(ErrorRate.cer(hypothesis: "the cat sat", reference: "the bat sat") == 1.0 / 9.0)
        let a = ErrorRate.alignWords(hypothesis: "the cat sat", reference: "the bat sat")
        #expect((a.insertions, a.deletions, a.substitutions) == (0, 0, 1))
    }

    @Test func insertion() {
        // "big" has no reference word: 1 insertion / 2 reference words = 0.5
        #expect(ErrorRate.wer(hypothesis: "the big cat", reference: "the cat") == 0.5)
        // "thebigcat" vs "thecat": 3 inserted chars / 6 = 0.5
        #expect(ErrorRate.cer(hypothesis: "the big cat", reference: "the cat") == 0.5)
        let a = ErrorRate.alignWords(hypothesis: "the big cat", reference: "the cat")
        #expect((a.insertions, a.deletions, a.substitutions) == (1, 0, 0))
        #expect(a.table == """
            |||||
            |---|---|---|---|
            |**Hypothesis**|the|big|cat|
            |**Alignment**| |I| |
            |**Reference**|the| |cat|

            """)
    }

    @Test func deletion() {
        // "sat" is missing: 1 deletion / 3 words
        #expect(ErrorRate.wer(hypothesis: "the cat", reference: "the cat sat") == 1.0 / 3.0)
        // "thecat" vs "thecatsat": 3 / 9
        #expect(ErrorRate.cer(hypothesis: "the cat", reference: "the cat sat") == 3.0 / 9.0)
        let a = ErrorRate.alignWords(hypothesis: "the cat", reference: "the cat sat")
        #expect((a.insertions, a.deletions, a.substitutions) == (0, 1, 0))
        #expect(a.steps.last == WordAlignment.Step(hypothesis: nil, reference: "sat", operation: .deletion))
    }

    @Test func emptyHypothesisAndIdentical() {
        // every reference unit deleted: 3/3 words, 3/3 chars
        #expect(ErrorRate.wer(hypothesis: "", reference: "a b c") == 1)
        #expect(ErrorRate.cer(hypothesis: "", reference: "a b c") == 1)
        #expect(ErrorRate.alignWords(hypothesis: "", reference: "a b c").deletions == 3)
        #expect(ErrorRate.wer(hypothesis: "a b c", reference: "a b c") == 0)
        #expect(ErrorRate.cer(hypothesis: "a b c", reference: "a b c") == 0)
        #expect(ErrorRate.alignWords(hypothesis: "a b c", reference: "a b c").errors == 0)
    }

    /// SpeeChain divides by zero here; we divide by max(length, 1).
    @Test func emptyReference() {
        #expect(ErrorRate.wer(hypothesis: "", reference: "") == 0)
        #expect(ErrorRate.cer(hypothesis: "", reference: "  ") == 0)
        // 2 inserted words / max(0, 1) = 2; "ab" against "": 2 / 1
        #expect(ErrorRate.wer(hypothesis: "a b", reference: "") == 2)
        #expect(ErrorRate.cer(hypothesis: "a b", reference: "") == 2)
        #expect(ErrorRate.alignWords(hypothesis: "a b", reference: "").insertions == 2)
    }

    @Test func spacesOnlyDifferences() {
        // CER drops the spaces: "thecatsat" on both sides
        #expect(ErrorRate.cer(hypothesis: "thecat  sat", reference: "the cat sat") == 0)
        // WER: [thecat sat] vs [the cat sat]: 1 substitution + 1 deletion = 2 / 3
        #expect(ErrorRate.wer(hypothesis: "thecat  sat", reference: "the cat sat") == 2.0 / 3.0)
        // split() ignores leading, trailing and repeated whitespace, tabs and newlines included
        #expect(ErrorRate.words("  a\tb \n c  ") == ["a", "b", "c"])
        #expect(ErrorRate.wer(hypothesis: " a  b c ", reference: "a b c") == 0)
        // only " " is removed for CER (Python's replace(" ", "")): a tab counts as a character
        #expect(ErrorRate.cer(hypothesis: "a\tb", reference: "a b") == 0.5)
    }

    /// Among equal-cost alignments the `edit_distance` package (and so SpeeChain) prefers substitutions.
    @Test func alignmentTieBreakingPrefersSubstitution() {
        // [a b] vs [b c]: S S (cost 2) rather than I(a) = D(c) (also cost 2)
        let a = ErrorRate.alignWords(hypothesis: "a b", reference: "b c")
        #expect((a.insertions, a.deletions, a.substitutions) == (0, 0, 2))
        // [a] vs [b a]: D(b) then a = a
        let b = ErrorRate.alignWords(hypothesis: "a", reference: "b a")
        #expect(b.steps.map(\.operation) == [.deletion, .match])
    }

    @Test func corpusRateIsNotTheMeanOfUtteranceRates() {
        let pairs: [(hypothesis: String, reference: String)] = [("a b c d", "a b c d"), ("x", "y")]
        // per utterance: 0/4 and 1/1, mean 0.5; corpus: (0 + 1) / (4 + 1) = 0.2
        #expect(ErrorRate.corpusWER(pairs) == 0.2)
        let mean = pairs.map { ErrorRate.wer(hypothesis: $0.hypothesis, reference: $0.reference) }.reduce(0, +) / 2
        #expect(mean == 0.5)
        // chars: "abcd"/"abcd" 0 errors, "x"/"y" 1 error: 1 / 5
        #expect(ErrorRate.corpusCER(pairs) == 0.2)
    }

    @Test func specialTokensAreStrippedBeforeScoring() {
        #expect(ErrorRate.stripSpecialTokens([5, 7, 0, 9, 5, 0, 0], paddingIndex: 0, sosEosIndex: 5) == [7, 9])
    }

    @Test func pythonFloatSpelling() {
        let cases: [(Double, String)] = [
            (0.1, "0.1"), (1.0, "1.0"), (100.0, "100.0"), (-0.5, "-0.5"), (0.0, "0.0"),
            (1.0 / 3.0, "0.3333333333333333"), (0.0001, "0.0001"), (1e-5, "1e-05"), (1.5e-7, "1.5e-07"),
            (1234567890123456.0, "1234567890123456.0"), (1e16, "1e+16"), (2.5e20, "2.5e+20"),
            (123456.789, "123456.789"), (.infinity, "inf"),
        ]
        for (x, text) in cases { #expect(PythonFormat.float(x) == text, "\(x)") }
    }

    // MARK: Report files

    static let results: [UtteranceResult] = [
        // given out of id order: the files must be sorted by id
        .score(id: "u3", hypothesis: "a b", reference: "a b c d", confidence: -2.0, featTokenRatio: 6.5, textLength: 3),
        .score(id: "u1", hypothesis: "a b c", reference: "a b c", confidence: -1.5, featTokenRatio: 4.0, textLength: 4),
        .score(id: "u2", hypothesis: "a x c", reference: "a b c", confidence: -3.0, featTokenRatio: 5.0, textLength: 4),
    ]

    static func read(_ folder: URL, _ name: String) throws -> String {
        try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
    }

    @Test func reportFilesOfThreeUtterancesAndTwoGroups() throws {
        let folder = try TestResources.scratchDirectory("test-report")
        defer { try? FileManager.default.removeItem(at: folder) }
        let speaker = ["u1": "s1", "u2": "s2", "u3": "s1"]
        let gender = ["u1": "f", "u2": "f", "u3": "m", "u9": "m"]   // u9 was not tested: ignored
        try TestReport.write(Self.results, groups: [(name: "speaker", idToGroup: speaker), (name: "gender", idToGroup: gender)],
                             badCases: [(metric: "wer", mode: "max", number: 2), (metric: "insertion", mode: "min", number: 2),
                                        (metric: "text_confid", mode: "max", number: 1)],
                             to: folder)

        // u1: exact. u2: a x c / a b c: 1 S, 1/3 words, "axc"/"abc" 1/3 chars.
        // u3: a b / a b c d: 2 D, 2/4 words, "ab"/"abcd" 2/4 chars.
        #expect(try Self.read(folder, "idx2text") == "u1 a b c\nu2 a x c\nu3 a b\n")
        #expect(try Self.read(folder, "idx2cer") == "u1 0.0\nu2 0.3333333333333333\nu3 0.5\n")
        #expect(try Self.read(folder, "idx2wer") == "u1 0.0\nu2 0.3333333333333333\nu3 0.5\n")
        #expect(try Self.read(folder, "idx2insertion") == "u1 0\nu2 0\nu3 0\n")
        #expect(try Self.read(folder, "idx2deletion") == "u1 0\nu2 0\nu3 2\n")
        #expect(try Self.read(folder, "idx2substitution") == "u1 0\nu2 1\nu3 0\n")
        #expect(try Self.read(folder, "idx2text_confid") == "u1 -1.5\nu2 -3.0\nu3 -2.0\n")
        #expect(try Self.read(folder, "idx2feat_token_len_ratio") == "u1 4.0\nu2 5.0\nu3 6.5\n")
        #expect(try Self.read(folder, "idx2text_len") == "u1 4\nu2 4\nu3 3\n")

        // means and population stds (numpy's np.std), e.g. text_len [4 4 3]: mean 11/3 = 3.6667,
        // variance ((1/3)² + (1/3)² + (2/3)²) / 3 = 2/9, std 0.4714; cer [0 1/3 1/2]: mean 0.2778, std 0.2079.
        // speaker s1 = {u1, u3}, s2 = {u2}: text_len 3.5 | 4, ratio 5.25 | 5, confid -1.75 | -3, cer and wer
        // 0.25 | 0.3333, insertion 0 | 0 (a tie: both maximal), deletion 1 | 0, substitution 0 | 1.
        // gender f = {u1, u2}, m = {u3}: text_len 4 | 3, ratio 4.5 | 6.5, confid -2.25 | -2, cer and wer
        // 0.1667 | 0.5, insertion 0 | 0, deletion 0 | 2, substitution 0.5 | 0.
        // corpus: words 3 + 3 + 4 = 10 with 0 + 1 + 2 errors → WER 0.3; characters likewise 3 / 10.
        let expected = """
            # Overall Evaluation (mean ± std):
            * **text_len:** 3.6667 ± 0.4714
            * **feat_token_len_ratio:** 5.1667 ± 1.0274
            * **text_confid:** -2.1667 ± 0.6236
            * **cer:** 0.2778 ± 0.2079
            * **wer:** 0.2778 ± 0.2079
            * **insertion:** 0.0000 ± 0.0000
            * **deletion:** 0.6667 ± 0.9428
            * **substitution:** 0.3333 ± 0.4714
            # speaker-wise Evaluation:
            (***bold&italic*** numbers represent the maximal ones in all groups while **bold** numbers represent the minimal ones.)

            |**speaker**|**text_len**|**feat_token_len_ratio**|**text_confid**|**cer**|**wer**|**insertion**|**deletion**|**substitution**|
            |---|---|---|---|---|---|---|---|---|
            |**s1**|**3.5000**|***5.2500***|***-1.7500***|**0.2500**|**0.2500**|***0.0000***|***1.0000***|**0.0000**|
            |**s2**|***4.0000***|**5.0000**|**-3.0000**|***0.3333***|***0.3333***|***0.0000***|**0.0000**|***1.0000***|
            # gender-wise Evaluation:
            (***bold&italic*** numbers represent the maximal ones in all groups while **bold** numbers represent the minimal ones.)

            |**gender**|**text_len**|**feat_token_len_ratio**|**text_confid**|**cer**|**wer**|**insertion**|**deletion**|**substitution**|
            |---|---|---|---|---|---|---|---|---|
            |**f**|***4.0000***|**4.5000**|**-2.2500**|**0.1667**|**0.1667**|***0.0000***|**0.0000**|***0.5000***|
            |**m**|**3.0000**|***6.5000***|***-2.0000***|***0.5000***|***0.5000***|***0.0000***|***2.0000***|**0.0000**|
            # Corpus-level Evaluation (speechain-mpi extension: total errors / total reference length):
            * **WER:** 0.3000 (3 / 10 words)
            * **CER:** 0.3000 (3 / 10 characters)
            * **Word Insertion:** 0
            * **Word Deletion:** 2
            * **Word Substitution:** 1
            * **Utterances:** 3


            """
        #expect(try Self.read(folder, "overall_results.md") == expected)

        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("overall_results.json"))) as! [String: Any]
        #expect(json.keys.sorted() == ["cer", "char_errors", "chars", "deletions", "insertions", "mean", "std",
                                       "substitutions", "utterances", "wer", "word_errors", "words"])
        #expect(json["wer"] as? Double == 0.3)
        #expect(json["cer"] as? Double == 0.3)
        #expect(json["utterances"] as? Int == 3)
        #expect(json["word_errors"] as? Int == 3)
        #expect(json["words"] as? Int == 10)
        #expect(json["char_errors"] as? Int == 3)
        #expect(json["chars"] as? Int == 10)
        #expect(json["insertions"] as? Int == 0)
        #expect(json["deletions"] as? Int == 2)
        #expect(json["substitutions"] as? Int == 1)
        let mean = json["mean"] as! [String: Any], std = json["std"] as! [String: Any]
        #expect(Set(mean.keys) == Set(TestReport.metricNames))
        // mean WER (0 + 1/3 + 1/2) / 3 = 5/18 ≠ corpus WER 0.3
        #expect(abs((mean["wer"] as! Double) - 5.0 / 18.0) < 1e-12)
        #expect(abs((mean["text_len"] as! Double) - 11.0 / 3.0) < 1e-12)
        #expect(abs((std["text_len"] as! Double) - (2.0 / 9.0).squareRoot()) < 1e-12)
        // sorted keys in the text itself
        let text = try Self.read(folder, "overall_results.json")
        #expect(text.range(of: "\"cer\"")!.lowerBound < text.range(of: "\"wer\"")!.lowerBound)

        // worst WER first: u3 (0.5), then u2 (1/3)
        let u3Report = """
            **u3**

            * **Hypothesis Confidence:** -2.000000
            * **Feature-Token Length Ratio:** 6.50
            * **CER:** 50.00%
            * **WER:** 50.00%
            * **Word Insertion:** 0
            * **Word Deletion:** 2
            * **Word Substitution:** 0
            * **Hypothesis:** a b
            * **Reference:** a b c d

            ||||||
            |---|---|---|---|---|
            |**Hypothesis**|a|b| | |
            |**Alignment**| | |D|D|
            |**Reference**|a|b|c|d|


            """
        let u2Report = """
            **u2**

            * **Hypothesis Confidence:** -3.000000
            * **Feature-Token Length Ratio:** 5.00
            * **CER:** 33.33%
            * **WER:** 33.33%
            * **Word Insertion:** 0
            * **Word Deletion:** 0
            * **Word Substitution:** 1
            * **Hypothesis:** a x c
            * **Reference:** a b c

            |||||
            |---|---|---|---|
            |**Hypothesis**|a|x|c|
            |**Alignment**| |S| |
            |**Reference**|a|b|c|


            """
        #expect(try Self.read(folder, "top2_max_wer.md") == u3Report + u2Report + "\n")
        // all insertions are 0: ties keep id order
        let insertionCases = try Self.read(folder, "top2_min_insertion.md")
        #expect(insertionCases.hasPrefix("**u1**\n\n"))
        #expect(insertionCases.contains(u2Report))
        #expect(!insertionCases.contains("**u3**"))
        #expect(try Self.read(folder, "top1_max_text_confid.md").hasPrefix("**u1**\n\n* **Hypothesis Confidence:** -1.500000\n"))

        let instanceReports = try Self.read(folder, "instance_reports.md")
        #expect(instanceReports.hasPrefix("u1 \n\n* **Hypothesis Confidence:** -1.500000\n"))
        #expect(instanceReports.contains("u3 " + u3Report.dropFirst("**u3**".count)))

        // no temporary file is left behind
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(!names.contains { $0.hasPrefix(".") })
        #expect(names.count == 9 + 1 + 1 + 3 + 1)
    }

    @Test func badSelectionsAreRefusedBeforeWriting() throws {
        let folder = try TestResources.scratchDirectory("test-report-bad")
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(throws: TestReportError.self) {
            try TestReport.write(Self.results, badCases: [(metric: "bleu", mode: "max", number: 3)], to: folder)
        }
        #expect(throws: TestReportError.self) {
            try TestReport.write(Self.results, badCases: [(metric: "wer", mode: "worst", number: 3)], to: folder)
        }
        #expect(throws: TestReportError.self) {
            try TestReport.write(Self.results, badCases: [(metric: "wer", mode: "max", number: 0)], to: folder)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
        #expect(throws: TestReportError.duplicateUtterance(id: "u1")) {
            try TestReport.write(Self.results + [Self.results[1]], to: folder)
        }
    }

    @Test func groupInfoFiles() throws {
        let folder = try TestResources.scratchDirectory("group-info")
        defer { try? FileManager.default.removeItem(at: folder) }
        let good = folder.appendingPathComponent("idx2spk")
        try "u1 spk1\r\nu2 spk 2\n\nu3 spk1\n".write(to: good, atomically: true, encoding: .utf8)
        #expect(try TestReport.readGroupInfo(at: good) == ["u1": "spk1", "u2": "spk 2", "u3": "spk1"])

        func failure(_ text: String) throws -> String {
            let url = folder.appendingPathComponent("idx2gen")
            try text.write(to: url, atomically: true, encoding: .utf8)
            do { _ = try TestReport.readGroupInfo(at: url) } catch { return "\(error)" }
            return "no error"
        }
        let path = folder.appendingPathComponent("idx2gen").path
        #expect(try failure("u1 f\nu2\n") == "\(path):2: expected '<id> <group>', found 'u2' (no space)")
        #expect(try failure("u1 f\nu2 \n") == "\(path):2: utterance 'u2' has no group")
        #expect(try failure(" f\n") == "\(path):1: the line starts with a space: no utterance id")
        #expect(try failure("u1 f\nu2 m\nu1 m\n") == "\(path):3: utterance 'u1' is listed again")
        let missing = "\(TestReportError.malformedGroupInfo(path: "x", line: 1, reason: "y"))"
        #expect(!missing.contains("\n"))
        #expect(throws: TestReportError.self) { try TestReport.readGroupInfo(at: folder.appendingPathComponent("absent")) }
    }

    // MARK: infer_cfg

    static func names(_ v: ConfigValue?) throws -> [String] { try TestReport.inferConfigurations(v).map(\.name) }

    @Test func inferConfigurationNames() throws {
        #expect(try Self.names(nil) == ["default_inference"])
        #expect(try Self.names(.map([:])) == ["default_inference"])
        // SpeeChain's handbook example
        let example = ConfigValue.map([
            "shared_args": .map(["beam_size": .int(16)]),
            "exclu_args": .list([.map(["ctc_weight": .double(0.2)]),
                                 .map(["ctc_weight": .double(0.3), "lm_weight": .double(0.6)])]),
        ])
        let runs = try TestReport.inferConfigurations(example)
        #expect(runs.map(\.name) == ["beam_size=16_ctc_weight=0.2", "beam_size=16_ctc_weight=0.3_lm_weight=0.6"])
        #expect(runs[1].args == ["beam_size": .int(16), "ctc_weight": .double(0.3), "lm_weight": .double(0.6)])
        // a plain mapping: one run, keys sorted, values as Python's str()
        let plain = ConfigValue.map(["temperature": .double(1.0), "beam_size": .int(4), "decode_only": .bool(true),
                                     "length_penalty": .double(1.5), "ctc_weight": .null, "mode": .string("greedy")])
        #expect(try Self.names(plain) == ["beam_size=4_ctc_weight=None_decode_only=True_length_penalty=1.5_mode=greedy_temperature=1.0"])
        #expect(try Self.names(.map(["x": .list([.int(1), .string("a")])])) == ["x=[1, 'a']"])
        // a list of mappings
        #expect(try Self.names(.list([.map(["beam_size": .int(1)]), .map(["beam_size": .int(8)])])) == ["beam_size=1", "beam_size=8"])
    }

    @Test func inferConfigurationErrors() {
        // a key in both shared_args and exclu_args
        #expect(throws: ConfigError.conflict("infer_cfg: 'beam_size' is given in both shared_args and exclu_args[1]")) {
            try TestReport.inferConfigurations(.map([
                "shared_args": .map(["beam_size": .int(16)]),
                "exclu_args": .list([.map(["ctc_weight": .double(0.2)]), .map(["beam_size": .int(4)])]),
            ]))
        }
        // only one of the two
        #expect(throws: ConfigError.self) { try TestReport.inferConfigurations(.map(["shared_args": .map(["beam_size": .int(16)])])) }
        #expect(throws: ConfigError.self) { try TestReport.inferConfigurations(.map(["exclu_args": .list([.map(["beam_size": .int(16)])])])) }
        // wrong shapes
        #expect(throws: ConfigError.self) {
            try TestReport.inferConfigurations(.map(["shared_args": .map([:]), "exclu_args": .map(["a": .int(1)])]))
        }
        #expect(throws: ConfigError.self) {
            try TestReport.inferConfigurations(.map(["shared_args": .list([]), "exclu_args": .list([.map([:])])]))
        }
        #expect(throws: ConfigError.self) {
            try TestReport.inferConfigurations(.map(["shared_args": .map([:]), "exclu_args": .list([.int(3)])]))
        }
        #expect(throws: ConfigError.self) {
            try TestReport.inferConfigurations(.map(["shared_args": .map([:]), "exclu_args": .list([])]))
        }
        // two identical runs
        #expect(throws: ConfigError.self) {
            try TestReport.inferConfigurations(.map(["shared_args": .map(["a": .int(1)]),
                                                    "exclu_args": .list([.map(["b": .int(2)]), .map(["b": .int(2)])])]))
        }
        #expect(throws: ConfigError.self) { try TestReport.inferConfigurations(.string("infer/beam16.yaml")) }
    }
}
