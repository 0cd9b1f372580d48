import CCohort
import Foundation

/// One epoch's figures, as every rank agrees on them.
public struct EpochReport: Sendable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double?
    public var testAccuracy: Double?
    public var validationLoss: Double? = nil
    public var validationAccuracy: Double? = nil
    public var samplesPerSecond: Double
    public var seconds: Double
    /// Share of the epoch's training time spent waiting for data (this rank's loader).
    public var loaderWait: Double? = nil
}

/// The data-parallel training loop. Each step, on every rank:
/// read this rank's rows → forward → loss → backward → all-reduce the flat gradient buffer
/// (summed; the loss already divided by the global batch, so the sum is the mean) → the same
/// optimizer update everywhere. Rank 0 alone writes checkpoints and talks to the user.
public final class Trainer {
    public let config: TrainConfig
    public let communicator: Communicator
    public let model: Model
    public let optimizer: Optimizer
    public let train: any SampleSource
    public let test: (any SampleSource)?
    /// Where each step's rows come from (global or sharded sampling, prefetch, augmentation).
    public let loader: BatchLoader
    /// Rows of the training file used for training; the rest (validation_split) for validation.
    public let trainingRows: Int
    public var globalBatch: Int { communicator.size * config.training.batchSize }
    public private(set) var position: Checkpoint.Position
    public private(set) var history: [EpochReport] = []
    /// Where rank 0's lines go (stdout by default; tests capture them).
    public var log: (String) -> Void = printLine
    public var checkpointDirectory: String { "\(config.runDirectory)/checkpoints" }

    private let logitGradient: UnsafeMutablePointer<Float>

    /// Opens the data, builds the model (rank 0's initial weights broadcast to all) and, when
    /// `resume` is given, restores the complete state from that checkpoint.
    public init(config: TrainConfig, communicator: Communicator, resume: String? = nil) throws {
        self.config = config
        self.communicator = communicator
        let data = config.data
        train = try openSamples(path: data.train, config: data, phase: .random, seed: config.seed,
                                cache: data.cache && data.sampling == .global)
        let classes = train.classes
        test = try data.test.map {
            try openSamples(path: $0, config: data, phase: .zero, seed: config.seed, cache: data.cache, expectedClasses: classes)
        }
        if let test, test.classNames != train.classNames, train.isLanguageModel {
            throw CohortError("\(test.path): its vocabulary (\(test.classes) tokens) differs from \(train.path)'s (\(train.classes)); prepare both with one cohort prepare text")
        }
        if train.isLanguageModel, data.validationSplit > 0 {
            throw CohortError("\(data.train): validation_split does not apply to token files; cohort prepare text writes val.h5 (data.test)")
        }
        if let test, test.sampleShape != train.sampleShape {
            throw CohortError("\(test.path): samples have shape \(test.sampleShape) but \(train.path) has \(train.sampleShape)")
        }
        // validation_split holds out the last rows of the file, before any shuffling.
        trainingRows = train.rows - Int((Double(train.rows) * data.validationSplit).rounded())
        let globalBatch = communicator.size * config.training.batchSize
        guard trainingRows >= globalBatch else {
            throw CohortError("\(train.path): \(trainingRows) training rows are fewer than one global batch (\(communicator.size) ranks × \(config.training.batchSize))")
        }
        let plan: BatchLoader.Plan
        switch data.sampling {
        case .global:
            plan = .global(GlobalSampler(rows: trainingRows, worldSize: communicator.size, rank: communicator.rank,
                                         batchPerRank: config.training.batchSize, seed: config.seed, dropRemainder: data.dropRemainder))
        case .sharded:
            let blockRows = data.blockRows ?? train.chunkRows ?? 1024
            let sharded = ShardedSampler(rows: trainingRows, worldSize: communicator.size, rank: communicator.rank,
                                         batchPerRank: config.training.batchSize, blockRows: blockRows,
                                         bufferRows: data.shuffleBuffer, seed: config.seed, dropRemainder: data.dropRemainder)
            guard sharded.blockCount >= communicator.size else {
                throw CohortError("\(train.path): \(sharded.blockCount) blocks of \(blockRows) rows cannot be dealt to \(communicator.size) ranks; lower data.block_rows")
            }
            plan = .sharded(sharded)
        }
        let augmenter = data.augmentation.isEnabled
            ? Augmenter(augmentation: data.augmentation, shape: train.sampleShape, seed: config.seed, rank: communicator.rank) : nil
        loader = BatchLoader(data: train, plan: plan, batchSize: config.training.batchSize, augmenter: augmenter, prefetch: data.prefetch)
        let maxBatch = max(config.training.batchSize, config.training.evalBatchSize)
        model = try Model(inputShape: train.sampleShape, layers: config.layers, maxBatch: maxBatch, seed: config.seed,
                          communicator: communicator)
        try checkTokenVocabulary(model: model, data: train)
        if train.isRegression {
            guard config.loss == .meanSquaredError else {
                throw CohortError("\(config.data.train): '\(config.data.labels)' holds float targets (regression); use loss: mean_squared_error")
            }
            guard model.outputShape == [train.targetWidth] else {
                throw CohortError("\(config.data.train): has \(train.targetWidth) target(s) per row, but the model's last layer gives \(model.outputShape)")
            }
            if let test, !test.isRegression || test.targetWidth != train.targetWidth {
                throw CohortError("\(test.path): its '\(config.data.labels)' does not hold \(train.targetWidth) float target(s) per row like \(train.path)")
            }
        } else {
            let width = config.loss.outputWidth(classes: train.classes)
            let expected = train.targetsPerRow > 1 ? [train.targetsPerRow, width] : [width]
            guard model.outputShape == expected else {
                throw CohortError("\(config.data.train): has \(train.classes) classes, so \(config.loss.name) needs \(width) outputs, but the model's last layer gives \(model.outputShape)")
            }
        }
        if config.loss == .binaryCrossEntropy, train.classes != 2 {
            throw CohortError("\(config.data.train): binary_cross_entropy needs labels 0 and 1 (2 classes), the file has \(train.classes)")
        }
        optimizer = makeOptimizer(config.optimizer, parameters: model.parameters)
        position = Checkpoint.Position(epoch: 0, stepInEpoch: 0, globalStep: 0, samplesSeen: 0)
        logitGradient = .allocate(capacity: maxBatch * train.targetsPerRow * max(train.classes, train.targetWidth, 1))
        earlyStopping = config.callbacks.earlyStopping
        plateau = config.callbacks.reduceOnPlateau
        if let resume { try restore(from: resume) }
        if ProcessInfo.processInfo.environment["COHORT_TRACE_READS"] != nil { train.readLog = [] }
    }

    /// The first collective of a run. Every rank initialized (or restored) the same weights;
    /// broadcasting rank 0's makes that a guarantee rather than an assumption, as DDP does.
    /// Then, with `training.all_reduce: auto`, the gradients move into memory the communicator
    /// sums fastest (on a node: a shared-memory window), also collectively.
    public func synchronizeInitialState() {
        communicator.broadcast(model.parameters.values, root: 0)
        communicator.broadcast(model.parameters.buffers, root: 0)
        if config.training.allReduce == .auto, let shared = communicator.makeReductionBuffer(count: model.parameters.count) {
            model.parameters.placeGradients(in: shared.buffer)
            gradientAllReduce = shared.description
        }
    }

    /// How the gradients are summed, for the run's first line.
    public private(set) var gradientAllReduce = "MPI_Allreduce"

    /// Total optimizer steps of the run, the T of the learning-rate schedule.
    public private(set) lazy var totalSteps: Int = (0..<config.training.epochs).reduce(0) { $0 + loader.stepsPerEpoch($1) }
    public var stepsThisEpoch: Int { loader.stepsPerEpoch(position.epoch) }

    /// The schedule's rate at this step, times the plateau callback's reduction.
    public var learningRate: Float {
        config.optimizer.schedule.rate(step: position.globalStep, totalSteps: config.optimizer.schedule.totalSteps ?? totalSteps) * Float(plateau?.scale ?? 1)
    }

    // Callbacks and reporting (rank 0 writes; every rank runs the callbacks on the same figures).
    private var earlyStopping: EarlyStopping?
    private var plateau: ReduceOnPlateau?
    private var bestWeights: [Float]?
    public var progress: Progress?
    public var recorder: RunRecorder?
    /// The report of the last evaluation of the test file.
    public private(set) var finalReport: ClassificationReport?
    /// A language model's last evaluation of the validation file: loss, accuracy, target tokens.
    public private(set) var finalLanguageModelFigures: (loss: Double, accuracy: Double, tokens: Int)?

    deinit {
        logitGradient.deallocate()
    }

    // MARK: The loop

    /// How a run ended.
    public enum Outcome: Equatable, Sendable {
        case completed
        /// Stopped at a step boundary by SIGTERM/SIGUSR1, after writing a checkpoint.
        case interrupted
        /// Stopped by `training.max_steps`.
        case stepLimit
        /// Stopped by the early-stopping callback.
        case earlyStopped
    }

    /// Sums of the epoch in progress, kept across a mid-epoch checkpoint so that the epoch's
    /// report after a resume covers the whole epoch.
    private var epochTotals = (loss: 0.0, correct: 0.0, rows: 0.0, seconds: 0.0)
    /// Time in the gradient all-reduce (this rank), for the benchmarks: it includes waiting for
    /// slower ranks unless `training.timing_barrier` puts that wait in `barrierSeconds`.
    public private(set) var allReduceSeconds = 0.0
    public private(set) var allReduceCalls = 0
    /// Each step's gradient all-reduce, in seconds, when `training.timing_barrier` is on.
    public private(set) var allReduceTimes: [Double] = []
    public private(set) var barrierSeconds = 0.0
    /// Forward, loss and backward of this rank's slice (seconds over the run), and the optimizer update.
    public private(set) var computeSeconds = 0.0
    public private(set) var updateSeconds = 0.0
    /// Training seconds of this process (epochs finished here plus the one in progress).
    public var trainingSeconds: Double { finishedEpochSeconds + epochTotals.seconds }
    private var finishedEpochSeconds = 0.0
    /// Seconds the last checkpoint took to write (rank 0).
    public private(set) var lastCheckpointSeconds: Double?
    /// Seconds from process start to the first training step's all-reduce.
    public private(set) var firstStepAt: Double?
    private var lastTimedCheckpoint = monotonicNanoseconds()
    private let fault = FaultInjection.fromEnvironment()

    @discardableResult
    public func run() throws -> Outcome {
        let parameters = model.parameters
        // A row's loss covers `positions` targets (T for a language model's window, else 1),
        // each over `width` outputs; the mean is over every target of the global batch.
        let positions = train.targetsPerRow
        let width = model.outputShape.reduce(1, *) / positions
        let loss = config.loss
        let batchSize = config.training.batchSize
        if communicator.isRoot {
            log("cohort: \(communicator.size) rank(s) × batch \(batchSize) = global batch \(globalBatch); "
                + "\(stepsThisEpoch) steps per epoch; \(parameters.count) parameters; \(trainingRows) training rows"
                + (trainingRows < train.rows ? ", \(train.rows - trainingRows) validation rows" : "")
                + (config.data.sampling == .sharded ? "; sharded sampling" : "")
                + (communicator.size > 1 ? "; gradient all-reduce: \(gradientAllReduce)" : ""))
        }
        installStopSignalHandlers()
        if train.isLanguageModel { progress?.unit = "tokens/s" }
        if communicator.isRoot {
            for path in Checkpoint.removeStaleTemporaries(in: checkpointDirectory) { log("removed \(path), left by a writer that was killed") }
        }
        if let maxSteps = config.training.maxSteps, position.globalStep >= maxSteps {
            if communicator.isRoot { log("nothing to do: \(position.globalStep) steps already taken (training.max_steps \(maxSteps))") }
            return .stepLimit
        }
        while position.epoch < config.training.epochs {
            var started = monotonicNanoseconds()
            let waitAtEpochStart = loader.waitSeconds
            let steps = stepsThisEpoch
            loader.beginEpoch(position.epoch, from: position.stepInEpoch)
            defer { loader.endEpoch() }
            while position.stepInEpoch < steps {
                let input = try loader.next()
                let (x, y, batch, globalCount) = (input.x, input.y, input.count, input.globalCount)
                defer { loader.release(input) }
                parameters.zeroGradients()
                // Buffers (batch-norm running statistics) follow rank 0's, as DDP's broadcast_buffers.
                if parameters.buffers.count > 0 { communicator.broadcast(parameters.buffers, root: 0) }
                var stepLoss = 0.0
                let computeStart = monotonicNanoseconds()
                if batch > 0 {
                    let outputs = model.forward(x, batch: batch, training: true)
                    let step = loss.evaluate(outputs: outputs, labels: y, targets: input.t.map { UnsafePointer($0) },
                                             batch: batch * positions, width: width, gradient: logitGradient,
                                             gradientScale: 1 / Float(globalCount * positions))
                    stepLoss = step.lossSum
                    epochTotals.loss += step.lossSum
                    epochTotals.correct += Double(step.correct)
                    epochTotals.rows += Double(batch * positions)
                    model.backward(outputGradient: logitGradient, batch: batch)
                }
                computeSeconds += seconds(since: computeStart)
                try fault?.inject(at: position.globalStep, rank: communicator.rank, gradients: parameters.gradients)
                if config.training.timingBarrier {
                    let barrierStart = monotonicNanoseconds()
                    communicator.barrier()
                    barrierSeconds += seconds(since: barrierStart)
                }
                let reduceStart = monotonicNanoseconds()
                let sumFinite = communicator.allReduceSumCheckingFinite(parameters.gradients)
                let reduceSeconds = seconds(since: reduceStart)
                allReduceSeconds += reduceSeconds
                allReduceCalls += 1
                if config.training.timingBarrier { allReduceTimes.append(reduceSeconds) }
                if firstStepAt == nil { firstStepAt = processUptime() }

                // One small all-reduce per step carries what every rank must agree on: a stop
                // signal seen by any rank, rank 0's clock for timed checkpoints, a non-finite loss,
                // a non-finite gradient sum in the part a rank checked.
                let timeDue = communicator.isRoot && config.checkpoint.everySeconds > 0
                    && seconds(since: lastTimedCheckpoint) >= config.checkpoint.everySeconds
                let flags = communicator.allReduceMax([stopRequested() ? 1 : 0, timeDue ? 1 : 0,
                                                       stepLoss.isFinite ? -1 : Double(communicator.rank), sumFinite ? 0 : 1])
                let gradientsFinite = flags[3] == 0
                if flags[2] >= 0 || !gradientsFinite {
                    let what = flags[2] >= 0 ? "loss on rank \(Int(flags[2]))" : "gradient"
                    switch config.training.onNonFinite {
                    case .stop:
                        throw AgreedFailure("step \(position.globalStep + 1): non-finite \(what); stopping (training.on_nonfinite: stop; skip_step skips such steps)",
                                            reporter: communicator.isRoot)
                    case .skipStep:
                        if communicator.isRoot { log("step \(position.globalStep + 1): non-finite \(what); update skipped (training.on_nonfinite: skip_step)") }
                    }
                } else {
                    let updateStart = monotonicNanoseconds()
                    if config.optimizer.clipNorm > 0 { clipGradientNorm(parameters.gradients, maxNorm: config.optimizer.clipNorm) }
                    optimizer.step(parameters: parameters.values, gradients: UnsafeBufferPointer(parameters.gradients),
                                   learningRate: learningRate)
                    updateSeconds += seconds(since: updateStart)
                }
                position.stepInEpoch += 1
                position.globalStep += 1
                position.samplesSeen += globalCount

                if communicator.isRoot { reportStep(started: started) }
                let midEpoch = position.stepInEpoch < steps
                if flags[0] > 0 {
                    loader.endEpoch()
                    epochTotals.seconds += seconds(since: started)
                    try saveCheckpoint()
                    if communicator.isRoot { log("stopped by signal at step \(position.globalStep); resume with --resume auto") }
                    return .interrupted
                }
                if let maxSteps = config.training.maxSteps, position.globalStep >= maxSteps {
                    loader.endEpoch()
                    epochTotals.seconds += seconds(since: started)
                    try saveCheckpoint()
                    if communicator.isRoot { log("stopped after \(position.globalStep) steps (training.max_steps)") }
                    if train.isLanguageModel, let evaluation = try evaluateTest() {
                        // The epoch so far, as a metrics row: a recipe of N steps rarely ends on an epoch.
                        let sums = communicator.allReduceSum([epochTotals.loss, epochTotals.correct, epochTotals.rows])
                        let report = EpochReport(epoch: position.epoch + 1, trainLoss: sums[0] / max(sums[2], 1), trainAccuracy: sums[1] / max(sums[2], 1),
                                                 testLoss: evaluation.loss, testAccuracy: evaluation.accuracy,
                                                 samplesPerSecond: sums[2] / max(epochTotals.seconds, 1e-9), seconds: epochTotals.seconds)
                        if communicator.isRoot {
                            log("evaluation after \(position.globalStep) steps: " + languageModelFigures(loss: evaluation.loss, accuracy: evaluation.accuracy))
                            recorder?.epoch(report, globalStep: position.globalStep, learningRate: Double(learningRate))
                        }
                    }
                    return .stepLimit
                }
                if midEpoch, flags[1] > 0 || (config.checkpoint.everySteps > 0 && position.globalStep % config.checkpoint.everySteps == 0) {
                    let now = monotonicNanoseconds()
                    epochTotals.seconds += Double(now - started) / 1e9
                    try saveCheckpoint()
                    started = monotonicNanoseconds()
                }
            }
            epochTotals.seconds += seconds(since: started)
            let sums = communicator.allReduceSum([epochTotals.loss, epochTotals.correct, epochTotals.rows])
            let seconds = epochTotals.seconds
            finishedEpochSeconds += seconds
            epochTotals = (0, 0, 0, 0)
            let waited = loader.waitSeconds - waitAtEpochStart
            loader.endEpoch()
            let evaluation = try evaluateTest()
            var report = EpochReport(
                epoch: position.epoch + 1,
                trainLoss: sums[0] / max(sums[2], 1),
                trainAccuracy: train.isRegression ? .nan : sums[1] / max(sums[2], 1),
                testLoss: evaluation?.loss, testAccuracy: evaluation?.accuracy,
                samplesPerSecond: sums[2] / max(seconds, 1e-9), seconds: seconds)
            report.loaderWait = waited / max(seconds, 1e-9)
            if trainingRows < train.rows {
                // Validation reads are not training reads: keep them out of the read trace.
                let trace = train.readLog
                train.readLog = nil
                defer { train.readLog = trace }
                let validation = try Cohort.evaluate(model: model, data: train, rows: trainingRows..<train.rows, loss: config.loss,
                                                     communicator: communicator, batchSize: config.training.evalBatchSize)
                (report.validationLoss, report.validationAccuracy) = (validation.loss, validation.accuracy)
            }
            history.append(report)
            position.epoch += 1
            position.stepInEpoch = 0
            if communicator.isRoot {
                progress?.finishEpoch()
                log(describe(report))
                recorder?.epoch(report, globalStep: position.globalStep, learningRate: Double(learningRate))
            }
            let stop = runCallbacks(report)
            let last = position.epoch == config.training.epochs || stop
            if last || (config.checkpoint.everyEpochs > 0 && position.epoch % config.checkpoint.everyEpochs == 0) {
                try saveCheckpoint(improved: isBest(report))
            }
            if stop { return .earlyStopped }
        }
        return .completed
    }

    /// Peak resident memory of every rank, in bytes (a collective: every rank calls it).
    public func peakResidentMemory() -> [Double] {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let mine = Double(usage.ru_maxrss) * 1024
        var all = [Double](repeating: 0, count: communicator.size)
        all[communicator.rank] = mine
        return communicator.allReduceSum(all)
    }

    /// Progress on rank 0: a live bar, plain lines, and TensorBoard step scalars.
    private func reportStep(started: UInt64) {
        let elapsed = epochTotals.seconds + seconds(since: started)
        let loss = epochTotals.loss / max(epochTotals.rows, 1)
        let rate = epochTotals.rows * Double(communicator.size) / max(elapsed, 1e-9)
        progress?.update(Progress.Snapshot(epoch: position.epoch + 1, epochs: config.training.epochs, step: position.stepInEpoch,
                                           steps: stepsThisEpoch, loss: loss, learningRate: Double(learningRate),
                                           samplesPerSecond: rate, elapsed: elapsed))
        if let every = progress?.every, position.stepInEpoch % every == 0 {
            recorder?.step(position.globalStep, loss: loss, learningRate: Double(learningRate), samplesPerSecond: rate)
        }
    }

    /// Early stopping and plateau reduction, on figures every rank holds identically.
    private func runCallbacks(_ report: EpochReport) -> Bool {
        if var callback = plateau, let value = callback.monitor.value(in: report) {
            if let scale = callback.update(value, baseRate: Double(config.optimizer.learningRate)), communicator.isRoot {
                log("reduce_lr_on_plateau: \(callback.monitor.rawValue) has not improved for \(callback.patience) epochs; learning rate × "
                    + String(format: "%.3g", scale))
            }
            plateau = callback
        }
        guard var callback = earlyStopping, let value = callback.monitor.value(in: report) else { return false }
        let (stop, improved) = callback.update(value, epoch: report.epoch)
        earlyStopping = callback
        if improved && callback.restoreBestWeights { bestWeights = Array(model.parameters.values) }
        guard stop else { return false }
        if communicator.isRoot {
            log("early_stopping: \(callback.monitor.rawValue) has not improved for \(callback.patience) epochs; best \(String(format: "%.4f", callback.best ?? .nan)) at epoch \(callback.bestEpoch)")
        }
        if callback.restoreBestWeights, let bestWeights {
            bestWeights.withUnsafeBufferPointer { model.parameters.values.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
            if communicator.isRoot { log("early_stopping: restored the weights of epoch \(callback.bestEpoch)") }
        }
        return true
    }

    /// Evaluates the test file, keeping the classification report.
    private func evaluateTest() throws -> (loss: Double, accuracy: Double)? {
        guard let test else { return nil }
        let result = try Cohort.evaluate(model: model, data: test, loss: config.loss, communicator: communicator,
                                         batchSize: config.training.evalBatchSize)
        finalReport = test.isRegression || test.isLanguageModel ? nil : result.report(classNames: test.classNames)
        if test.isLanguageModel { finalLanguageModelFigures = (result.loss, result.accuracy, result.rows * test.targetsPerRow) }
        return (result.loss, result.accuracy)
    }

    /// Whether the report improves the monitored metric (for `checkpoint.keep_best`).
    private func isBest(_ report: EpochReport) -> Bool {
        guard config.checkpoint.keepBest, let value = config.checkpoint.monitor.value(in: report), value.isFinite else { return false }
        let earlier = history.dropLast().compactMap { config.checkpoint.monitor.value(in: $0) }.filter(\.isFinite)
        guard let best = config.checkpoint.monitor.lowerIsBetter ? earlier.min() : earlier.max() else { return true }
        return config.checkpoint.monitor.lowerIsBetter ? value < best : value > best
    }

    private func format(step totals: (loss: Double, correct: Int, rows: Int)) -> String {
        String(format: "%.4f", totals.loss / Double(max(totals.rows, 1)))
    }

    private func describe(_ report: EpochReport) -> String {
        // Regression has losses only (its accuracies are NaN).
        func figures(_ name: String, _ loss: Double?, _ accuracy: Double?) -> String {
            guard let loss else { return "" }
            let accuracyText = accuracy.flatMap { $0.isNaN ? nil : "  \(name) accuracy " + String(format: "%.4f", $0) } ?? ""
            return "  \(name) loss " + String(format: "%.4f", loss) + accuracyText
        }
        var line = String(format: "epoch %d/%d", report.epoch, config.training.epochs)
            + figures("train", report.trainLoss, report.trainAccuracy)
        if train.isLanguageModel, let loss = report.testLoss {
            line += "  validation " + languageModelFigures(loss: loss, accuracy: report.testAccuracy ?? .nan)
            line += String(format: "  tokens/s %.0f  (%.1f s)", report.samplesPerSecond, report.seconds)
            return line
        }
        line += figures("validation", report.validationLoss, report.validationAccuracy)
            + figures("test", report.testLoss, report.testAccuracy)
        line += String(format: "  samples/s %.0f  (%.1f s", report.samplesPerSecond, report.seconds)
        if let wait = report.loaderWait { line += String(format: ", loader wait %.1f%%", wait * 100) }
        if config.data.sampling == .sharded {
            line += String(format: ", shuffle buffer peak %d rows, %.1f MB", loader.peakBufferRows, Double(loader.bufferBytes) / 1e6)
        }
        line += ")"
        return line
    }

    /// With COHORT_TRACE_READS=DIR (and `data.cache: false`), each rank writes the training rows
    /// it read from the file to DIR/rank-R.txt, one per line: how the tests prove sharded reading.
    private func writeReadTrace() throws {
        guard let log = train.readLog, let directory = ProcessInfo.processInfo.environment["COHORT_TRACE_READS"] else { return }
        let text = log.map(String.init).joined(separator: "\n") + "\n"
        let path = "\(directory)/rank-\(communicator.rank).txt"
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw CohortError("\(path): cannot write the read trace")
        }
    }

    /// Replicas must hold identical parameters; a cheap CRC comparison each epoch proves it.
    private func checkReplicasAgree() throws {
        guard communicator.size > 1 else { return }
        var crc = CRC32()
        crc.update(name: "", bytes: UnsafeRawBufferPointer(model.parameters.values))
        let value = Double(crc.value)
        let extremes = communicator.allReduceMax([value, -value])
        guard extremes[0] == -extremes[1] else {
            throw CohortError("rank \(communicator.rank): parameters differ between ranks at step \(position.globalStep)")
        }
    }

    // MARK: Checkpoints

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
                try FileManager.default.createDirectory(atPath: checkpointDirectory, withIntermediateDirectories: true)
                let path = "\(checkpointDirectory)/checkpoint-\(String(format: "%08d", position.globalStep)).h5"
                guard cohort_sum(model.parameters.values.baseAddress!, model.parameters.count).isFinite else {
                    throw CohortError("step \(position.globalStep): parameters are not finite; no checkpoint written")
                }
                var checkpoint = makeCheckpoint()
                for (rank, words) in allGenerators.enumerated() where !words.isEmpty {
                    checkpoint.words["generators/rank_\(rank)"] = words
                }
                checkpoint.metrics["epoch_in_progress"] = partial + [epochTotals.seconds]
                if let earlyStopping { checkpoint.metrics["callbacks/early_stopping"] = earlyStopping.state }
                if let plateau { checkpoint.metrics["callbacks/reduce_lr_on_plateau"] = plateau.state }
                if let bestWeights { checkpoint.tensors["callbacks/best_weights"] = ([bestWeights.count], bestWeights) }
                let writeStart = monotonicNanoseconds()
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
        var checkpoint = Checkpoint(position: position, worldSize: communicator.size, batchSize: config.training.batchSize,
                                    optimizerSteps: optimizer.stepCount, config: config.text)
        let parameters = model.parameters
        for entry in parameters.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            checkpoint.tensors["parameters/\(entry.name)"] = (entry.shape, Array(parameters.values[range]))
            for slot in optimizer.slots {
                checkpoint.tensors["optimizer/\(slot.name)/\(entry.name)"] = (entry.shape, Array(slot.buffer[range]))
            }
        }
        for entry in parameters.bufferEntries {
            checkpoint.tensors["buffers/\(entry.name)"] = (entry.shape, Array(parameters.buffers[entry.offset..<(entry.offset + entry.count)]))
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
    private func pruneCheckpoints() throws {
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

    /// `auto` resolves to the newest checkpoint that verifies; each one skipped is reported.
    private func resolve(_ request: String) throws -> Checkpoint {
        guard request == "auto" else { return try Checkpoint.read(from: request) }
        for candidate in Trainer.checkpoints(in: checkpointDirectory) {
            do {
                let checkpoint = try Checkpoint.read(from: candidate)
                if communicator.isRoot { log("resuming from \(candidate)") }
                return checkpoint
            } catch let error as CohortError {
                if communicator.isRoot { log("skipping \(candidate): \(error.message)") }
            }
        }
        throw CohortError("\(checkpointDirectory): no checkpoint to resume from (--resume auto)")
    }

    private func restore(from request: String) throws {
        let checkpoint = try resolve(request)
        let parameters = model.parameters
        try checkpoint.restoreModel(model, source: request)
        for entry in parameters.entries {
            for slot in optimizer.slots {
                guard let state = checkpoint.tensors["optimizer/\(slot.name)/\(entry.name)"], state.shape == entry.shape else {
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
        if let state = checkpoint.metrics["callbacks/early_stopping"] { earlyStopping?.restore(state) }
        if let state = checkpoint.metrics["callbacks/reduce_lr_on_plateau"] { plateau?.restore(state) }
        if let weights = checkpoint.tensors["callbacks/best_weights"]?.values, weights.count == parameters.count { bestWeights = weights }
        optimizer.stepCount = checkpoint.optimizerSteps
        position = checkpoint.position
        // Rank 0 carries the global sums of the interrupted epoch; the epoch-end all-reduce adds the rest.
        if let partial = checkpoint.metrics["epoch_in_progress"], partial.count == 4, position.stepInEpoch > 0 {
            epochTotals = communicator.isRoot ? (partial[0], partial[1], partial[2], partial[3]) : (0, 0, 0, partial[3])
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
            log("global batch changes from \(savedGlobalBatch) (\(checkpoint.worldSize) × \(checkpoint.batchSize)) to \(globalBatch) (\(communicator.size) × \(config.training.batchSize))")
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
