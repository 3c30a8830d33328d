import Foundation

/// One decoded test utterance with its scores, the row of every `idx2*` file SpeeChain's TestMonitor writes.
public struct UtteranceResult: Codable, Sendable, Equatable {
    public var id: String
    public var hypothesis: String
    public var reference: String
    public var cer: Double
    public var wer: Double
    /// Hypothesis words with no reference word (see `ErrorRate` for how this differs from SpeeChain's naming).
    public var insertions: Int
    /// Reference words missing from the hypothesis.
    public var deletions: Int
    public var substitutions: Int
    public var charErrors: Int
    /// Reference length in code points, spaces removed.
    public var charCount: Int
    public var wordErrors: Int
    public var wordCount: Int
    /// Hypothesis confidence (the beam's log-probability score), SpeeChain's `text_confid`.
    public var confidence: Double
    /// Encoder feature frames per hypothesis token, SpeeChain's `feat_token_len_ratio`.
    public var featTokenRatio: Double
    /// Hypothesis length in tokens including the closing `<sos/eos>`, SpeeChain's `text_len`.
    public var textLength: Int

    public init(id: String, hypothesis: String, reference: String, cer: Double, wer: Double,
                insertions: Int, deletions: Int, substitutions: Int, charErrors: Int, charCount: Int,
                wordErrors: Int, wordCount: Int, confidence: Double, featTokenRatio: Double, textLength: Int) {
        self.id = id
        self.hypothesis = hypothesis
        self.reference = reference
        self.cer = cer
        self.wer = wer
        self.insertions = insertions
        self.deletions = deletions
        self.substitutions = substitutions
        self.charErrors = charErrors
        self.charCount = charCount
        self.wordErrors = wordErrors
        self.wordCount = wordCount
        self.confidence = confidence
        self.featTokenRatio = featTokenRatio
        self.textLength = textLength
    }

    /// Scores `hypothesis` against `reference` (`ErrorRate`) and keeps the decoder's numbers.
    public static func score(id: String, hypothesis: String, reference: String,
                             confidence: Double, featTokenRatio: Double, textLength: Int) -> UtteranceResult {
        let c = ErrorRate.characterErrors(hypothesis: hypothesis, reference: reference)
        let alignment = ErrorRate.alignWords(hypothesis: hypothesis, reference: reference)
        let wordCount = ErrorRate.words(reference).count
        return UtteranceResult(
            id: id, hypothesis: hypothesis, reference: reference,
            cer: ErrorRate.rate(errors: c.errors, length: c.length),
            wer: ErrorRate.rate(errors: alignment.errors, length: wordCount),
            insertions: alignment.insertions, deletions: alignment.deletions, substitutions: alignment.substitutions,
            charErrors: c.errors, charCount: c.length, wordErrors: alignment.errors, wordCount: wordCount,
            confidence: confidence, featTokenRatio: featTokenRatio, textLength: textLength)
    }
}

/// A problem with the inputs of a test report; `description` is one line.
public enum TestReportError: Error, CustomStringConvertible, Equatable {
    case unreadableGroupInfo(path: String, reason: String)
    case malformedGroupInfo(path: String, line: Int, reason: String)
    case duplicateUtterance(id: String)
    case badCaseSelection(String)

    public var description: String {
        switch self {
        case .unreadableGroupInfo(let path, let reason):
            return "\(path): cannot read the group information (\(reason))"
        case .malformedGroupInfo(let path, let line, let reason):
            return "\(path):\(line): \(reason)"
        case .duplicateUtterance(let id):
            return "test results: utterance '\(id)' appears more than once"
        case .badCaseSelection(let message):
            return "bad_cases_selection: \(message)"
        }
    }
}

/// The files SpeeChain's TestMonitor (`monitor.py`, `finish_epoch`) writes at the end of a test set, from the
/// per-utterance results of an ASR model (`ar_asr.inference`):
/// - `idx2text`, `idx2text_len`, `idx2feat_token_len_ratio`, `idx2text_confid`, `idx2cer`, `idx2wer`,
///   `idx2insertion`, `idx2deletion`, `idx2substitution`: one `<id> <value>` line per utterance, sorted by id,
///   numbers as Python's `str()` prints them (`0.25`, `1.0`, `3`);
/// - `instance_reports.md`: `<id> <report>` per utterance, the report as SpeeChain's `register_instance_reports`
///   makes it (a markdown list of the utterance's metrics, then the word alignment table);
/// - `overall_results.md`: each metric's mean ± population std, one table per group kind, then (our extension)
///   the corpus-level WER and CER;
/// - `top<N>_<mode>_<metric>.md` per bad-case selection;
/// - `overall_results.json` (our extension).
/// Every file is written atomically (a temporary file in the folder, renamed into place).
public enum TestReport {
    /// The numeric metrics, in the order SpeeChain's ASR model returns them (the order of overall_results.md and
    /// of the group tables' columns), and the names a bad-case selection may use.
    public static let metricNames = ["text_len", "feat_token_len_ratio", "text_confid",
                                     "cer", "wer", "insertion", "deletion", "substitution"]

    public enum Mode: String, Sendable, Equatable {
        case max, min
    }

    /// One `bad_cases_selection` entry: the `number` utterances with the largest (`max`) or smallest (`min`) value
    /// of `metric`; ties keep id order (Python's stable sort).
    public struct BadCaseSelection: Sendable, Equatable {
        public var metric: String
        public var mode: Mode
        public var number: Int

        public init(metric: String, mode: Mode, number: Int) {
            self.metric = metric
            self.mode = mode
            self.number = number
        }

        /// SpeeChain's `[metric, mode, number]`, checked: the metric must be one of `metricNames`, the mode
        /// `max` or `min` (any case; SpeeChain takes anything but `max` as `min`), the number at least 1.
        public init(metric: String, mode: String, number: Int) throws {
            guard TestReport.metricNames.contains(metric) else {
                throw TestReportError.badCaseSelection(
                    "unknown metric '\(metric)'; valid: \(TestReport.metricNames.joined(separator: ", "))")
            }
            guard let m = Mode(rawValue: mode.lowercased()) else {
                throw TestReportError.badCaseSelection("mode of '\(metric)' must be 'max' or 'min', found '\(mode)'")
            }
            guard number >= 1 else {
                throw TestReportError.badCaseSelection("number of '\(metric)' cases must be at least 1, found \(number)")
            }
            self.init(metric: metric, mode: m, number: number)
        }

        /// The file name: `top<number>_<mode>_<metric>.md`.
        public var fileName: String { "top\(number)_\(mode.rawValue)_\(metric).md" }
    }

    /// The content of overall_results.json.
    public struct Summary: Codable, Sendable, Equatable {
        public var wer: Double
        public var cer: Double
        public var utterances: Int
        public var mean: [String: Double]
        public var std: [String: Double]
        public var wordErrors: Int
        public var words: Int
        public var charErrors: Int
        public var chars: Int
        public var insertions: Int
        public var deletions: Int
        public var substitutions: Int

        enum CodingKeys: String, CodingKey {
            case wer, cer, utterances, mean, std, words, chars, insertions, deletions, substitutions
            case wordErrors = "word_errors"
            case charErrors = "char_errors"
        }
    }

    // MARK: Writing

    /// Writes every report file into `folder` (created if missing). `groups` are SpeeChain's `group_info` kinds
    /// in order (e.g. `speaker` from idx2spk, `gender` from idx2gen); utterances a kind does not list are left
    /// out of its table. The selections are checked before anything is written. Returns the summary written to
    /// overall_results.json.
    @discardableResult
    public static func write(_ results: [UtteranceResult],
                             groups: [(name: String, idToGroup: [String: String])] = [],
                             badCases: [(metric: String, mode: String, number: Int)] = [],
                             to folder: URL) throws -> Summary {
        let selections = try badCases.map { try BadCaseSelection(metric: $0.metric, mode: $0.mode, number: $0.number) }
        let sorted = try sortedById(results)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)

        for (name, text) in idx2Files(sorted) {
            try writeFile(text, to: folder.appendingPathComponent(name))
        }
        try writeFile(instanceReportsFile(sorted), to: folder.appendingPathComponent("instance_reports.md"))
        try writeFile(overallResults(sorted, groups: groups), to: folder.appendingPathComponent("overall_results.md"))
        for selection in selections {
            try writeFile(badCasesFile(sorted, selection: selection), to: folder.appendingPathComponent(selection.fileName))
        }
        let s = summary(sorted)
        let json = try JSONCoding.encoder(snakeCase: false, pretty: true).encode(s)
        try InteropFile.writeAtomically(json + Data("\n".utf8), to: folder.appendingPathComponent("overall_results.json"))
        return s
    }

    static func writeFile(_ text: String, to url: URL) throws {
        try InteropFile.writeAtomically(Data(text.utf8), to: url)
    }

    static func sortedById(_ results: [UtteranceResult]) throws -> [UtteranceResult] {
        let sorted = results.sorted { $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }
        for k in sorted.indices.dropFirst() where sorted[k].id == sorted[k - 1].id {
            throw TestReportError.duplicateUtterance(id: sorted[k].id)
        }
        return sorted
    }

    // MARK: File contents

    /// The numeric value of one metric for one utterance (as SpeeChain stores it: ints stay ints).
    enum Value {
        case int(Int)
        case double(Double)

        var double: Double {
            switch self { case .int(let i): return Double(i); case .double(let d): return d }
        }

        /// Python's `str()` of the value, as `np.savetxt(fmt="%s")` writes it.
        var text: String {
            switch self { case .int(let i): return String(i); case .double(let d): return PythonFormat.float(d) }
        }
    }

    static func value(_ metric: String, of r: UtteranceResult) -> Value {
        switch metric {
        case "text_len": return .int(r.textLength)
        case "feat_token_len_ratio": return .double(r.featTokenRatio)
        case "text_confid": return .double(r.confidence)
        case "cer": return .double(r.cer)
        case "wer": return .double(r.wer)
        case "insertion": return .int(r.insertions)
        case "deletion": return .int(r.deletions)
        case "substitution": return .int(r.substitutions)
        default: preconditionFailure("unknown metric \(metric)")
        }
    }

    /// `idx2<name>` file names and contents (results sorted by id). Like `np.savetxt`, every line ends with a
    /// newline; an empty hypothesis leaves `<id> ` (the id and the separating space).
    static func idx2Files(_ sorted: [UtteranceResult]) -> [(String, String)] {
        var files: [(String, String)] = [("idx2text", sorted.map { "\($0.id) \($0.hypothesis)\n" }.joined())]
        for metric in metricNames {
            files.append(("idx2" + metric, sorted.map { "\($0.id) \(value(metric, of: $0).text)\n" }.joined()))
        }
        return files
    }

    /// SpeeChain's per-utterance report (`register_instance_reports`): a blank line, the metric list, a blank
    /// line, the alignment table. Our extension: the list ends with the hypothesis and reference strings.
    public static func instanceReport(_ r: UtteranceResult) -> String {
        let alignment = ErrorRate.alignWords(hypothesis: r.hypothesis, reference: r.reference)
        let items: [(String, String)] = [
            ("Hypothesis Confidence", String(format: "%.6f", r.confidence)),
            ("Feature-Token Length Ratio", String(format: "%.2f", r.featTokenRatio)),
            ("CER", String(format: "%.2f%%", r.cer * 100)),
            ("WER", String(format: "%.2f%%", r.wer * 100)),
            ("Word Insertion", String(r.insertions)),
            ("Word Deletion", String(r.deletions)),
            ("Word Substitution", String(r.substitutions)),
            ("Hypothesis", r.hypothesis),
            ("Reference", r.reference),
        ]
        return "\n\n" + markdownList(items) + "\n" + alignment.table + "\n"
    }

    static func instanceReportsFile(_ sorted: [UtteranceResult]) -> String {
        sorted.map { "\($0.id) \(instanceReport($0))\n" }.joined()
    }

    /// `* **name:** value` lines (SpeeChain's `get_list_strings`).
    static func markdownList(_ items: [(String, String)]) -> String {
        items.map { "* **\($0.0):** \($0.1)\n" }.joined()
    }

    /// SpeeChain's `get_table_strings` with bold headers and a bold first column.
    static func markdownTable(headers: [String], firstColumn: [String], rows: [[String]]) -> String {
        var text = "|" + headers.map { "**\($0)**|" }.joined() + "\n"
        text += "|---|" + String(repeating: "---|", count: headers.count - 1) + "\n"
        for (name, row) in zip(firstColumn, rows) {
            text += "|**\(name)**|" + row.map { $0 + "|" }.joined() + "\n"
        }
        return text
    }

    static func meanStd(_ values: [Double]) -> (mean: Double, std: Double) {
        guard !values.isEmpty else { return (.nan, .nan) }
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n
        return (mean, variance.squareRoot())
    }

    static func format4(_ x: Double) -> String { String(format: "%.4f", x) }

    /// overall_results.md: SpeeChain's layout, then our corpus-level section. Like `np.savetxt`, the text ends
    /// with one extra newline.
    static func overallResults(_ sorted: [UtteranceResult], groups: [(name: String, idToGroup: [String: String])]) -> String {
        var text = "# Overall Evaluation (mean ± std):\n"
        if !sorted.isEmpty {
            text += markdownList(metricNames.map { metric in
                let s = meanStd(sorted.map { value(metric, of: $0).double })
                return (metric, "\(format4(s.mean)) ± \(format4(s.std))")
            })
        }
        for group in groups {
            text += "# \(group.name)-wise Evaluation:\n"
                + "(***bold&italic*** numbers represent the maximal ones in all groups while "
                + "**bold** numbers represent the minimal ones.)\n\n"
            // groups in the order of their first utterance (by id), as SpeeChain's id-sorted group_info gives them
            var order: [String] = []
            var members: [String: [UtteranceResult]] = [:]
            for r in sorted {
                guard let g = group.idToGroup[r.id] else { continue }
                if members[g] == nil { order.append(g) }
                members[g, default: []].append(r)
            }
            if order.isEmpty {
                text += "(no test utterance is listed in the \(group.name) information)\n"
                continue
            }
            let means = order.map { g in metricNames.map { m in meanStd(members[g]!.map { value(m, of: $0).double }).mean } }
            var cells = means.map { $0.map(format4) }
            for column in metricNames.indices {
                let columnValues = means.map { $0[column] }
                let highest = columnValues.max()!, lowest = columnValues.min()!
                for row in order.indices {
                    // the maximum wins when every group has the same value, as in SpeeChain
                    if columnValues[row] == highest { cells[row][column] = "***\(cells[row][column])***" }
                    else if columnValues[row] == lowest { cells[row][column] = "**\(cells[row][column])**" }
                }
            }
            text += markdownTable(headers: [group.name] + metricNames, firstColumn: order, rows: cells)
        }
        let s = summary(sorted)
        text += "# Corpus-level Evaluation (speechain-mpi extension: total errors / total reference length):\n"
        text += markdownList([
            ("WER", "\(format4(s.wer)) (\(s.wordErrors) / \(s.words) words)"),
            ("CER", "\(format4(s.cer)) (\(s.charErrors) / \(s.chars) characters)"),
            ("Word Insertion", String(s.insertions)),
            ("Word Deletion", String(s.deletions)),
            ("Word Substitution", String(s.substitutions)),
            ("Utterances", String(s.utterances)),
        ])
        return text + "\n"
    }

    /// `top<N>_<mode>_<metric>.md`: `**<id>**` followed by the utterance's report, for the selected utterances.
    static func badCasesFile(_ sorted: [UtteranceResult], selection: BadCaseSelection) -> String {
        let keyed = sorted.map { (result: $0, key: value(selection.metric, of: $0).double) }
        // a stable sort (ties keep id order), as Python's sorted(..., reverse=...) is
        let ranked = keyed.enumerated().sorted { a, b in
            if a.element.key != b.element.key {
                return selection.mode == .max ? a.element.key > b.element.key : a.element.key < b.element.key
            }
            return a.offset < b.offset
        }
        return ranked.prefix(selection.number).map { "**\($0.element.result.id)**" + instanceReport($0.element.result) }.joined() + "\n"
    }

    /// The corpus totals and per-metric mean and std of overall_results.json.
    public static func summary(_ results: [UtteranceResult]) -> Summary {
        var mean: [String: Double] = [:], std: [String: Double] = [:]
        if !results.isEmpty {
            for metric in metricNames {
                let s = meanStd(results.map { value(metric, of: $0).double })
                mean[metric] = s.mean
                std[metric] = s.std
            }
        }
        let wordErrors = results.reduce(0) { $0 + $1.wordErrors }, words = results.reduce(0) { $0 + $1.wordCount }
        let charErrors = results.reduce(0) { $0 + $1.charErrors }, chars = results.reduce(0) { $0 + $1.charCount }
        return Summary(
            wer: ErrorRate.rate(errors: wordErrors, length: words),
            cer: ErrorRate.rate(errors: charErrors, length: chars),
            utterances: results.count, mean: mean, std: std,
            wordErrors: wordErrors, words: words, charErrors: charErrors, chars: chars,
            insertions: results.reduce(0) { $0 + $1.insertions },
            deletions: results.reduce(0) { $0 + $1.deletions },
            substitutions: results.reduce(0) { $0 + $1.substitutions })
    }

    // MARK: Group information

    /// Reads a SpeeChain group-information file (`idx2spk`, `idx2gen`, ...): one `<id> <group>` line per
    /// utterance, the group being everything after the first space (SpeeChain's `split(' ', 1)`). Blank lines are
    /// skipped and a trailing `\r` is dropped; a line without a space, with an empty id or group, or repeating an
    /// id is an error naming the file and the line.
    public static func readGroupInfo(at url: URL) throws -> [String: String] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TestReportError.unreadableGroupInfo(path: url.path, reason: error.localizedDescription)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TestReportError.unreadableGroupInfo(path: url.path, reason: "not UTF-8 text")
        }
        var map: [String: String] = [:]
        var lineNumber = 0
        for var line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            guard let space = line.firstIndex(of: " ") else {
                throw TestReportError.malformedGroupInfo(
                    path: url.path, line: lineNumber, reason: "expected '<id> <group>', found '\(line)' (no space)")
            }
            let id = String(line[..<space]), group = String(line[line.index(after: space)...])
            if id.isEmpty {
                throw TestReportError.malformedGroupInfo(path: url.path, line: lineNumber, reason: "the line starts with a space: no utterance id")
            }
            if group.allSatisfy({ $0 == " " || $0 == "\t" }) {
                throw TestReportError.malformedGroupInfo(path: url.path, line: lineNumber, reason: "utterance '\(id)' has no group")
            }
            if map[id] != nil {
                throw TestReportError.malformedGroupInfo(path: url.path, line: lineNumber, reason: "utterance '\(id)' is listed again")
            }
            map[id] = group
        }
        return map
    }
}
