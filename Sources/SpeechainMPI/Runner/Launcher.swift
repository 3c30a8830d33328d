import Foundation

/// Runs a job as one rank and turns every failure into one line and an exit status. Under mpirun/srun every
/// process is one rank of MPI_COMM_WORLD; started alone it is a world of one that never initialises MPI, so
/// nothing is communicated. Set-up is local; the ranks then agree whether all succeeded, so that bad input ends
/// every rank cleanly with its own message instead of leaving some waiting in a collective. A failure after that
/// ends the whole job at once (MPI_Abort), and so does a rank that never reaches a collective: every collective
/// of an MPICommunicator is watched (CollectiveWatchdog, `collective_timeout`).
public enum Launcher {
    /// `program` names the command in error lines (`speechain-mpi`, `speechain-mpi bench`).
    public static func run<Job>(program: String = "speechain-mpi",
                                setUp: (Communicator) throws -> Job,
                                work: (Job, Communicator) throws -> Void) -> Int32 {
        var communicator: Communicator = LocalCommunicator()
        do {
            if MPICommunicator.launchedByMPI { communicator = try MPICommunicator() }
        } catch {
            fail(error, communicator, program)
        }
        if communicator.size > 1 && ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
            BLAS.setThreadCount(1)   // ranks fill the cores
        }
        var job: Job?
        var setupError: Error?
        do { job = try setUp(communicator) } catch { setupError = error }
        let allReady: Bool
        communicator.context = "set-up agreement"
        do { allReady = try communicator.allreduceMin(setupError == nil ? 1 : 0) == 1 } catch { fail(error, communicator, program) }
        communicator.context = nil
        guard allReady, let job else {
            if let setupError { report(setupError, communicator, program) }
            (communicator as? MPICommunicator)?.finalize()
            return 1
        }
        do {
            try work(job, communicator)
        } catch let error as AgreedFailure {
            // every rank throws it at the same point, holding the same message: each says it and ends cleanly
            report(error, communicator, program)
            (communicator as? MPICommunicator)?.finalize()
            return 1
        } catch {
            fail(error, communicator, program)
        }
        (communicator as? MPICommunicator)?.finalize()
        return 0
    }

    /// Trains the experiment `makeExperiment` reads (its errors, like every set-up error, are reported per rank).
    public static func train(_ makeExperiment: () throws -> Experiment,
                             killAfterTestRound: (rank: Int, round: Int)? = nil) -> Int32 {
        run(setUp: { communicator -> (Trainer?, Tester?) in
            let experiment = try makeExperiment()
            (communicator as? MPICommunicator)?.collectiveTimeout = experiment.collectiveTimeout
            let trainer = experiment.runTrain ? try Trainer(experiment: experiment, communicator: communicator) : nil
            let tester = experiment.runTest ? try Tester(experiment: experiment, communicator: communicator) : nil
            tester?.killAfterRound = killAfterTestRound
            if !experiment.runTrain, communicator.isRoot { for note in experiment.notes { print(note) } }
            return (trainer, tester)
        }, work: { job, _ in
            _ = try job.0?.run()
            try job.1?.run()
        })
    }

    public static func report(_ error: Error, _ communicator: Communicator? = nil, _ program: String = "speechain-mpi") {
        var who = ""
        if let communicator, communicator.size > 1 { who = "rank \(communicator.rank): " }
        FileHandle.standardError.write(Data("\(program): error: \(who)\(escapingControlCharacters("\(error)"))\n".utf8))
    }

    /// An error message as one printable line: control characters a user's file or argument carried (NUL, a
    /// newline, an escape sequence) are shown as `\0`, `\n`, `\u{1B}` instead of being written raw.
    public static func escapingControlCharacters(_ message: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(message.unicodeScalars.count)
        for u in message.unicodeScalars {
            switch u {
            case "\0": out += "\\0"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.properties.generalCategory == .control || u.properties.generalCategory == .format && u.value < 0x2000:
                out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    private static func fail(_ error: Error, _ communicator: Communicator, _ program: String) -> Never {
        report(error, communicator, program)
        if communicator.size > 1 { communicator.abort(code: 1) }
        exit(1)
    }
}

/// An error all ranks reach together, after a collective told every rank the same message (e.g. rank 0 found the
/// test stage's model file missing): reported on every rank, and the job ends without MPI_Abort.
public protocol AgreedFailure: Error {}
