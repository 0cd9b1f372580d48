import ArgumentParser
import Cohort
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the model a config describes, on every MPI rank.",
        discussion: """
        Every rank holds a full replica; each reads only its own rows of the training file.
        Gradients are averaged over all ranks every step. Rank 0 prints per-epoch test loss and
        accuracy and writes checkpoints to <run_dir>/checkpoints/.

        SIGTERM or SIGUSR1 to any rank stops every rank at the next step boundary; rank 0 writes a
        checkpoint and the job exits with status 75 (resume with --resume auto).
        Exit status: 0 done, 1 error (one line on stderr naming the file, key or rank), 75 stopped
        by a signal with a checkpoint written, 76 stopped by a signal during start-up, before the
        first step: nothing written (run the same command again).
        """
    )

    @Argument(help: "The YAML config (see configs/README.md).")
    var config: String

    @Option(help: ArgumentHelp("Resume from a checkpoint file, 'auto' for the newest valid one in <run_dir>/checkpoints, or 'if-any' for that or a fresh start when there is none.", valueName: "path|auto|if-any"))
    var resume: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key, e.g. --set training.epochs=3 (repeatable); recorded in <run_dir>/config.yaml.", valueName: "key=value"))
    var overrides: [String] = []

    @Flag(help: "Print only the per-epoch lines (no progress bar or periodic step lines).")
    var quiet = false

    @Option(help: ArgumentHelp("Progress line (and TensorBoard step scalars) every N steps; default training.log_every, or about ten per epoch.", valueName: "N"))
    var logEvery: Int?

    func run() throws {
        // Before anything slow: a stop signal during start-up is seen, and ends the job with 76.
        installStopSignalHandlers()
        let communicator = MPICommunicator()
        installStopSignalHandlers()
        let (trainer, lock) = try setUp(communicator)
        trainer.synchronizeInitialState()
        if trainer.stoppedDuringStartup {
            if communicator.isRoot {
                printError("cohort: stopped by a signal during start-up: no step was taken and no checkpoint written (exit \(Train.stoppedBeforeFirstStepExitCode): run the same command again)")
            }
            communicator.finalize()
            throw ExitCode(Train.stoppedBeforeFirstStepExitCode)
        }
        let outcome: Trainer.Outcome
        do {
            if communicator.isRoot { printLine(trainer.model.summary()) }
            outcome = try trainer.run()
        } catch let failure as AgreedFailure {
            // Every rank knows; one reports, all leave together.
            if failure.reporter { printError("cohort: \(failure.message)") }
            communicator.finalize()
            throw ExitCode(1)
        } catch {
            // Only this rank knows: report it with the rank and end the whole job now.
            let message = (error as? CohortError)?.message ?? "\(error)"
            printError("cohort: rank \(communicator.rank): \(message)")
            if communicator.size > 1 { communicator.abort(code: 1) }
            communicator.finalize()
            throw ExitCode(1)
        }
        RunSummary(trainer: trainer, communicator: communicator).report(outcome: outcome)
        communicator.finalize()
        withExtendedLifetime(lock) {}  // held to the end of the run
        if outcome == .interrupted { throw ExitCode(Train.interruptedExitCode) }
    }

    /// The config read, the run directory locked (rank 0: one job per run directory), the trainer
    /// built. Set-up touches only local state, so a rank that fails here cannot leave the others
    /// waiting in a collective. The ranks then agree: the lowest failing rank reports.
    private func setUp(_ communicator: MPICommunicator) throws -> (Trainer, RunDirectoryLock?) {
        var made: (Trainer, RunDirectoryLock?)?
        var setupError: CohortError?
        do {
            let config = try TrainConfig.load(path: config, overrides: overrides).resolvingPublishedModel()
            var lock: RunDirectoryLock?
            if communicator.isRoot {
                lock = try RunDirectoryLock(directory: config.runDirectory)
                try Checkpoint.prepareDirectory("\(config.runDirectory)/checkpoints")
            }
            let trainer = try Trainer(config: config, communicator: communicator, resume: resume)
            if communicator.isRoot {
                trainer.progress = Progress.forStandardOutput(quiet: quiet, every: logEvery ?? config.training.logEvery,
                                                              stepsPerEpoch: trainer.stepsThisEpoch)
                trainer.recorder = try RunRecorder(directory: config.runDirectory, configText: config.text, tensorBoard: config.tensorBoard,
                                                   task: trainer.task)
            }
            made = (trainer, lock)
        } catch let error as CohortError {
            setupError = error
        } catch {
            setupError = CohortError("\(error)")
        }
        let rank = communicator.rank
        let worst = communicator.allReduceMax([setupError == nil ? 0 : Double(communicator.size - rank)])[0]
        guard worst == 0, let made else {
            if let setupError, Int(worst) == communicator.size - rank { printError("cohort: \(setupError.message)") }
            communicator.finalize()
            throw ExitCode(1)
        }
        return made
    }

    /// Exit status after a stop signal: the checkpoint is written; run again with --resume auto.
    static let interruptedExitCode: Int32 = 75
    /// Exit status after a stop signal during start-up: no step taken, nothing written.
    static let stoppedBeforeFirstStepExitCode: Int32 = 76
}
