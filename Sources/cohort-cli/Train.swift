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
        """
    )

    @Argument(help: "The YAML config (see configs/README.md).")
    var config: String

    @Option(help: ArgumentHelp("Resume from a checkpoint file, or 'auto' for the newest valid one in <run_dir>/checkpoints.", valueName: "path|auto"))
    var resume: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key, e.g. --set training.epochs=3 (repeatable).", valueName: "key=value"))
    var overrides: [String] = []

    func run() throws {
        let communicator = MPICommunicator()
        let rank = communicator.rank

        // Set-up touches only local state, so a rank that fails here cannot leave the others
        // waiting in a collective. The ranks then agree: the lowest failing rank reports.
        var trainer: Trainer?
        var setupError: CohortError?
        do {
            let config = try TrainConfig.load(path: config, overrides: overrides)
            trainer = try Trainer(config: config, communicator: communicator, resume: resume)
        } catch let error as CohortError {
            setupError = error
        } catch {
            setupError = CohortError("\(error)")
        }
        let worst = communicator.allReduceMax([setupError == nil ? 0 : Double(communicator.size - rank)])[0]
        if worst > 0 {
            if let setupError, Int(worst) == communicator.size - rank { printError("cohort: \(setupError.message)") }
            communicator.finalize()
            throw ExitCode(1)
        }
        guard let trainer else { fatalError("unreachable: set-up succeeded without a trainer") }

        do {
            trainer.synchronizeInitialState()
            if communicator.isRoot { printLine(trainer.model.summary()) }
            try trainer.run()
        } catch let error as AgreedStop {
            // Another rank (rank 0) has reported the error; every rank leaves together.
            _ = error
            communicator.finalize()
            throw ExitCode(1)
        } catch let error as CohortError {
            if communicator.size > 1 {
                printError("cohort: rank \(rank): \(error.message)")
                communicator.abort(code: 1)
            }
            printError("cohort: \(error.message)")
            communicator.finalize()
            throw ExitCode(1)
        }
        communicator.finalize()
    }
}
