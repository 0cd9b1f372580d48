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
        let rank = communicator.rank

        // Set-up touches only local state, so a rank that fails here cannot leave the others
        // waiting in a collective. The ranks then agree: the lowest failing rank reports.
        var trainer: Trainer?
        var setupError: CohortError?
        var lock: RunDirectoryLock?
        do {
            let config = try TrainConfig.load(path: config, overrides: overrides).resolvingPublishedModel()
            // Before anything is read or written: one job per run directory.
            if communicator.isRoot {
                lock = try RunDirectoryLock(directory: config.runDirectory)
                try Checkpoint.prepareDirectory("\(config.runDirectory)/checkpoints")
            }
            let made = try Trainer(config: config, communicator: communicator, resume: resume)
            if communicator.isRoot {
                made.progress = Progress.forStandardOutput(quiet: quiet, every: logEvery ?? config.training.logEvery,
                                                           stepsPerEpoch: made.stepsThisEpoch)
                made.recorder = try RunRecorder(directory: config.runDirectory, configText: config.text, tensorBoard: config.tensorBoard,
                                                task: made.task)
            }
            trainer = made
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
            printError("cohort: rank \(rank): \(message)")
            if communicator.size > 1 { communicator.abort(code: 1) }
            communicator.finalize()
            throw ExitCode(1)
        }
        let memory = trainer.peakResidentMemory()
        let perNode = trainer.memoryPerNode()
        let steps = Double(max(trainer.allReduceCalls, 1))
        let reduce = communicator.allReduceMax([trainer.allReduceSeconds / steps])[0]
        // Per-rank step phases in ms, to see a straggler: compute (forward, loss, backward),
        // the optimizer update, and the all-reduce (with the barrier wait when timing_barrier is on).
        let split = communicator.reductionPhaseSeconds
        let perStep = [trainer.computeSeconds / steps, trainer.updateSeconds / steps, trainer.allReduceSeconds / steps,
                       median(trainer.allReduceTimes), trainer.barrierSeconds / steps,
                       (split?.wait ?? 0) / steps, (split?.node ?? 0) / steps, (split?.across ?? 0) / steps,
                       (trainer.gradientTurnSeconds ?? 0) / steps]
        let phases = communicator.gather(perStep.map { ($0 * 1e3).bitPattern }, root: 0).map { $0.map(Double.init(bitPattern:)) }
        if communicator.isRoot {
            if let seconds = trainer.lastCheckpointSeconds {
                printLine(String(format: "last checkpoint written in %.3f s (%.1f MB of parameters and optimizer state)", seconds,
                                 Double(trainer.model.parameters.count * 4 * (1 + trainer.optimizer.slots.count)) / 1e6))
            }
            if let first = trainer.firstStepAt {
                printLine(String(format: "process start to first step %.2f s; gradient all-reduce %.1f µs per step (%d floats)",
                                 first, reduce * 1e6, trainer.model.parameters.count)
                          + (trainer.firstStepStartedAt.map { String(format: "; the first step began %.2f s after process start", $0) } ?? ""))
                func column(_ index: Int, _ format: String = "%.3f") -> String {
                    phases.map { String(format: format, $0[index]) }.joined(separator: ", ")
                }
                var line = "per step by rank (ms): compute \(column(0, "%.2f")); update \(column(1, "%.2f")); gradient all-reduce \(column(2))"
                if trainer.config.training.timingBarrier {
                    line += " (median \(column(3)), after a barrier that waited \(column(4)))"
                } else if communicator.size > 1 {
                    line += " (including the wait for the slowest rank)"
                }
                if split != nil {
                    line += "; of which waiting for the node's ranks \(column(5)), summing within the node \(column(6)), across nodes \(column(7))"
                }
                if trainer.gradientTurnSeconds != nil {
                    line += "; turns on the node's gradient sum during backward (part of compute) \(column(8))"
                }
                printLine(line)
            }
            let loaderWait = trainer.history.last?.loaderWait.map { String(format: "; loader wait in the last epoch %.1f%% of step time", $0 * 100) }
                ?? (trainer.trainingSeconds > 0 ? String(format: "; loader wait %.1f%% of step time", trainer.loader.waitSeconds / trainer.trainingSeconds * 100) : "")
            printLine("peak resident memory per rank: " + memory.map { String(format: "%.0f MB", $0 / 1e6) }.joined(separator: ", ") + loaderWait)
            if let perNode {
                printLine(String(format: "memory per node at the end (PSS, shared pages counted once): model state %.1f MB (%@), processes %.1f MB",
                                 perNode.modelState / 1e6, trainer.config.training.state.rawValue, perNode.processes / 1e6))
            }
        }
        if communicator.isRoot, outcome != .interrupted, let figures = trainer.finalLanguageModelFigures {
            do {
                try trainer.recorder?.writeLanguageModelReport(loss: figures.loss, accuracy: figures.accuracy, tokens: figures.tokens,
                                                               globalStep: trainer.position.globalStep)
                printLine("saved \(trainer.config.runDirectory)/report.json, metrics.csv, config.yaml and TensorBoard events")
            } catch let error as CohortError {
                printError("cohort: \(error.message)")
            }
        }
        if communicator.isRoot, outcome != .interrupted, let line = trainer.finalRegressionLine {
            printLine("test file: " + line)
        }
        if communicator.isRoot, outcome != .interrupted, let report = trainer.finalReport {
            printLine("\nclassification report (test file, \(report.macro.support) rows):\n" + report.table())
            do {
                try trainer.recorder?.writeReport(report)
                printLine("saved \(trainer.config.runDirectory)/report.json, metrics.csv, config.yaml and TensorBoard events")
            } catch let error as CohortError {
                printError("cohort: \(error.message)")
            }
        }
        communicator.finalize()
        withExtendedLifetime(lock) {}  // held to the end of the run
        if outcome == .interrupted { throw ExitCode(Train.interruptedExitCode) }
    }

    /// Exit status after a stop signal: the checkpoint is written; run again with --resume auto.
    static let interruptedExitCode: Int32 = 75
    /// Exit status after a stop signal during start-up: no step taken, nothing written.
    static let stoppedBeforeFirstStepExitCode: Int32 = 76
}
