import CCohort
import Foundation

/// What a checkpoint holds of a training run, and how a run is put back from it: capture
/// (`makeCheckpoint`) and restore (`restore(from:)`) side by side, one owner for every key:
///   parameters/…, optimizer/<slot>/…, buffers/…    the model and the optimizer's state
///   state/generators/rank_<r>                        every rank's dropout generators
///   metrics/…, metrics/epoch_in_progress             the history and the interrupted epoch's sums
///   metrics/callbacks/…, callbacks/best_weights      the callbacks' state
///   attributes                                       position, world size, batch size, config
extension Trainer {
    public func saveCheckpoint(improved: Bool = false) throws {
        // A checkpoint stands for every replica, so it is written only once they are shown equal.
        try checkReplicasAgree()
        let partial = communicator.allReduceSum([epochTotals.loss, epochTotals.correct, epochTotals.rows])
        try writeReadTrace()
        // Each rank's generators go to rank 0, which writes them all (rank order, layer order).
        let generatorWords = model.randomizedLayers.flatMap(\.generator.stateWords)
        let allGenerators = communicator.gather(generatorWords, root: 0)
        // Only rank 0 writes; the others wait so that no rank runs ahead of a failed write.
        var failure: CohortError?
        if communicator.isRoot {
            do {
                try makeDirectories(checkpointDirectory, for: "checkpoints")
                let path = "\(checkpointDirectory)/checkpoint-\(String(format: "%08d", position.globalStep)).h5"
                guard cohort_sum(model.parameters.values.baseAddress!, model.parameters.count).isFinite else {
                    throw CohortError("step \(position.globalStep): parameters are not finite; no checkpoint written")
                }
                var checkpoint = makeCheckpoint()
                for (rank, words) in allGenerators.enumerated() where !words.isEmpty {
                    checkpoint.words["generators/rank_\(rank)"] = words
                }
                checkpoint.metrics["epoch_in_progress"] = partial + [epochTotals.seconds]
                if let state = callbacks.earlyStopping?.state { checkpoint.metrics[CheckpointSchema.earlyStoppingState] = state }
                if let state = callbacks.plateau?.state { checkpoint.metrics[CheckpointSchema.plateauState] = state }
                if let weights = callbacks.bestWeights { checkpoint.tensors[CheckpointSchema.bestWeights] = ([weights.count], weights) }
                let writeStart = monotonicNanoseconds()
                fault?.limitFileSize(before: position.globalStep, bytes: checkpoint.datasetBytes / 2)
                try checkpoint.writeAtomically(to: path, crashForTesting: fault?.crashesDuringCheckpoint(after: position.globalStep) == true)
                lastCheckpointSeconds = seconds(since: writeStart)
                try pruneCheckpoints()
                if improved {
                    try checkpoint.writeAtomically(to: "\(checkpointDirectory)/best.h5")
                    log("saved best.h5 (\(config.checkpoint.monitor.rawValue) improved)")
                }
                lastTimedCheckpoint = monotonicNanoseconds()
            } catch let error as CohortError {
                failure = error
            } catch {
                failure = CohortError("\(checkpointDirectory): \(error)")
            }
        }
        let failed = communicator.allReduceMax([failure == nil ? 0 : 1])[0] > 0
        if let failure { throw AgreedFailure(failure.message, reporter: true) }
        if failed { throw AgreedFailure("rank 0 could not write the checkpoint", reporter: false) }
    }

    func makeCheckpoint() -> Checkpoint {
        var checkpoint = Checkpoint(position: position, worldSize: communicator.size, batchSize: config.training.rowsPerStep,
                                    optimizerSteps: optimizer.stepCount, config: config.text)
        checkpoint.dataFingerprint = dataFingerprint
        checkpoint.classNames = train.classNames
        checkpoint.tensors.merge(carried) { kept, _ in kept }
        checkpoint.tokenizerJSON = carriedTokenizer
        if let tokenized = train as? TokenizedSource {
            checkpoint.tokenizer = tokenized.tokenizer
            if !tokenized.merges.isEmpty { checkpoint.merges = tokenized.merges }
        }
        (checkpoint.inputShape, checkpoint.inputLayout, checkpoint.loss) = (train.sampleShape, train.sampleLayout, config.loss.name)
        checkpoint.inputScale = (train as? LabeledData).map { Double($0.scale) } ?? 1
        let absolute = { (path: String) in URL(fileURLWithPath: path).standardizedFileURL.path }
        checkpoint.dataFiles = ["train=" + absolute(config.data.train)] + (config.data.test.map { ["test=" + absolute($0)] } ?? [])
        // Views, not copies: rank 0 writes between steps, and no rank of its node updates the
        // shared state before rank 0 has joined the next gradient sum.
        let parameters = model.parameters
        for entry in parameters.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            checkpoint.views[CheckpointSchema.parameter(entry.name)] = (entry.shape, UnsafeBufferPointer(rebasing: parameters.values[range]))
            for slot in optimizer.slots {
                let name = CheckpointSchema.optimizerSlot(slot.name, entry.name)
                checkpoint.views[name] = (entry.shape, UnsafeBufferPointer(rebasing: slot.buffer[range]))
                // Other ranks' slices of the node's moments: this rank reads them only here.
                if let own = statePlacement.ownSlice?.clamped(to: range) {
                    let others = own.isEmpty ? [range] : [range.lowerBound..<own.lowerBound, own.upperBound..<range.upperBound]
                    checkpoint.sharedPartsToUnmap[name] = others.filter { !$0.isEmpty }.map { UnsafeBufferPointer(rebasing: slot.buffer[$0]) }
                }
            }
        }
        for entry in parameters.bufferEntries {
            checkpoint.tensors[CheckpointSchema.buffer(entry.name)] = (entry.shape, Array(parameters.buffers[entry.offset..<(entry.offset + entry.count)]))
        }
        if let normalization {
            checkpoint.tensors[CheckpointSchema.normalizationMean] = ([normalization.mean.count], normalization.mean.map(Float.init))
            checkpoint.tensors[CheckpointSchema.normalizationStd] = ([normalization.std.count], normalization.std.map(Float.init))
        }
        checkpoint.metrics["train_loss"] = history.map(\.trainLoss)
        checkpoint.metrics["train_accuracy"] = history.map(\.trainAccuracy)
        checkpoint.metrics["test_loss"] = history.map { $0.testLoss ?? .nan }
        checkpoint.metrics["test_accuracy"] = history.map { $0.testAccuracy ?? .nan }
        checkpoint.metrics["validation_loss"] = history.map { $0.validationLoss ?? .nan }
        checkpoint.metrics["validation_accuracy"] = history.map { $0.validationAccuracy ?? .nan }
        checkpoint.metrics["samples_per_second"] = history.map(\.samplesPerSecond)
        checkpoint.metrics["seconds"] = history.map(\.seconds)
        return checkpoint
    }

    /// Keeps the newest `keep_last` checkpoints.
    func pruneCheckpoints() throws {
        let files = Trainer.checkpoints(in: checkpointDirectory)
        for stale in files.dropFirst(config.checkpoint.keepLast) {
            try? FileManager.default.removeItem(atPath: stale)
        }
    }

    /// Checkpoint files of a directory, newest (highest step) first.
    public static func checkpoints(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("checkpoint-") && $0.hasSuffix(".h5") }.sorted(by: >).map { "\(directory)/\($0)" }
    }

    /// `auto` resolves to the newest checkpoint that verifies in `directory`; each one skipped is
    /// reported. `if-any` does the same, or returns nil when the run directory has no checkpoint
    /// yet (a batch script that resubmits itself passes it every time).
    static func resolve(_ request: String, directory: String, report: (String) -> Void) throws -> Checkpoint? {
        guard request == "auto" || request == "if-any" else { return try Checkpoint.read(from: request) }
        for candidate in Trainer.checkpoints(in: directory) {
            do {
                let checkpoint = try Checkpoint.read(from: candidate)
                report("resuming from \(candidate)")
                return checkpoint
            } catch let error as CohortError {
                report("skipping \(candidate): \(error.message)")
            }
        }
        if request == "if-any" {
            report("no checkpoint in \(directory): starting afresh (--resume if-any)")
            return nil
        }
        throw CohortError("\(directory): no checkpoint to resume from (--resume auto)")
    }

    /// `training.keep_global_batch`: the rows per rank and step that keep the checkpoint's global
    /// batch on `ranks` ranks. The micro-batch (memory per rank) stays when it divides them;
    /// otherwise the largest one below it that does, with as many micro-batches as it takes.
    static func keepingGlobalBatch(_ training: TrainingConfig, saved: (ranks: Int, rows: Int), ranks: Int) throws -> (TrainingConfig, String?) {
        let global = saved.ranks * saved.rows
        guard ranks * training.rowsPerStep != global else { return (training, nil) }
        guard global % ranks == 0 else {
            throw CohortError("training.keep_global_batch: the checkpoint's global batch \(global) (\(saved.ranks) × \(saved.rows)) does not split evenly over \(ranks) ranks; run on a rank count that divides it")
        }
        let rows = global / ranks
        var kept = training
        kept.batchSize = (1...min(training.batchSize, rows)).last { rows % $0 == 0 } ?? 1
        kept.accumulateSteps = rows / kept.batchSize
        let line = "training.keep_global_batch: \(ranks) rank(s) × batch \(kept.batchSize) × \(kept.accumulateSteps) micro-batch(es) = \(global), the global batch of the checkpoint (\(saved.ranks) × \(saved.rows)); the configuration says \(ranks) × \(training.batchSize) × \(training.accumulateSteps)"
        return (kept, line)
    }

    func restore(_ checkpoint: Checkpoint, request: String) throws {
        let parameters = model.parameters
        // The data a resume continues on: the same file mid-epoch; another at an epoch boundary
        // (fine-tuning on new data) is said and allowed.
        if let saved = checkpoint.dataFingerprint, saved != dataFingerprint {
            guard checkpoint.position.stepInEpoch == 0 else {
                throw CohortError("\(request): stopped mid-epoch on training data of \(saved), but \(train.path) holds \(dataFingerprint); resume on the data it was saved with, or from an epoch-end checkpoint")
            }
            if communicator.isRoot { log("training data changed since \(request): was \(saved), now \(dataFingerprint) (\(train.path)); continuing at an epoch boundary") }
        }
        if let stored = checkpoint.normalization, let normalization,
           stored.mean != normalization.mean.map({ Double(Float($0)) }) || stored.std != normalization.std.map({ Double(Float($0)) }) {
            throw CohortError("\(request): the model was trained with mean \(stored.mean) and std \(stored.std), but \(train.path) now gives \(normalization.mean) and \(normalization.std); resume with the training file it was saved with (or set data.mean and data.std)")
        }
        try checkpoint.restoreModel(model, source: request)
        for entry in parameters.entries {
            for slot in optimizer.slots {
                guard let state = checkpoint.tensors[CheckpointSchema.optimizerSlot(slot.name, entry.name)], state.shape == entry.shape else {
                    throw CohortError("\(request): no \(slot.name) state for \(entry.name); was it written with another optimizer?")
                }
                state.values.withUnsafeBufferPointer {
                    (slot.buffer.baseAddress! + entry.offset).update(from: $0.baseAddress!, count: entry.count)
                }
            }
        }
        // This rank's generators, when the checkpoint has them (a run resumed on more ranks
        // than it was saved with starts the new ranks' streams afresh).
        if let words = checkpoint.words["generators/rank_\(communicator.rank)"] {
            let layers = model.randomizedLayers
            guard words.count == layers.count * 4 else {
                throw CohortError("\(request): holds \(words.count / 4) generator state(s) for rank \(communicator.rank), the model has \(layers.count)")
            }
            for (index, layer) in layers.enumerated() { layer.generator = Generator(state: Array(words[(index * 4)..<(index * 4 + 4)])) }
        }
        carried = checkpoint.tensors.filter { $0.key.hasPrefix(CheckpointSchema.huggingFacePrefix) }
        carriedTokenizer = checkpoint.tokenizerJSON
        if let state = checkpoint.metrics[CheckpointSchema.earlyStoppingState] { callbacks.earlyStopping?.restore(state) }
        if let state = checkpoint.metrics[CheckpointSchema.plateauState] { callbacks.plateau?.restore(state) }
        if let weights = checkpoint.tensors[CheckpointSchema.bestWeights]?.values, weights.count == parameters.count { callbacks.bestWeights = weights }
        optimizer.stepCount = checkpoint.optimizerSteps
        position = checkpoint.position
        // Rank 0 carries the global sums of the interrupted epoch; the epoch-end all-reduce adds the rest.
        if let partial = checkpoint.metrics["epoch_in_progress"], partial.count == 4, position.stepInEpoch > 0 {
            epochTotals = communicator.isRoot ? (partial[0], partial[1], partial[2], partial[3]) : (0, 0, 0, partial[3])
            resumedRows = communicator.isRoot ? partial[2] : 0
        }
        // Another rank count or batch size: continue from the same number of samples seen in the epoch.
        let savedGlobalBatch = checkpoint.worldSize * checkpoint.batchSize
        if savedGlobalBatch != globalBatch, position.stepInEpoch > 0 {
            guard config.data.sampling == .global else {
                throw CohortError("\(request): a sharded run resumes mid-epoch only with the rank count and batch size it was saved with; resume from an epoch-end checkpoint")
            }
            let seenInEpoch = position.stepInEpoch * savedGlobalBatch
            guard seenInEpoch % globalBatch == 0 else {
                throw CohortError("\(request): stopped after \(seenInEpoch) samples of epoch \(position.epoch + 1), not a multiple of the new global batch \(globalBatch); resume with a global batch that divides it, or from an epoch-end checkpoint")
            }
            position.stepInEpoch = seenInEpoch / globalBatch
        }
        if savedGlobalBatch != globalBatch, communicator.isRoot {
            log("global batch changes from \(savedGlobalBatch) (\(checkpoint.worldSize) × \(checkpoint.batchSize)) to \(globalBatch) (\(communicator.size) × \(config.training.rowsPerStep))")
        }
        let restoredHistory = checkpoint.metrics["train_loss"]?.count ?? 0
        history = (0..<restoredHistory).map { index in
            func metric(_ name: String) -> Double { checkpoint.metrics[name].flatMap { index < $0.count ? $0[index] : nil } ?? .nan }
            func optional(_ name: String) -> Double? { metric(name).isNaN ? nil : metric(name) }
            return EpochReport(epoch: index + 1, trainLoss: metric("train_loss"), trainAccuracy: metric("train_accuracy"),
                               testLoss: optional("test_loss"), testAccuracy: optional("test_accuracy"),
                               validationLoss: optional("validation_loss"), validationAccuracy: optional("validation_accuracy"),
                               samplesPerSecond: metric("samples_per_second"), seconds: metric("seconds"))
        }
        if communicator.isRoot {
            log("resumed at epoch \(position.epoch + 1), step \(position.stepInEpoch) (\(position.globalStep) steps done)")
        }
    }
}
