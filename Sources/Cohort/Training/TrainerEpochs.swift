import Foundation

/// An epoch's edges: its end (figures agreed over the ranks, evaluation, callbacks, the report
/// and the checkpoint), and a stop inside it.
extension Trainer {
    /// The end of an epoch, watched as a step's collectives are: returns whether a callback stops the run.
    func endEpoch(started: UInt64, waitAtEpochStart: Double) throws -> Bool {
        try watched(step: position.globalStep) {
            let report = try finishEpoch(started: started, waitAtEpochStart: waitAtEpochStart)
            let decision = callbacks.epochEnded(report, parameters: UnsafeBufferPointer(model.parameters.values),
                                                baseRate: Double(config.optimizer.learningRate))
            if communicator.isRoot { decision.lines.forEach(log) }
            if let weights = decision.restore { setParameters(weights) }
            let last = position.epoch == config.training.epochs || decision.stop
            if last || (config.checkpoint.everyEpochs > 0 && position.epoch % config.checkpoint.everyEpochs == 0) {
                try saveCheckpoint(improved: isBest(report))
            }
            return decision.stop
        }
    }

    /// A stop inside an epoch (signal or max_steps): the loader ends, a checkpoint is written, and
    /// a metrics row is left for the steps taken (the epoch's number, its global step). A language
    /// model's recipe is N steps, which rarely end an epoch: with `evaluating` it evaluates the
    /// validation file then too, for the row and report.json.
    func stopMidEpoch(started: UInt64, evaluating: Bool, line: String) throws {
        // Armed until the process ends: the command's closing collectives are watched too.
        watchdog?.arm(step: position.globalStep)
        loader.endEpoch()
        epochTotals.seconds += seconds(since: started)
        try saveCheckpoint()
        if communicator.isRoot { log(line) }
        let evaluation = evaluating ? try evaluateTest() : nil
        let sums = communicator.allReduceSum([epochTotals.loss, epochTotals.correct, epochTotals.rows])
        guard sums[2] > 0 else { return }
        let report = EpochReport(epoch: position.epoch + 1, trainLoss: sums[0] / max(sums[2], 1),
                                 trainAccuracy: task.hasAccuracy ? sums[1] / max(sums[2], 1) : .nan,
                                 testLoss: evaluation?.loss, testAccuracy: evaluation?.accuracy,
                                 samplesPerSecond: sums[2] / max(epochTotals.seconds, 1e-9), seconds: epochTotals.seconds)
        guard communicator.isRoot else { return }
        if let evaluation {
            log("evaluation after \(position.globalStep) steps: " + languageModelFigures(loss: evaluation.loss, accuracy: evaluation.accuracy))
        }
        recorder?.epoch(report, globalStep: position.globalStep, learningRate: Double(learningRate))
    }

    /// The epoch's figures agreed over the ranks, the test file (and validation rows) evaluated,
    /// the report logged and recorded; the position moves to the next epoch.
    private func finishEpoch(started: UInt64, waitAtEpochStart: Double) throws -> EpochReport {
        epochTotals.seconds += seconds(since: started)
        let sums = communicator.allReduceSum([epochTotals.loss, epochTotals.correct, epochTotals.rows])
        let seconds = epochTotals.seconds
        finishedEpochSeconds += seconds
        epochTotals = (0, 0, 0, 0)
        resumedRows = 0
        let waited = loader.waitSeconds - waitAtEpochStart
        loader.endEpoch()
        let evaluation = try evaluateTest()
        var report = EpochReport(
            epoch: position.epoch + 1,
            trainLoss: sums[0] / max(sums[2], 1),
            trainAccuracy: task.hasAccuracy ? sums[1] / max(sums[2], 1) : .nan,
            testLoss: evaluation?.loss, testAccuracy: evaluation?.accuracy,
            samplesPerSecond: sums[2] / max(seconds, 1e-9), seconds: seconds)
        report.loaderWait = waited / max(seconds, 1e-9)
        if trainingRows < train.rows {
            // Validation reads are not training reads: keep them out of the read trace.
            let trace = train.readLog
            train.readLog = nil
            defer { train.readLog = trace }
            let validation = try Cohort.evaluate(model: model, data: train, task: task, rows: trainingRows..<train.rows, loss: config.loss,
                                                 communicator: communicator, batchSize: config.training.evalBatchSize)
            (report.validationLoss, report.validationAccuracy) = (validation.loss, validation.accuracy)
        }
        history.append(report)
        position.epoch += 1
        position.stepInEpoch = 0
        if communicator.isRoot {
            progress?.finishEpoch()
            let shuffleBuffer = config.data.sampling == .sharded ? (rows: loader.peakBufferRows, bytes: loader.bufferBytes) : nil
            log(report.line(epochs: config.training.epochs, task: task, shuffleBuffer: shuffleBuffer))
            recorder?.epoch(report, globalStep: position.globalStep, learningRate: Double(learningRate))
        }
        return report
    }

    /// Evaluates the test file, keeping the classification report.
    private func evaluateTest() throws -> (loss: Double, accuracy: Double)? {
        guard let test else { return nil }
        let result = try Cohort.evaluate(model: model, data: test, task: task, loss: config.loss, communicator: communicator,
                                         batchSize: config.training.evalBatchSize)
        finalReport = task.reportsClasses ? result.report(classNames: test.classNames) : nil
        finalRegressionLine = result.regressionLine
        if case .languageModel = task { finalLanguageModelFigures = (result.loss, result.accuracy, task.targets(rows: result.rows)) }
        return (result.loss, result.accuracy)
    }

    /// Whether the report improves the monitored metric (for `checkpoint.keep_best`).
    private func isBest(_ report: EpochReport) -> Bool {
        guard config.checkpoint.keepBest, let value = config.checkpoint.monitor.value(in: report), value.isFinite else { return false }
        let earlier = history.dropLast().compactMap { config.checkpoint.monitor.value(in: $0) }.filter(\.isFinite)
        guard let best = config.checkpoint.monitor.lowerIsBetter ? earlier.min() : earlier.max() else { return true }
        return config.checkpoint.monitor.lowerIsBetter ? value < best : value > best
    }

    /// Overwrites the parameters with `weights` on every rank (each writes its own slice where they are shared).
    private func setParameters(_ weights: [Float]) {
        let slice = statePlacement.ownSlice ?? 0..<weights.count
        weights.withUnsafeBufferPointer {
            (model.parameters.values.baseAddress! + slice.lowerBound).update(from: $0.baseAddress! + slice.lowerBound, count: slice.count)
        }
        statePlacement.publish()
    }
}
