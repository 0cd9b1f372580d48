import Foundation

/// What a run says (rank 0) and the checks it leaves for the tests: the first line, the
/// progress of each step, the read trace, the replicas' agreement.
extension Trainer {
    /// The run's first line (rank 0), with the schedule's warning, and the clean-up before the first step.
    func announce() {
        progress?.unit = task.rateUnit
        guard communicator.isRoot else { return }
        let accumulation = config.training.accumulateSteps > 1 ? " × \(config.training.accumulateSteps) accumulation steps" : ""
        log("cohort: \(communicator.size) rank(s) × batch \(config.training.batchSize)\(accumulation) = global batch \(globalBatch); "
            + "\(stepsThisEpoch) steps per epoch; \(model.parameters.count) parameters; \(trainingRows) training rows"
            + (trainingRows < train.rows ? ", \(train.rows - trainingRows) validation rows" : "")
            + (config.data.sampling == .sharded ? "; sharded sampling" : "")
            + (communicator.size > 1 ? "; gradient all-reduce: \(gradientAllReduce)" : "")
            + (statePlacement.description.map { "; " + $0 } ?? "")
            + (synchronization is NodeGradientSumStrategy ? "; gradients once per node (each rank adds its own in turn during backward)" : "")
            + (config.training.recompute == .blocks ? "; Transformer blocks computed again in backward (activation checkpointing)" : ""))
        for path in Checkpoint.removeStaleTemporaries(in: checkpointDirectory) { log("removed \(path), left by a writer that was killed") }
        if position.globalStep == 0 {
            let runSteps = min(totalSteps, config.training.maxSteps ?? totalSteps)
            let keys = "training.epochs \(config.training.epochs)" + (config.training.maxSteps.map { ", training.max_steps \($0)" } ?? "")
            if let warning = config.optimizer.schedule.warning(runSteps: runSteps, epochSteps: totalSteps, keys: keys) { log(warning) }
        }
    }

    /// Progress on rank 0: a live bar, plain lines, and TensorBoard step scalars.
    func reportStep(started: UInt64) {
        let elapsed = epochTotals.seconds + seconds(since: started)
        let loss = epochTotals.loss / max(epochTotals.rows, 1)
        // Rank 0's own rows stand for every rank's; those before a resume are every rank's already.
        let rate = ((epochTotals.rows - resumedRows) * Double(communicator.size) + resumedRows) / max(elapsed, 1e-9)
        progress?.update(Progress.Snapshot(epoch: position.epoch + 1, epochs: config.training.epochs, step: position.stepInEpoch,
                                           steps: stepsThisEpoch, loss: loss, learningRate: Double(learningRate),
                                           samplesPerSecond: rate, elapsed: elapsed))
        if let every = progress?.every, position.stepInEpoch % every == 0 {
            recorder?.step(position.globalStep, loss: loss, learningRate: Double(learningRate), samplesPerSecond: rate)
        }
    }

    /// With COHORT_TRACE_READS=DIR (and `data.cache: false`), each rank writes the training rows
    /// it read from the file to DIR/rank-R.txt, one per line: how the tests prove sharded reading.
    func writeReadTrace() throws {
        guard let log = train.readLog, let directory = ProcessInfo.processInfo.environment["COHORT_TRACE_READS"] else { return }
        let text = log.map(String.init).joined(separator: "\n") + "\n"
        let path = "\(directory)/rank-\(communicator.rank).txt"
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw CohortError("\(path): cannot write the read trace")
        }
    }

    /// Replicas must hold identical parameters; a cheap CRC comparison each epoch proves it.
    func checkReplicasAgree() throws {
        guard communicator.size > 1 else { return }
        var crc = CRC32()
        crc.update(name: "", bytes: UnsafeRawBufferPointer(model.parameters.values))
        let value = Double(crc.value)
        let extremes = communicator.allReduceMax([value, -value])
        guard extremes[0] == -extremes[1] else {
            throw CohortError("rank \(communicator.rank): parameters differ between ranks at step \(position.globalStep)")
        }
    }

    /// The memory of the model state (parameters, gradients, optimizer state, the strategy's
    /// scratch), for `MemoryUse.perNode`.
    public var modelStateRegions: [UnsafeRawBufferPointer] {
        [model.parameters.values, model.parameters.gradients].map { UnsafeRawBufferPointer($0) } + optimizer.stateRegions
            + synchronization.scratchRegions
    }
}
