import Foundation
@testable import SpeechainMPI

/// Audio made by real tools (espeak-ng speaks, sox converts) into one scratch folder per test process, and sox as
/// the independent decoder the tests compare with. Both tools are installed by scripts/setup.sh.
enum SpeechFixtures {
    struct ToolError: Error, CustomStringConvertible { let description: String }

    /// Runs a tool and returns its standard output; a non-zero exit is an error quoting its standard error.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> Data {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ToolError(description: "\(tool) \(arguments.joined(separator: " ")) failed: "
                + String(decoding: errData, as: UTF8.self))
        }
        return data
    }

    /// sox's own decoding (or conversion, with `effects`) of `path` as raw float32 mono.
    static func soxFloats(_ path: String, _ effects: [String] = []) throws -> [Float] {
        let data = try run("sox", [path, "-t", "f32", "-"] + effects)
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// The folder with every fixture, made once.
    static let folder: String = {
        do { return try make() } catch { fatalError("speech fixtures: \(error)") }
    }()

    static func path(_ name: String) -> String { folder + "/" + name }

    private static func make() throws -> String {
        let dir = try TestResources.scratchDirectory("speech").path
        func p(_ n: String) -> String { dir + "/" + n }
        // espeak-ng speaks at 22050 Hz, 16-bit mono
        try run("espeak-ng", ["-w", p("seven.wav"), "seven"])
        try run("sox", [p("seven.wav"), "-r", "16000", p("seven16k.flac")])
        try run("sox", [p("seven.wav"), "-r", "16000", p("seven16k.wav")])
        try run("sox", [p("seven.wav"), "-r", "8000", p("seven8k.wav")])
        try run("sox", [p("seven.wav"), "-r", "48000", "-b", "24", p("seven48k24.wav")])
        try run("sox", [p("seven.wav"), "-c", "2", p("stereo.wav")])
        try run("sox", ["-n", "-r", "16000", "-c", "1", "-b", "16", p("silent0.wav"), "trim", "0", "0"])
        try run("sox", ["-n", "-r", "16000", "-c", "1", "-e", "floating-point", "-b", "32", p("float.wav"),
                        "synth", "0.01", "sine", "440"])
        try run("sox", [p("seven.wav"), p("seven.aiff")])
        let fm = FileManager.default
        func cut(_ from: String, _ to: String) throws {
            let d = try Data(contentsOf: URL(fileURLWithPath: p(from)))
            try d.prefix(d.count / 2).write(to: URL(fileURLWithPath: p(to)))
        }
        try cut("seven.wav", "truncated.wav")
        try cut("seven16k.flac", "truncated.flac")
        try cut("seven.aiff", "truncated.aiff")
        // a float WAV with a NaN as sample 5
        var f = try Data(contentsOf: URL(fileURLWithPath: p("float.wav")))
        let data = f.range(of: Data("data".utf8))!.upperBound + 4
        var nan = Float.nan.bitPattern.littleEndian
        f.replaceSubrange((data + 20)..<(data + 24), with: Data(bytes: &nan, count: 4))
        try f.write(to: URL(fileURLWithPath: p("nan.wav")))
        fm.createFile(atPath: p("zero-bytes.wav"), contents: Data())
        fm.createFile(atPath: p("garbage.wav"), contents: Data("RIFF1234WAVEjunkjunkjunk".utf8))
        try fm.createDirectory(atPath: p("folder.wav"), withIntermediateDirectories: true)
        return dir
    }
}

/// The one-line description of a speech error, or nil when `body` does not throw one.
func speechError(_ body: () throws -> Void) -> SpeechDataError? {
    do { try body() } catch let e as SpeechDataError { return e } catch { return nil }
    return nil
}
