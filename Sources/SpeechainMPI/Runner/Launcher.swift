import Foundation

/// Runs an experiment as one rank of a job and turns every failure into one line and an exit status.
/// Under mpirun/srun every process is one rank of MPI_COMM_WORLD; started alone it is a world of one that never
/// initialises MPI, so nothing is communicated.
public enum Launcher {
    /// `makeExperiment` reads the config and command line; its errors, like every other set-up error, are
    /// reported by each rank with its rank number.
    public static func train(_ makeExperiment: () throws -> Experiment) -> Int32 {
        var communicator: Communicator = LocalCommunicator()
        do {
            if MPICommunicator.launchedByMPI { communicator = try MPICommunicator() }
        } catch {
            fail(error, communicator)
        }
        if communicator.size > 1 && ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
            BLAS.setThreadCount(1)   // ranks fill the cores
        }
        // Set-up is local (config, data, weights, checkpoint); the ranks then agree whether all succeeded, so that
        // bad input ends every rank cleanly with its own message instead of leaving some waiting in a collective.
        var trainer: Trainer?
        var setupError: Error?
        do { trainer = try Trainer(experiment: makeExperiment(), communicator: communicator) } catch { setupError = error }
        let allReady: Bool
        do { allReady = try communicator.allreduceMin(setupError == nil ? 1 : 0) == 1 } catch { fail(error, communicator) }
        guard allReady, let trainer else {
            if let setupError { report(setupError, communicator) }
            (communicator as? MPICommunicator)?.finalize()
            return 1
        }
        do {
            try trainer.run()
        } catch {
            fail(error, communicator)
        }
        (communicator as? MPICommunicator)?.finalize()
        return 0
    }

    public static func report(_ error: Error, _ communicator: Communicator? = nil) {
        let who = (communicator?.size ?? 1) > 1 ? "rank \(communicator!.rank): " : ""
        FileHandle.standardError.write(Data("speechain-mpi: error: \(who)\(error)\n".utf8))
    }

    /// A failure during training ends the whole job at once (MPI_Abort): no rank is left waiting in a collective.
    private static func fail(_ error: Error, _ communicator: Communicator) -> Never {
        report(error, communicator)
        if communicator.size > 1 { communicator.abort(code: 1) }
        exit(1)
    }
}
