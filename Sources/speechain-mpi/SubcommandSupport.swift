import ArgumentParser
import SpeechainMPI

/// A subcommand option kept as text until `run`, so that a bad value is reported in one line (naming the option)
/// rather than as a usage screen.
struct OptionText: ExpressibleByArgument, ExpressibleByStringLiteral {
    let text: String
    init(argument: String) { text = argument }
    init(stringLiteral value: String) { text = value }
    var defaultValueDescription: String { text }

    static func integer(_ value: OptionText, _ option: String) throws -> Int {
        guard let v = Int(value.text.trimmingCharacters(in: .whitespaces)) else {
            throw BenchmarkError.invalid(option: option, reason: "must be an integer, found '\(value.text)'")
        }
        return v
    }

    static func boolean(_ value: OptionText, _ option: String) throws -> Bool {
        switch value.text.trimmingCharacters(in: .whitespaces) {
        case "true": return true
        case "false": return false
        default: throw BenchmarkError.invalid(option: option, reason: "must be true or false, found '\(value.text)'")
        }
    }
}

extension Optional where Wrapped == OptionText {
    /// The root command also declares --batch_size, --accum_grad, --lr and --seed, and argument-parser hands a name
    /// both declare to the parent even after the subcommand; so a subcommand reads such an option's text from the
    /// command line itself (the last occurrence after `subcommand`), or falls back to `value`.
    func orArgument(_ option: String, after subcommand: String, default value: String) -> OptionText {
        if let self { return self }
        let args = CommandLine.arguments
        guard let start = args.firstIndex(of: subcommand) else { return OptionText(argument: value) }
        var found: String?
        var i = start + 1
        while i < args.count {
            if args[i] == "--\(option)", i + 1 < args.count { found = args[i + 1]; i += 2; continue }
            if args[i].hasPrefix("--\(option)=") { found = String(args[i].dropFirst(option.count + 3)) }
            i += 1
        }
        return OptionText(argument: found ?? value)
    }
}

/// Every value of a repeatable option the root command also declares (`--set`), given after `subcommand`.
func argumentValues(_ option: String, after subcommand: String) -> [String] {
    let args = CommandLine.arguments
    guard let start = args.firstIndex(of: subcommand) else { return [] }
    var found: [String] = []
    var i = start + 1
    while i < args.count {
        if args[i] == "--\(option)", i + 1 < args.count { found.append(args[i + 1]); i += 2; continue }
        if args[i].hasPrefix("--\(option)=") { found.append(String(args[i].dropFirst(option.count + 3))) }
        i += 1
    }
    return found
}

import Foundation

/// Writes a benchmark's report as `<name>.json` (snake_case keys) and `<name>.txt` under `dir`.
func writeReport(_ report: some Encodable, text: String, name: String, to dir: URL) throws {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    try encoder.encode(report).write(to: dir.appendingPathComponent("\(name).json"), options: .atomic)
    try Data((text + "\n").utf8).write(to: dir.appendingPathComponent("\(name).txt"), options: .atomic)
}
