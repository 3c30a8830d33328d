import Foundation

/// Character and word error rates as SpeeChain's test stage computes them (`criterion/error_rate.py`,
/// `utilbox/eval_util.get_word_edit_alignment`, `model/ar_asr.inference`).
///
/// **Text normalisation.** SpeeChain scores the decoded strings as they are: its `text_preprocess` only turns a
/// token tensor back into a string after dropping the padding and `<sos/eos>` ids (`stripSpecialTokens` below);
/// a string is used unchanged: no case folding, no punctuation removal. Then
/// - CER compares the strings with every ASCII space `" "` removed (Python `str.replace(" ", "")`: tabs and other
///   whitespace stay), element by element over Unicode code points (Python's `len`/`editdistance` unit; a Swift
///   `Character` would merge combining marks);
/// - WER compares the words of Python `str.split()`: runs of whitespace separate words, leading and trailing
///   whitespace gives no empty word. Two words are equal when Swift's `==` says so (canonical Unicode
///   equivalence; Python compares code points, which differs only for text that mixes normalisation forms).
///
/// **Per-utterance rate** = edit distance / reference length. **Empty reference:** SpeeChain divides by zero
/// (`ZeroDivisionError` ends the whole test run). Here the denominator is `max(length, 1)`: an empty reference
/// scores 0 against an empty hypothesis and `n` (one error per hypothesis unit, i.e. n×100 %) against a hypothesis
/// of `n` units; the errors are still counted in the corpus totals, whose rate is total errors / total reference
/// length with the same `max(·, 1)` guard.
///
/// **Insertions and deletions** follow the usual ASR meaning (NIST sclite): an *insertion* is a hypothesis word
/// with no reference counterpart, a *deletion* a reference word missing from the hypothesis. SpeeChain's
/// `get_word_edit_alignment` names them the other way round (it counts the `edit_distance` package's `insert`
/// opcode, which turns the hypothesis into the reference by adding a reference word, as an insertion), so its
/// `idx2insertion` and `idx2deletion` are swapped with respect to ours. The alignment itself is the one that
/// package finds: among minimal-cost paths, the backtrace from the end prefers match/substitution, then a
/// deletion (reference word alone), then an insertion (hypothesis word alone).
public enum ErrorRate {
    // MARK: Edit distance

    /// Levenshtein distance (unit costs for insertion, deletion, substitution) between two sequences.
    public static func editDistance<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    // MARK: Units

    /// The units CER compares: the Unicode code points of `text` without its ASCII spaces.
    public static func characters(_ text: String) -> [Unicode.Scalar] {
        text.unicodeScalars.filter { $0 != " " }
    }

    /// The units WER compares: Python's `str.split()` (any run of whitespace separates; no empty words).
    public static func words(_ text: String) -> [String] {
        var words: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if isPythonWhitespace(scalar) {
                if !current.isEmpty { words.append(String(current)); current = String.UnicodeScalarView() }
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(String(current)) }
        return words
    }

    /// Python's `str.isspace()` for one code point: the Unicode White_Space property, plus the information
    /// separators U+001C…U+001F that Python also splits on.
    static func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }

    /// Drops the padding and `<sos/eos>` ids from a decoded token sequence: the tensor branch of SpeeChain's
    /// `text_preprocess`, done before the ids are turned into the string that is scored.
    public static func stripSpecialTokens(_ ids: [Int], paddingIndex: Int, sosEosIndex: Int) -> [Int] {
        ids.filter { $0 != paddingIndex && $0 != sosEosIndex }
    }

    // MARK: Rates

    /// Character edit distance and reference length (spaces removed from both strings).
    public static func characterErrors(hypothesis: String, reference: String) -> (errors: Int, length: Int) {
        let reference = characters(reference)
        return (editDistance(characters(hypothesis), reference), reference.count)
    }

    /// Word edit distance and reference word count.
    public static func wordErrors(hypothesis: String, reference: String) -> (errors: Int, length: Int) {
        let reference = words(reference)
        return (editDistance(words(hypothesis), reference), reference.count)
    }

    /// errors / length, with an empty reference counted as length 1 (see the type's documentation).
    public static func rate(errors: Int, length: Int) -> Double {
        Double(errors) / Double(max(length, 1))
    }

    /// One utterance's character error rate.
    public static func cer(hypothesis: String, reference: String) -> Double {
        let c = characterErrors(hypothesis: hypothesis, reference: reference)
        return rate(errors: c.errors, length: c.length)
    }

    /// One utterance's word error rate.
    public static func wer(hypothesis: String, reference: String) -> Double {
        let w = wordErrors(hypothesis: hypothesis, reference: reference)
        return rate(errors: w.errors, length: w.length)
    }

    /// Corpus CER: all character errors over all reference characters (not the mean of per-utterance rates).
    public static func corpusCER(_ pairs: [(hypothesis: String, reference: String)]) -> Double {
        corpusRate(pairs, characterErrors)
    }

    /// Corpus WER: all word errors over all reference words (not the mean of per-utterance rates).
    public static func corpusWER(_ pairs: [(hypothesis: String, reference: String)]) -> Double {
        corpusRate(pairs, wordErrors)
    }

    private static func corpusRate(_ pairs: [(hypothesis: String, reference: String)],
                                   _ count: (_ hypothesis: String, _ reference: String) -> (errors: Int, length: Int)) -> Double {
        var errors = 0, length = 0
        for p in pairs {
            let c = count(p.hypothesis, p.reference)
            errors += c.errors; length += c.length
        }
        return rate(errors: errors, length: length)
    }

    // MARK: Alignment

    /// The word alignment of a hypothesis against its reference, with its error counts.
    public static func alignWords(hypothesis: String, reference: String) -> WordAlignment {
        align(words(hypothesis), words(reference))
    }

    /// Aligns two word sequences. The cost table is filled like the `edit_distance` package's: at each cell a
    /// match/substitution wins any tie, then a deletion, then an insertion; the path is read back from the end.
    static func align(_ hyp: [String], _ ref: [String]) -> WordAlignment {
        let m = hyp.count, n = ref.count
        let width = n + 1
        // 0: diagonal (match or substitution), 1: deletion (reference word alone), 2: insertion (hypothesis word alone)
        var cost = [Int](repeating: 0, count: (m + 1) * width)
        var move = [UInt8](repeating: 0, count: (m + 1) * width)
        if m > 0 { for i in 1...m { cost[i * width] = i; move[i * width] = 2 } }
        if n > 0 { for j in 1...n { cost[j] = j; move[j] = 1 } }
        if m > 0 && n > 0 {
            for i in 1...m {
                for j in 1...n {
                    let diagonal = cost[(i - 1) * width + j - 1] + (hyp[i - 1] == ref[j - 1] ? 0 : 1)
                    let deletion = cost[i * width + j - 1] + 1
                    let insertion = cost[(i - 1) * width + j] + 1
                    let best = min(diagonal, deletion, insertion)
                    cost[i * width + j] = best
                    move[i * width + j] = best == diagonal ? 0 : (best == deletion ? 1 : 2)
                }
            }
        }
        var steps: [WordAlignment.Step] = []
        var i = m, j = n
        while i > 0 || j > 0 {
            switch move[i * width + j] {
            case 0:
                let h = hyp[i - 1], r = ref[j - 1]
                steps.append(.init(hypothesis: h, reference: r, operation: h == r ? .match : .substitution))
                i -= 1; j -= 1
            case 1:
                steps.append(.init(hypothesis: nil, reference: ref[j - 1], operation: .deletion))
                j -= 1
            default:
                steps.append(.init(hypothesis: hyp[i - 1], reference: nil, operation: .insertion))
                i -= 1
            }
        }
        return WordAlignment(steps: steps.reversed())
    }
}

/// A word-level alignment of a hypothesis against its reference.
public struct WordAlignment: Sendable, Equatable {
    public enum Operation: String, Sendable, Equatable {
        case match = " "
        case substitution = "S"
        /// A hypothesis word with no reference word.
        case insertion = "I"
        /// A reference word missing from the hypothesis.
        case deletion = "D"
    }

    public struct Step: Sendable, Equatable {
        /// nil for a deletion.
        public var hypothesis: String?
        /// nil for an insertion.
        public var reference: String?
        public var operation: Operation

        public init(hypothesis: String?, reference: String?, operation: Operation) {
            self.hypothesis = hypothesis
            self.reference = reference
            self.operation = operation
        }
    }

    public var steps: [Step]

    public init(steps: [Step]) { self.steps = steps }

    public var insertions: Int { steps.filter { $0.operation == .insertion }.count }
    public var deletions: Int { steps.filter { $0.operation == .deletion }.count }
    public var substitutions: Int { steps.filter { $0.operation == .substitution }.count }
    /// insertions + deletions + substitutions: the word edit distance.
    public var errors: Int { steps.filter { $0.operation != .match }.count }

    /// The alignment as the three-row markdown table SpeeChain puts in instance_reports.md: rows **Hypothesis**,
    /// **Alignment** (`S`, `I`, `D` or a blank) and **Reference**, one column per step, a single space in the cell
    /// of a missing word. Unlike SpeeChain's, the empty header row has as many cells as the table has columns (its
    /// is one short, which GitHub-flavoured markdown then does not render as a table), and a `|` inside a word is
    /// escaped.
    public var table: String {
        func cell(_ word: String?) -> String {
            guard let word, !word.isEmpty else { return " " }
            return word.replacingOccurrences(of: "|", with: "\\|")
        }
        var text = "|" + String(repeating: "|", count: steps.count + 1) + "\n"
        text += "|---|" + String(repeating: "---|", count: steps.count) + "\n"
        let rows: [(String, [String])] = [
            ("Hypothesis", steps.map { cell($0.hypothesis) }),
            ("Alignment", steps.map { $0.operation.rawValue }),
            ("Reference", steps.map { cell($0.reference) }),
        ]
        for (name, cells) in rows {
            text += "|**\(name)**|" + cells.map { $0 + "|" }.joined() + "\n"
        }
        return text
    }
}
