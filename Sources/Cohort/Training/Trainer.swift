import CCohort
import Foundation

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
    /// What the training file holds (rows, shape, a CRC of some rows), recorded in checkpoints.
    public let dataFingerprint: String
    /// Per-channel mean and std of `normalize: standardize`, from the config or the training file.
    public let normalization: (mean: [Double], std: [Double])?
    /// Parameters `model.freeze` fixes, and the contiguous ranges of the flat buffer that train
    /// (nil when nothing is frozen: the whole buffer is all-reduced).
    public private(set) var frozen: Set<String> = []
    private var trainableSpans: [Range<Int>]?
    public let test: (any SampleSource)?
    /// What the run learns (`TrainingTask`): its output shape, accuracy, unit and report.
    public let task: TrainingTask
    /// Where each step's rows come from (global or sharded sampling, prefetch, augmentation).
    public let loader: BatchLoader
    /// Rows of the training file used for training; the rest (validation_split) for validation.
    public let trainingRows: Int
    /// Rows of one optimizer step over all ranks: ranks × batch × accumulation steps.
    public var globalBatch: Int { communicator.size * config.training.rowsPerStep }
    public internal(set) var position: Checkpoint.Position
    public internal(set) var history: [EpochReport] = []
    /// Where rank 0's lines go (stdout by default; tests capture them).
    public var log: (String) -> Void = printLine
    public var checkpointDirectory: String { "\(config.runDirectory)/checkpoints" }

    private let logitGradient: UnsafeMutablePointer<Float>

    /// Opens the data, builds the model (rank 0's initial weights broadcast to all) and, when
    /// `resume` is given, restores the complete state from that checkpoint.
    public init(config: TrainConfig, communicator: Communicator, resume: String? = nil) throws {
        var config = try config.resolvingPublishedModel()
        var startupLines: [String] = []
        // The checkpoint comes first: with training.keep_global_batch it decides the batch.
        let resumed = try resume.flatMap {
            try Trainer.resolve($0, directory: "\(config.runDirectory)/checkpoints") { startupLines.append($0) }
        }
        if let resumed, config.training.keepGlobalBatch {
            let (training, line) = try Trainer.keepingGlobalBatch(config.training, saved: (resumed.worldSize, resumed.batchSize),
                                                                  ranks: communicator.size)
            config.training = training
            startupLines += line.map { [$0] } ?? []
        }
        (self.config, self.communicator) = (config, communicator)
        let source = try InitSource(config.fineTuning)
        (carried, carriedTokenizer) = (source?.carried ?? [:], source?.checkpoint.tokenizerJSON)
        startupLines += source.map { ["init_from: reading \($0.path)"] } ?? []
        var data = config.data
        startupLines += source?.lendNormalization(to: &data).map { [$0] } ?? []
        let inputs = try TrainingInputs(data, training: config.training, seed: config.seed, communicator: communicator)
        (train, test, loader, trainingRows) = (inputs.train, inputs.test, inputs.loader, inputs.trainingRows)
        (dataFingerprint, normalization) = (inputs.fingerprint, inputs.normalization)
        let maxBatch = max(config.training.batchSize, config.training.evalBatchSize)
        LayerThreads.use(config.training.threads ?? LayerThreads.boundCores())
        model = try Model(inputShape: train.sampleShape, layers: config.layers, maxBatch: maxBatch, seed: config.seed,
                          communicator: communicator, recomputeBlocks: config.training.recompute == .blocks,
                          willLoad: { source?.willLoad(name: $0, shape: $1) ?? false })
        task = try TrainingTask(data: train, loss: config.loss, model: model)
        try task.check(model, training: train, test: test, validationSplit: data.validationSplit)
        if let source { startupLines += try source.from.load(into: model, from: source.checkpoint) }
        let freezing = try config.fineTuning.freeze(in: model)
        (frozen, trainableSpans) = (freezing.frozen, freezing.trainableSpans)
        startupLines += freezing.line.map { [$0] } ?? []
        optimizer = makeOptimizer(config.optimizer, parameters: model.parameters, frozen: frozen)
        position = Checkpoint.Position(epoch: 0, stepInEpoch: 0, globalStep: 0, samplesSeen: 0)
        logitGradient = .allocate(capacity: maxBatch * train.targetsPerRow * max(train.classes, train.targetWidth, 1))
        callbacks = EpochCallbacks(earlyStopping: config.callbacks.earlyStopping, plateau: config.callbacks.reduceOnPlateau)
        fault?.signalDuringStartup(rank: communicator.rank)
        if communicator.isRoot { startupLines.forEach(log) }
        if let resumed, let resume { try restore(resumed, request: resume) }
        if ProcessInfo.processInfo.environment["COHORT_TRACE_READS"] != nil { train.readLog = [] }
    }

    /// The first collective of a run. Every rank initialized (or restored) the same weights;
    /// broadcasting rank 0's makes that a guarantee rather than an assumption, as DDP does.
    /// Then, with `training.all_reduce: auto`, the gradients move into memory the communicator
    /// sums fastest (on a node: a shared-memory window), also collectively.
    /// A rank that stops arriving here ends the job as in a step (`training.stall_timeout`); the
    /// ranks also agree whether a stop signal came during start-up (`stoppedDuringStartup`).
    /// `run()` calls it when the caller has not.
    public func synchronizeInitialState() {
        guard !synchronized else { return }
        synchronized = true
        watched(step: 0) { synchronizeInitialStateWatched() }
    }

    private func synchronizeInitialStateWatched() {
        fault?.freezeDuringStartup(rank: communicator.rank)
        communicator.compressesAcrossNodes = config.training.compress == .bf16
        communicator.broadcast(model.parameters.values, root: 0)
        communicator.broadcast(model.parameters.buffers, root: 0)
        synchronization = GradientStrategies.choose(gradientRun, from: gradientStrategies)
        gradientAllReduce = synchronization.description
        if config.training.compress == .bf16 { gradientAllReduce += ", bfloat16 between nodes" }
        if let shared = NodeSharedModelState.make(gradientRun, optimizer: optimizer) { statePlacement = shared }
        stoppedDuringStartup = communicator.allReduceMax([stopRequested() ? 1 : 0])[0] > 0
    }

    /// Where the parameters and optimizer state live (`ModelStatePlacement`): every rank, or once per node.
    private(set) var statePlacement: any ModelStatePlacement = ReplicatedState()
    /// How the gradients are held and summed (`GradientStrategies`), chosen in `synchronizeInitialState`.
    private(set) lazy var synchronization: any GradientSynchronization = ReplicatedSum(run: gradientRun)
    /// The strategies `synchronizeInitialState` asks, in order (a test puts its own first).
    var gradientStrategies: [any GradientSynchronization.Type] = GradientStrategies.all
    private var gradientRun: GradientRun {
        GradientRun(model: model, communicator: communicator, training: config.training, trainableSpans: trainableSpans,
                    faultInjected: fault != nil)
    }
    /// Seconds this rank spent summing gradients during backward (inside `timings.compute`; the
    /// turns on the node's one gradient sum); nil when its strategy sums afterwards.
    public var gradientTurnSeconds: Double? { synchronization.backwardSumSeconds }

    /// How the gradients are summed, for the run's first line.
    public private(set) var gradientAllReduce = "MPI_Allreduce"

    /// Total optimizer steps of the run, the T of the learning-rate schedule.
    public private(set) lazy var totalSteps: Int = (0..<config.training.epochs).reduce(0) { $0 + loader.stepsPerEpoch($1) }
    public var stepsThisEpoch: Int { loader.stepsPerEpoch(position.epoch) }

    /// The schedule's rate at this step, times the plateau callback's reduction.
    public var learningRate: Float {
        config.optimizer.schedule.rate(step: position.globalStep, totalSteps: config.optimizer.schedule.totalSteps ?? totalSteps) * Float(callbacks.learningRateScale)
    }

    // Callbacks and reporting (rank 0 writes; every rank runs the callbacks on the same figures).
    public internal(set) var callbacks: EpochCallbacks
    public var progress: Progress?
    public var recorder: RunRecorder?
    /// A regression model's last evaluation of the test file: RMSE, R², MSE, rows.
    public internal(set) var finalRegressionLine: String?
    /// The report of the last evaluation of the test file.
    public internal(set) var finalReport: ClassificationReport?
    /// A language model's last evaluation of the validation file: loss, accuracy, target tokens.
    public internal(set) var finalLanguageModelFigures: (loss: Double, accuracy: Double, tokens: Int)?

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
    var epochTotals = (loss: 0.0, correct: 0.0, rows: 0.0, seconds: 0.0)
    /// Rows of every rank in the part of this epoch before a resume (held by rank 0 alone).
    var resumedRows = 0.0
    /// Where this rank's steps spent their time.
    public private(set) var timings = StepTimings()
    /// Training seconds of this process (epochs finished here plus the one in progress).
    public var trainingSeconds: Double { finishedEpochSeconds + epochTotals.seconds }
    var finishedEpochSeconds = 0.0
    /// Seconds the last checkpoint took to write (rank 0).
    public internal(set) var lastCheckpointSeconds: Double?
    var lastTimedCheckpoint = monotonicNanoseconds()
    let fault = FaultInjection.fromEnvironment()
    private var synchronized = false
    /// Tensors and the tokenizer.json of an imported model that its checkpoints keep (`huggingface/…`).
    var carried: [String: (shape: [Int], values: [Float])] = [:]
    var carriedTokenizer: String?
    /// A stop signal reached some rank before the first step (set by `synchronizeInitialState`).
    public private(set) var stoppedDuringStartup = false
    /// Ends the job when a step's collectives do not complete in time (several ranks only).
    lazy var watchdog: StallWatchdog? = config.training.stallTimeout > 0 && communicator.size > 1
        ? StallWatchdog(timeout: config.training.stallTimeout, rank: communicator.rank, size: communicator.size,
                        runDirectory: config.runDirectory)
        : nil

    /// Epochs of steps until the run ends: its epochs done, a stop signal, `max_steps`, or early
    /// stopping. Checkpoints at the configured moments; evaluation at each epoch's end.
    @discardableResult
    public func run() throws -> Outcome {
        synchronizeInitialState()
        announce()
        installStopSignalHandlers()
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
                let batch = try loader.next(keepingFailures: true)
                let agreed = try step(batch)
                loader.release(batch)

                if communicator.isRoot { reportStep(started: started) }
                if agreed.stop {
                    try stopMidEpoch(started: started, evaluating: false,
                                     line: "stopped by signal at step \(position.globalStep); resume with --resume auto")
                    return .interrupted
                }
                if let maxSteps = config.training.maxSteps, position.globalStep >= maxSteps {
                    try stopMidEpoch(started: started, evaluating: task.evaluatesWhenStoppedMidEpoch,
                                     line: "stopped after \(position.globalStep) steps (training.max_steps)")
                    return .stepLimit
                }
                let everySteps = config.checkpoint.everySteps
                if position.stepInEpoch < steps, agreed.checkpointDue || (everySteps > 0 && position.globalStep % everySteps == 0) {
                    epochTotals.seconds += seconds(since: started)
                    try watched(step: position.globalStep) { try saveCheckpoint() }
                    started = monotonicNanoseconds()
                }
            }
            // The epoch's end is collectives too (its sums, evaluation, the checkpoint): watched.
            if try endEpoch(started: started, waitAtEpochStart: waitAtEpochStart) { return .earlyStopped }
        }
        return .completed
    }

    // MARK: One step

    /// One optimizer step, the same on every rank, a rank that stops arriving anywhere in it
    /// (the node's barrier after the update included) ending the job.
    private func step(_ batch: BatchLoader.Batch) throws -> StepAgreement {
        let firstStep = timings.firstStepStartedAt == nil
        if firstStep { timings.firstStepStartedAt = processUptime() }
        return try watched(step: position.globalStep + 1) {
            synchronization.beginStep()                                               // gradients cleared
            followRankZerosBuffers()                                                  // batch-norm statistics
            let (loss, kernelFailure) = computeGradients(batch, checkingKernels: firstStep)  // forward, loss, backward
            try fault?.inject(at: position.globalStep, rank: communicator.rank, gradients: model.parameters.gradients)
            let finite = allReduceGradients()                                         // synchronize
            if timings.firstStepAt == nil { timings.firstStepAt = processUptime() }
            let agreed = try agree(batch: batch, loss: loss, finite: finite, kernelFailure: kernelFailure)
            if agreed.updates { timings.time(\.update) { update() } }                 // clip, update
            position.stepInEpoch += 1                                                 // record
            position.globalStep += 1
            position.samplesSeen += batch.globalCount
            return agreed
        }
    }

    /// Runs `body` with the stall watchdog armed for `step`: every wait for other ranks inside it is bounded.
    func watched<T>(step: Int, _ body: () throws -> T) rethrows -> T {
        watchdog?.arm(step: step)
        defer { watchdog?.disarm() }
        return try body()
    }

    /// Buffers (batch-norm running statistics) follow rank 0's, as DDP's broadcast_buffers.
    private func followRankZerosBuffers() {
        if model.parameters.buffers.count > 0 { communicator.broadcast(model.parameters.buffers, root: 0) }
    }

    /// What this rank saw, agreed over every rank (`StepAgreement`).
    private func agree(batch: BatchLoader.Batch, loss: Double, finite: Bool, kernelFailure: String?) throws -> StepAgreement {
        let timeDue = communicator.isRoot && config.checkpoint.everySeconds > 0
            && seconds(since: lastTimedCheckpoint) >= config.checkpoint.everySeconds
        let seen = StepAgreement.Observations(stopRequested: stopRequested(), checkpointDue: timeDue, loss: loss, finiteGradients: finite,
                                              kernelFailure: kernelFailure, readFailure: batch.failure)
        return try StepAgreement.reach(seen, communicator: communicator, onNonFinite: config.training.onNonFinite,
                                       step: position.globalStep + 1, log: log)
    }

    /// Clip and the optimizer's update, the same on every rank.
    private func update() {
        if config.optimizer.clipNorm > 0 { synchronization.clip(maxNorm: config.optimizer.clipNorm) }
        fault?.freezeDuringUpdate(at: position.globalStep, rank: communicator.rank)
        let parameters = model.parameters
        optimizer.step(parameters: parameters.values, gradients: UnsafeBufferPointer(parameters.gradients), learningRate: learningRate)
        // Every slice of the node's one copy is updated before any rank reads it again.
        statePlacement.publish()
    }

    /// Forward, loss and backward of this rank's rows, `batch_size` rows at a time (the
    /// micro-batches of `accumulate_steps`); adds dL/dθ into the flat gradient buffer. A row's loss
    /// covers `positions` targets (T for a language model's window, else 1), each over `width`
    /// outputs, divided by every target of the optimizer step's global batch: so the sum over
    /// micro-batches and ranks is the gradient of the global mean, uneven last batches included.
    /// Batch norm normalizes each micro-batch by its own statistics (as PyTorch does). Returns the
    /// loss sum. The first step records its products and checks them against float64
    /// (`BLASCheck.startupFailure`): the failure, or nil.
    private func computeGradients(_ batch: BatchLoader.Batch, checkingKernels: Bool) -> (loss: Double, kernelFailure: String?) {
        if checkingKernels { BLASCalls.startRecording() }
        let loss = timings.time(\.compute) { computeGradients(batch) }
        guard checkingKernels else { return (loss, nil) }
        let corrupt = fault?.corruptsKernelCheck(rank: communicator.rank) ?? false
        return (loss, BLASCheck.startupFailure(BLASCalls.stopRecording(), rank: communicator.rank, corrupt: corrupt))
    }

    private func computeGradients(_ batch: BatchLoader.Batch) -> Double {
        guard batch.count > 0 else { return 0 }
        let positions = train.targetsPerRow
        let width = model.outputShape.reduce(1, *) / positions
        let scale = 1 / Float(batch.globalCount * positions)
        var lossSum = 0.0
        for first in stride(from: 0, to: batch.count, by: config.training.batchSize) {
            let rows = min(config.training.batchSize, batch.count - first)
            let outputs = model.forward(batch.x + first * train.sampleSize, batch: rows, training: true)
            let totals = config.loss.evaluate(outputs: outputs, labels: batch.y + first * positions,
                                              targets: batch.t.map { UnsafePointer($0 + first * train.targetWidth) },
                                              batch: rows * positions, width: width, gradient: logitGradient, gradientScale: scale)
            epochTotals.loss += totals.lossSum
            epochTotals.correct += Double(totals.correct)
            epochTotals.rows += Double(rows * positions)
            lossSum += totals.lossSum
            let last = first + config.training.batchSize >= batch.count
            model.backward(outputGradient: logitGradient, batch: rows, finished: synchronization.backwardHook(lastMicroBatch: last))
        }
        return lossSum
    }

    /// Sums the flat gradient buffer over the ranks (the run's `GradientSynchronization`); true
    /// when the sum this rank checked is finite.
    private func allReduceGradients() -> Bool {
        if config.training.timingBarrier { timings.time(\.barrier) { communicator.barrier() } }
        let started = monotonicNanoseconds()
        let finite = synchronization.finish()
        let elapsed = seconds(since: started)
        timings.allReduce += elapsed
        timings.allReduceCalls += 1
        if config.training.timingBarrier { timings.allReduceTimes.append(elapsed) }
        return finite
    }
}
