import Foundation

/// One machine-readable record per training step (`steps.jsonl`): losses and metrics averaged over all ranks,
/// and per OptimScheduler the lr, the gradient norm, the loss scale and whether the update was skipped.
public struct StepRecord: Codable, Sendable, Equatable {
    public var step: Int
    public var epoch: Int
    public var values: [String: Double]
    public var lr: [String: Double] = [:]
    public var gradNorm: [String: Double] = [:]
    public var lossScale: [String: Double] = [:]
    public var skipped: [String: Bool] = [:]
}

/// Rank 0's voice: report lines on stdout and in `train.log`, step records in `steps.jsonl`, curves under
/// `figures/`, TensorBoard event files under `tensorboard/train` and `tensorboard/valid`, and a progress bar when
/// stdout is a terminal. On every other rank it says nothing.
///
/// TensorBoard tags (`tensorboard --logdir <train_result_path>/tensorboard`): per step, each loss and metric under
/// its own name and `lr/<scheduler>`, `grad_norm/<scheduler>`, `loss_scale/<scheduler>` (the values of
/// steps.jsonl); per report `time/<phase>` in ms per step; per epoch (step = epoch) `epoch/<name>` in both runs,
/// so that train and valid share one chart, and `epoch/lr/<scheduler>`.
final class Monitor {
    let active: Bool
    let directory: URL?
    private let output: (String) -> Void
    private var log: FileHandle?
    private var records: FileHandle?
    private var tensorboard: (train: TensorBoardWriter, valid: TensorBoardWriter)?
    private let tty: Bool
    private var progressShown = false
    private let encoder = JSONCoding.encoder(snakeCase: true)

    init(active: Bool, directory: URL?, output: @escaping (String) -> Void) {
        self.active = active
        self.directory = active ? directory : nil
        self.output = output
        // Under mpirun, Open MPI hands each rank a pseudo-terminal even when mpirun's own output goes to a file,
        // so a rank cannot tell; the bar is shown only for processes started directly on a terminal.
        tty = active && isatty(STDOUT_FILENO) != 0 && !MPICommunicator.launchedByMPI
    }

    /// Opens the log and the step records; on resume, keeps only the records up to the checkpoint's step.
    func open(resumedAtStep: Int?) throws {
        guard let dir = directory else { return }
        try ResultFolder.makeDirectory(dir.appendingPathComponent("figures"))
        let logURL = dir.appendingPathComponent("train.log"), recordURL = dir.appendingPathComponent("steps.jsonl")
        if let step = resumedAtStep {
            if let data = FileManager.default.contents(atPath: recordURL.path) {
                let decoder = JSONCoding.decoder(snakeCase: true)
                // lines past the checkpoint (or cut by a kill) are dropped: they will be recomputed
                let kept = data.split(separator: UInt8(ascii: "\n")).filter {
                    guard let r = try? decoder.decode(StepRecord.self, from: Data($0)) else { return false }
                    return r.step <= step
                }
                var out = Data()
                for line in kept { out.append(contentsOf: line); out.append(UInt8(ascii: "\n")) }
                try InteropFile.writeAtomically(out, to: recordURL)
            }
        }
        // A new run starts both files afresh; a resumed one appends to what is there.
        for url in [logURL, recordURL] where resumedAtStep == nil || !FileManager.default.fileExists(atPath: url.path) {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw InteropError.writeFailed(path: url.path, reason: "cannot be created")
            }
        }
        let events = dir.appendingPathComponent("tensorboard")
        tensorboard = (try TensorBoardWriter(directory: events.appendingPathComponent("train")),
                       try TensorBoardWriter(directory: events.appendingPathComponent("valid")))
        log = try FileHandle(forWritingTo: logURL)
        log?.seekToEndOfFile()
        records = try FileHandle(forWritingTo: recordURL)
        records?.seekToEndOfFile()
    }

    func close() {
        clearProgress()
        try? log?.close(); try? records?.close()
        try? tensorboard?.train.close(); try? tensorboard?.valid.close()
        log = nil; records = nil; tensorboard = nil
    }

    func line(_ text: String) {
        guard active else { return }
        clearProgress()
        output(text)
        log?.write(Data((text + "\n").utf8))
    }

    func write(_ batch: [StepRecord]) throws {
        guard active, let records else { return }
        var data = Data()
        for r in batch { data.append(try encoder.encode(r)); data.append(UInt8(ascii: "\n")) }
        records.write(data)
        guard let board = tensorboard?.train else { return }
        for r in batch {
            for (name, v) in r.values.sorted(by: { $0.key < $1.key }) { board.addScalar(tag: name, value: v, step: r.step) }
            for (kind, values) in [("lr", r.lr), ("grad_norm", r.gradNorm), ("loss_scale", r.lossScale)] {
                for (s, v) in values.sorted(by: { $0.key < $1.key }) { board.addScalar(tag: "\(kind)/\(s)", value: v, step: r.step) }
            }
        }
        try board.flush()
    }

    /// The time split of a report (ms per step of each phase) at its last step.
    func writeTimes(_ split: [(phase: String, ms: Double)], step: Int) {
        for (phase, ms) in split { tensorboard?.train.addScalar(tag: "time/\(phase)", value: ms, step: step) }
    }

    /// An epoch's means (train and valid) and lrs, at step = epoch.
    func writeEpoch(_ r: EpochRecord) throws {
        guard let board = tensorboard else { return }
        for (name, v) in r.train.sorted(by: { $0.key < $1.key }) { board.train.addScalar(tag: "epoch/\(name)", value: v, step: r.epoch) }
        for (s, v) in r.lr.sorted(by: { $0.key < $1.key }) { board.train.addScalar(tag: "epoch/lr/\(s)", value: v, step: r.epoch) }
        for (name, v) in (r.valid ?? [:]).sorted(by: { $0.key < $1.key }) { board.valid.addScalar(tag: "epoch/\(name)", value: v, step: r.epoch) }
        try board.train.flush()
        try board.valid.flush()
    }

    /// A one-line bar redrawn in place, only on a terminal.
    func progress(step: Int, of total: Int, epoch: Int) {
        guard tty else { return }
        let width = 30, done = total > 0 ? width * step / total : width
        let bar = String(repeating: "=", count: done) + String(repeating: " ", count: width - done)
        FileHandle.standardOutput.write(Data("\r\u{1B}[Kepoch \(epoch) [\(bar)] \(step)/\(total)".utf8))
        progressShown = true
    }

    private func clearProgress() {
        guard progressShown else { return }
        FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8))
        progressShown = false
    }

    /// Curves over epochs: every loss and metric (train and valid) and every scheduler's lr, as SVG.
    func writeCurves(_ history: [EpochRecord], names: [String], schedulers: [String]) throws {
        guard active, let dir = directory?.appendingPathComponent("figures") else { return }
        for name in names {
            var series = [SVGPlot.Series(name: "train", points: history.compactMap { r in r.train[name].map { (Double(r.epoch), $0) } })]
            let valid = history.compactMap { r in r.valid?[name].map { (Double(r.epoch), $0) } }
            if !valid.isEmpty { series.append(SVGPlot.Series(name: "valid", points: valid)) }
            try save(SVGPlot(title: name, xLabel: "epoch", yLabel: name, series: series), dir.appendingPathComponent("\(name).svg"))
        }
        let lr = schedulers.map { s in SVGPlot.Series(name: s, points: history.compactMap { r in r.lr[s].map { (Double(r.epoch), $0) } }) }
        try save(SVGPlot(title: "learning rate (end of epoch)", xLabel: "epoch", yLabel: "lr", series: lr), dir.appendingPathComponent("lr.svg"))
    }

    private func save(_ plot: SVGPlot, _ url: URL) throws {
        try InteropFile.writeAtomically(Data(plot.render().utf8), to: url)
    }
}

import Logging

/// Sends swift-log messages (e.g. an OptimScheduler's "update skipped" notice) through the monitor, so that they
/// land on rank 0's stdout and in train.log like every other report line.
struct MonitorLogHandler: LogHandler {
    let monitor: Monitor
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        monitor.line(event.level >= .warning ? "\(event.level): \(event.message)" : "\(event.message)")
    }
}
