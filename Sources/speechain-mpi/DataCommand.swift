import ArgumentParser
import Foundation
import SpeechainMPI

/// `speechain-mpi data --config X`: one epoch of the experiment's training data read as training reads it (under
/// mpirun each rank its share), with the frontend's log-mel features; prints the plan, the first batch and totals.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Read one epoch of an experiment's training data as training does, without training.",
        discussion: """
            Checks every index, transcript and audio header at set-up (bad data: one line, non-zero exit, every \
            rank), then loads each batch on the loading thread, computes its log-mel features with the config's \
            frontend and prints the first batch and the totals over all ranks. Run it under mpirun to see the split.
            """)

    // the root command declares --config and --set too, and argument-parser hands them to it (see orArgument)
    @Option(help: "SpeeChain-style experiment YAML.") var config: OptionText?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var assignments: [OptionText] = []
    @Option(help: "The epoch whose plan is read (shuffling depends on it).") var epoch: Int = 1

    func run() throws {
        var overrides: [(path: String, value: ConfigValue)] = []
        let configPath = config.orArgument("config", after: "data", default: "").text
        for a in assignments.map(\.text) + argumentValues("set", after: "data") {
            guard let eq = a.firstIndex(of: "="), eq != a.startIndex else { throw ValidationError("--set expects key=value, found '\(a)'") }
            let key = String(a[..<eq])
            overrides.append((key, try ConfigFile.value(String(a[a.index(after: eq)...]), key: key)))
        }
        guard !configPath.isEmpty else { throw ValidationError("give the experiment with --config") }
        guard epoch >= 1 else { throw ValidationError("--epoch must be >= 1, found \(epoch)") }
        let status = Launcher.run(program: "speechain-mpi data", setUp: { communicator in
            try DataPass(experiment: try Experiment.load(configPath: configPath, overrides: overrides), communicator: communicator)
        }, work: { pass, _ in try pass.run(epoch: epoch) })
        if status != 0 { throw ExitCode(status) }
    }
}
