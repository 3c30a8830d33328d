import Foundation

/// The JSON settings of every file the runner writes and reads back (summary.json, steps.jsonl, the checkpoint's
/// state record): sorted keys, and inf/NaN (a skipped update's gradient norm) spelled as strings.
enum JSONCoding {
    static func encoder(snakeCase: Bool, pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : .sortedKeys
        if snakeCase { e.keyEncodingStrategy = .convertToSnakeCase }
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    static func decoder(snakeCase: Bool) -> JSONDecoder {
        let d = JSONDecoder()
        if snakeCase { d.keyDecodingStrategy = .convertFromSnakeCase }
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }
}
