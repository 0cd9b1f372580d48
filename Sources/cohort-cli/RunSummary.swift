import Cohort
import Foundation

/// The closing lines of `cohort train` (rank 0; the figures are gathered from every rank):
/// the last checkpoint's write, the time to the first step, each rank's step phases, memory,
/// and the reports of the last evaluation.
struct RunSummary {
    let trainer: Trainer
    let communicator: Communicator

    func report(outcome: Trainer.Outcome) {
        let memory = MemoryUse.peakResident(communicator)
        let perNode = MemoryUse.perNode(holding: trainer.modelStateRegions, communicator)
        let phases = stepPhases()
        guard communicator.isRoot else { return }
        if let seconds = trainer.lastCheckpointSeconds {
            printLine(String(format: "last checkpoint written in %.3f s (%.1f MB of parameters and optimizer state)", seconds,
                             Double(trainer.model.parameters.count * 4 * (1 + trainer.optimizer.slots.count)) / 1e6))
        }
        if let first = trainer.timings.firstStepAt {
            printLine(String(format: "process start to first step %.2f s; gradient all-reduce %.1f µs per step (%d floats)",
                             first, phases.slowestAllReduce * 1e6, trainer.model.parameters.count)
                      + (trainer.timings.firstStepStartedAt.map { String(format: "; the first step began %.2f s after process start", $0) } ?? ""))
            printLine(phaseLine(phases.byRank))
        }
        let loaderWait = trainer.history.last?.loaderWait.map { String(format: "; loader wait in the last epoch %.1f%% of step time", $0 * 100) }
            ?? (trainer.trainingSeconds > 0 ? String(format: "; loader wait %.1f%% of step time", trainer.loader.waitSeconds / trainer.trainingSeconds * 100) : "")
        printLine("peak resident memory per rank: " + memory.map { String(format: "%.0f MB", $0 / 1e6) }.joined(separator: ", ") + loaderWait)
        if let perNode {
            printLine(String(format: "memory per node at the end (PSS, shared pages counted once): model state %.1f MB (%@), processes %.1f MB",
                             perNode.modelState / 1e6, trainer.config.training.state.rawValue, perNode.processes / 1e6))
        }
        guard outcome != .interrupted else { return }
        reportEvaluation()
    }

    /// Per-rank step phases in ms, to see a straggler: compute (forward, loss, backward), the
    /// optimizer update, and the all-reduce (with the barrier wait when timing_barrier is on),
    /// gathered on rank 0; and the slowest rank's all-reduce per step, in seconds. Collective.
    private func stepPhases() -> (byRank: [[Double]], slowestAllReduce: Double) {
        let timings = trainer.timings
        let steps = Double(max(timings.allReduceCalls, 1))
        let slowest = communicator.allReduceMax([timings.allReduce / steps])[0]
        let split = communicator.reductionPhaseSeconds
        let perStep = [timings.compute / steps, timings.update / steps, timings.allReduce / steps,
                       median(timings.allReduceTimes), timings.barrier / steps,
                       (split?.wait ?? 0) / steps, (split?.node ?? 0) / steps, (split?.across ?? 0) / steps,
                       (trainer.gradientTurnSeconds ?? 0) / steps]
        let byRank = communicator.gather(perStep.map { ($0 * 1e3).bitPattern }, root: 0).map { $0.map(Double.init(bitPattern:)) }
        return (byRank, slowest)
    }

    private func phaseLine(_ phases: [[Double]]) -> String {
        func column(_ index: Int, _ format: String = "%.3f") -> String {
            phases.map { String(format: format, $0[index]) }.joined(separator: ", ")
        }
        var line = "per step by rank (ms): compute \(column(0, "%.2f")); update \(column(1, "%.2f")); gradient all-reduce \(column(2))"
        if trainer.config.training.timingBarrier {
            line += " (median \(column(3)), after a barrier that waited \(column(4)))"
        } else if communicator.size > 1 {
            line += " (including the wait for the slowest rank)"
        }
        if communicator.reductionPhaseSeconds != nil {
            line += "; of which waiting for the node's ranks \(column(5)), summing within the node \(column(6)), across nodes \(column(7))"
        }
        if trainer.gradientTurnSeconds != nil {
            line += "; turns on the node's gradient sum during backward (part of compute) \(column(8))"
        }
        return line
    }

    /// The last evaluation's report (a language model's figures, a regression's line, a
    /// classification report), saved with the run's files.
    private func reportEvaluation() {
        let saved = "saved \(trainer.config.runDirectory)/report.json, metrics.csv, config.yaml and TensorBoard events"
        if let figures = trainer.finalLanguageModelFigures {
            do {
                try trainer.recorder?.writeLanguageModelReport(loss: figures.loss, accuracy: figures.accuracy, tokens: figures.tokens,
                                                               globalStep: trainer.position.globalStep)
                printLine(saved)
            } catch let error as CohortError {
                printError("cohort: \(error.message)")
            } catch {
                printError("cohort: \(error)")
            }
        }
        if let line = trainer.finalRegressionLine { printLine("test file: " + line) }
        if let report = trainer.finalReport {
            printLine("\nclassification report (test file, \(report.macro.support) rows):\n" + report.table())
            do {
                try trainer.recorder?.writeReport(report)
                printLine(saved)
            } catch let error as CohortError {
                printError("cohort: \(error.message)")
            } catch {
                printError("cohort: \(error)")
            }
        }
    }
}
