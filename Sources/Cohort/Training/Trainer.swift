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
        self.config = config
        self.communicator = communicator
        var data = config.data
        // A model started from another run's weights keeps that run's input normalization
        // unless the config gives its own: the loaded layers expect it.
        let found = try config.fineTuning.initFrom.map { from in
            from.huggingface ? (path: from.checkpoint, checkpoint: try HuggingFace.importModel(from: from.checkpoint).checkpoint)
                : try from.sourceCheckpoint()
        }
        let source = found?.checkpoint
        // What a published model brings that no layer holds (BERT's unused pooler, its
        // tokenizer.json) rides along in every checkpoint, for the export.
        carried = source?.tensors.filter { $0.key.hasPrefix(CheckpointSchema.huggingFacePrefix) } ?? [:]
        carriedTokenizer = source?.tokenizerJSON
        startupLines += found.map { ["init_from: reading \($0.path)"] } ?? []
        if let from = config.fineTuning.initFrom, let stored = source?.normalization, data.normalize == .standardize, data.mean == nil {
            (data.mean, data.std) = (stored.mean, stored.std)
            startupLines.append("init_from \(from.checkpoint): standardizing with its training statistics (mean \(stored.mean), std \(stored.std))")
        }
        train = try openSamples(path: data.train, config: data, phase: .random, seed: config.seed,
                                cache: data.cache && data.sampling == .global)
        let classes = train.classes
        dataFingerprint = try train.fingerprint()
        // The training file's normalization is the model's: fixed here, stored in every
        // checkpoint, and used for the test file too (never the test file's own statistics).
        normalization = (train as? LabeledData)?.standardization
        var testData = data
        if let normalization { (testData.mean, testData.std) = (normalization.mean, normalization.std) }
        test = try data.test.map {
            try openSamples(path: $0, config: testData, phase: .zero, seed: config.seed, cache: data.cache, expectedClasses: classes)
        }
        if let test, test.sampleShape != train.sampleShape {
            throw CohortError("\(test.path): samples have shape \(test.sampleShape) but \(train.path) has \(train.sampleShape)")
        }
        // validation_split holds out the last rows of the file, before any shuffling.
        trainingRows = train.rows - Int((Double(train.rows) * data.validationSplit).rounded())
        let rowsPerStep = config.training.rowsPerStep
        let globalBatch = communicator.size * rowsPerStep
        guard trainingRows >= globalBatch else {
            throw CohortError("\(train.path): \(trainingRows) training rows are fewer than one global batch (\(communicator.size) ranks × \(rowsPerStep))")
        }
        let plan = try BatchLoader.Plan(data, file: train, rows: trainingRows, ranks: communicator.size, rank: communicator.rank,
                                        batchPerRank: rowsPerStep, seed: config.seed)
        let augmenter = data.augmentation.isEnabled
            ? Augmenter(augmentation: data.augmentation, shape: train.sampleShape, seed: config.seed, rank: communicator.rank) : nil
        loader = BatchLoader(data: train, plan: plan, batchSize: rowsPerStep, augmenter: augmenter, prefetch: data.prefetch)
        let maxBatch = max(config.training.batchSize, config.training.evalBatchSize)
        LayerThreads.use(config.training.threads ?? LayerThreads.boundCores())
        // Weights init_from loads whole (no layers or skip lists) need no random values first.
        let loadsWhole = config.fineTuning.initFrom.map { $0.layers == nil && $0.skip.isEmpty } ?? false
        let willLoad = { (name: String, shape: [Int]) in loadsWhole && source?.tensors[CheckpointSchema.parameter(name)]?.shape == shape }
        model = try Model(inputShape: train.sampleShape, layers: config.layers, maxBatch: maxBatch, seed: config.seed,
                          communicator: communicator, recomputeBlocks: config.training.recompute == .blocks, willLoad: willLoad)
        task = try TrainingTask(data: train, loss: config.loss, model: model)
        try task.checkTokens(of: model, file: train.path)
        try task.checkSegments(of: model, data: train)
        try task.checkOutput(model.outputShape, file: config.data.train)
        if let test { try task.checkTest(test, training: train) }
        try task.checkValidationSplit(data.validationSplit, file: data.train)
        if let from = config.fineTuning.initFrom, let source {
            startupLines += try from.load(into: model, from: source)
        }
        let names = model.parameters.entries.map(\.name)
        let frozenNames = try FineTuning.select(config.fineTuning.freeze, from: names, key: "model.freeze")
        frozen = frozenNames
        if !frozenNames.isEmpty {
            model.freeze(frozenNames, batchNormInference: config.fineTuning.frozenBatchNorm == .inference)
            trainableSpans = FrozenSpansSum.spans(of: model.parameters.entries.filter { !frozenNames.contains($0.name) })
            let count = model.parameters.entries.filter { frozenNames.contains($0.name) }.reduce(0) { $0 + $1.count }
            startupLines.append("frozen: \(count) of \(model.parameters.count) parameters (\(frozenNames.count) tensors); batch norm among them: \(config.fineTuning.frozenBatchNorm == .inference ? "running statistics, fixed" : "batch statistics")")
        }
        optimizer = makeOptimizer(config.optimizer, parameters: model.parameters, frozen: frozenNames)
        position = Checkpoint.Position(epoch: 0, stepInEpoch: 0, globalStep: 0, samplesSeen: 0)
        logitGradient = .allocate(capacity: maxBatch * train.targetsPerRow * max(train.classes, train.targetWidth, 1))
        earlyStopping = config.callbacks.earlyStopping
        plateau = config.callbacks.reduceOnPlateau
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
    /// Seconds this rank spent summing gradients during backward (inside `computeSeconds`; the
    /// turns on the node's one gradient sum); nil when its strategy sums afterwards.
    public var gradientTurnSeconds: Double? { synchronization.backwardSumSeconds }

    /// Overwrites the parameters with `weights` on every rank (each writes its own slice where they are shared).
    private func setParameters(_ weights: [Float]) {
        let slice = statePlacement.ownSlice ?? 0..<weights.count
        weights.withUnsafeBufferPointer {
            (model.parameters.values.baseAddress! + slice.lowerBound).update(from: $0.baseAddress! + slice.lowerBound, count: slice.count)
        }
        statePlacement.publish()
    }

    /// Memory per node (PSS) of the model state (parameters, gradients, optimizer state) and
    /// of the whole processes, in bytes. Collective.
    public func memoryPerNode() -> (modelState: Double, processes: Double)? {
        let parameters = model.parameters
        let regions = [parameters.values, parameters.gradients].map { UnsafeRawBufferPointer($0) } + optimizer.stateRegions
            + synchronization.scratchRegions
        let mine = [ProportionalMemory.resident(holding: regions) ?? .nan, ProportionalMemory.process() ?? .nan,
                    1 / Double(communicator.ranksOnNode)]
        let sums = communicator.allReduceSum(mine)
        guard sums[0].isFinite, sums[1].isFinite else { return nil }
        return (sums[0] / sums[2], sums[1] / sums[2])
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
    var earlyStopping: EarlyStopping?
    var plateau: ReduceOnPlateau?
    var bestWeights: [Float]?
    public var progress: Progress?
    public var recorder: RunRecorder?
    /// A regression model's last evaluation of the test file: RMSE, R², MSE, rows.
    public private(set) var finalRegressionLine: String?
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
    var epochTotals = (loss: 0.0, correct: 0.0, rows: 0.0, seconds: 0.0)
    /// Rows of every rank in the part of this epoch before a resume (held by rank 0 alone).
    var resumedRows = 0.0
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
    public internal(set) var lastCheckpointSeconds: Double?
    /// Seconds from process start to the first training step's all-reduce.
    public private(set) var firstStepAt: Double?
    /// Seconds from process start to the start of the first step (the setup before it).
    public private(set) var firstStepStartedAt: Double?
    var lastTimedCheckpoint = monotonicNanoseconds()
    let fault = FaultInjection.fromEnvironment()
    /// Ends the job when a step's collectives do not complete in time (several ranks only).
    private var synchronized = false
    /// Tensors and the tokenizer.json of an imported model that its checkpoints keep (`huggingface/…`).
    var carried: [String: (shape: [Int], values: [Float])] = [:]
    var carriedTokenizer: String?
    /// A stop signal reached some rank before the first step (set by `synchronizeInitialState`).
    public private(set) var stoppedDuringStartup = false
    private lazy var watchdog: StallWatchdog? = config.training.stallTimeout > 0 && communicator.size > 1
        ? StallWatchdog(timeout: config.training.stallTimeout, rank: communicator.rank, size: communicator.size,
                        runDirectory: config.runDirectory)
        : nil

    /// Epochs of steps until the run ends: its epochs done, a stop signal, `max_steps`, or early
    /// stopping. Checkpoints at the configured moments; evaluation at each epoch's end.
    @discardableResult
    public func run() throws -> Outcome {
        synchronizeInitialState()
        announce()
        if communicator.isRoot, position.globalStep == 0 {
            let runSteps = min(totalSteps, config.training.maxSteps ?? totalSteps)
            let keys = "training.epochs \(config.training.epochs)" + (config.training.maxSteps.map { ", training.max_steps \($0)" } ?? "")
            if let warning = config.optimizer.schedule.warning(runSteps: runSteps, epochSteps: totalSteps, keys: keys) { log(warning) }
        }
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
                let midEpoch = position.stepInEpoch < steps
                if agreed.stop {
                    // Armed until the process ends: the command's closing collectives are watched too.
                    watchdog?.arm(step: position.globalStep)
                    try stopMidEpoch(started: started)
                    if communicator.isRoot { log("stopped by signal at step \(position.globalStep); resume with --resume auto") }
                    try recordPartialEpoch(evaluating: false)
                    return .interrupted
                }
                if let maxSteps = config.training.maxSteps, position.globalStep >= maxSteps {
                    watchdog?.arm(step: position.globalStep)
                    try stopMidEpoch(started: started)
                    if communicator.isRoot { log("stopped after \(position.globalStep) steps (training.max_steps)") }
                    try recordPartialEpoch(evaluating: task.evaluatesWhenStoppedMidEpoch)
                    return .stepLimit
                }
                if midEpoch, agreed.checkpointDue || (config.checkpoint.everySteps > 0 && position.globalStep % config.checkpoint.everySteps == 0) {
                    epochTotals.seconds += seconds(since: started)
                    try watched(step: position.globalStep) { try saveCheckpoint() }
                    started = monotonicNanoseconds()
                }
            }
            // The epoch's end is collectives too (its sums, evaluation, the checkpoint): watched.
            let stop = try watched(step: position.globalStep) {
                let report = try finishEpoch(started: started, waitAtEpochStart: waitAtEpochStart)
                let stop = runCallbacks(report)
                let last = position.epoch == config.training.epochs || stop
                if last || (config.checkpoint.everyEpochs > 0 && position.epoch % config.checkpoint.everyEpochs == 0) {
                    try saveCheckpoint(improved: isBest(report))
                }
                return stop
            }
            if stop { return .earlyStopped }
        }
        return .completed
    }

    /// The run's first line (rank 0), and the clean-up before the first step.
    private func announce() {
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
    }

    /// A stop inside an epoch (signal or max_steps): the loader ends and a checkpoint is written.
    private func stopMidEpoch(started: UInt64) throws {
        loader.endEpoch()
        epochTotals.seconds += seconds(since: started)
        try saveCheckpoint()
    }

    /// A run that stops inside an epoch leaves a metrics row for the steps it took (the epoch's
    /// number, its global step). A language model's recipe is N steps, which rarely end an epoch:
    /// it evaluates the validation file then too, for the row and report.json.
    private func recordPartialEpoch(evaluating: Bool) throws {
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

    /// The end of an epoch: its figures agreed over the ranks, the test file (and validation
    /// rows) evaluated, the report logged and recorded; the position moves to the next epoch.
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

    // MARK: One step

    /// What every rank agreed on at the end of a step (one small all-reduce).
    struct StepAgreement {
        /// A stop signal reached some rank: checkpoint and end.
        var stop: Bool
        /// Rank 0's clock says a timed checkpoint is due.
        var checkpointDue: Bool
    }

    /// One optimizer step, the same on every rank, a rank that stops arriving anywhere in it
    /// (the node's barrier after the update included) ending the job.
    private func step(_ batch: BatchLoader.Batch) throws -> StepAgreement {
        let firstStep = firstStepStartedAt == nil
        if firstStep { firstStepStartedAt = processUptime() }
        return try watched(step: position.globalStep + 1) {
            synchronization.beginStep()                                               // gradients cleared
            followRankZerosBuffers()                                                  // batch-norm statistics
            let (loss, kernelFailure) = computeGradients(batch, checkingKernels: firstStep)  // forward, loss, backward
            try fault?.inject(at: position.globalStep, rank: communicator.rank, gradients: model.parameters.gradients)
            let finite = allReduceGradients()                                         // synchronize
            if firstStepAt == nil { firstStepAt = processUptime() }
            let agreed = try agree(batch: batch, loss: loss, finite: finite, kernelFailure: kernelFailure)
            if agreed.updates { update() }                                            // clip, update
            position.stepInEpoch += 1                                                 // record
            position.globalStep += 1
            position.samplesSeen += batch.globalCount
            return agreed.agreement
        }
    }

    /// Runs `body` with the stall watchdog armed for `step`: every wait for other ranks inside it is bounded.
    private func watched<T>(step: Int, _ body: () throws -> T) rethrows -> T {
        watchdog?.arm(step: step)
        defer { watchdog?.disarm() }
        return try body()
    }

    /// Buffers (batch-norm running statistics) follow rank 0's, as DDP's broadcast_buffers.
    private func followRankZerosBuffers() {
        if model.parameters.buffers.count > 0 { communicator.broadcast(model.parameters.buffers, root: 0) }
    }

    /// One small all-reduce carries what every rank must agree on: a stop signal seen by any
    /// rank, rank 0's clock for timed checkpoints, a non-finite loss, a non-finite gradient sum in
    /// the part a rank checked, a wrong kernel, unreadable rows. Throws the agreed failure (said
    /// once, by the rank that saw it); else says whether to update.
    private func agree(batch: BatchLoader.Batch, loss: Double, finite: Bool, kernelFailure: String?) throws
        -> (agreement: StepAgreement, updates: Bool) {
        let timeDue = communicator.isRoot && config.checkpoint.everySeconds > 0
            && seconds(since: lastTimedCheckpoint) >= config.checkpoint.everySeconds
        let flags = communicator.allReduceMax([stopRequested() ? 1 : 0, timeDue ? 1 : 0,
                                               loss.isFinite ? -1 : Double(communicator.rank), finite ? 0 : 1,
                                               kernelFailure == nil ? -1 : Double(communicator.rank),
                                               batch.failure == nil ? -1 : Double(communicator.rank)])
        if flags[5] >= 0 {
            // Rows a rank could not read (its batch held zeros): that rank says which, once.
            throw AgreedFailure("rank \(Int(flags[5])): \(batch.failure ?? "")", reporter: Int(flags[5]) == communicator.rank)
        }
        if flags[4] >= 0 {
            throw AgreedFailure(kernelFailure ?? "", reporter: kernelFailure != nil && Int(flags[4]) == communicator.rank)
        }
        let agreement = StepAgreement(stop: flags[0] > 0, checkpointDue: flags[1] > 0)
        guard flags[2] >= 0 || flags[3] != 0 else { return (agreement, true) }
        let what = flags[2] >= 0 ? "loss on rank \(Int(flags[2]))" : "gradient"
        switch config.training.onNonFinite {
        case .stop:
            throw AgreedFailure("step \(position.globalStep + 1): non-finite \(what); stopping (training.on_nonfinite: stop; skip_step skips such steps)",
                                reporter: communicator.isRoot)
        case .skipStep:
            if communicator.isRoot { log("step \(position.globalStep + 1): non-finite \(what); update skipped (training.on_nonfinite: skip_step)") }
            return (agreement, false)
        }
    }

    /// Clip and the optimizer's update, the same on every rank.
    private func update() {
        let started = monotonicNanoseconds()
        if config.optimizer.clipNorm > 0 { synchronization.clip(maxNorm: config.optimizer.clipNorm) }
        fault?.freezeDuringUpdate(at: position.globalStep, rank: communicator.rank)
        let parameters = model.parameters
        optimizer.step(parameters: parameters.values, gradients: UnsafeBufferPointer(parameters.gradients), learningRate: learningRate)
        // Every slice of the node's one copy is updated before any rank reads it again.
        statePlacement.publish()
        updateSeconds += seconds(since: started)
    }

    /// The products of the first step checked against float64 (`BLASCheck`, 64 elements of each
    /// distinct call): a library that computes wrong results on this CPU ends the run before
    /// any checkpoint, naming the call. Nil when every product is within float32 rounding.
    private func checkKernels(_ calls: [GEMMCall]) -> String? {
        let corrupt = fault?.corruptsKernelCheck(rank: communicator.rank) ?? false
        guard let failure = BLASCheck.verify(calls, elements: 64, corrupt: corrupt).first(where: { !$0.passed }) else { return nil }
        return "rank \(communicator.rank): \(BLASCheck.kernelsAndCPU()): \(failure.failureLine); "
            + "try another kernel family (OPENBLAS_CORETYPE=Haswell) or another OpenBLAS build; `cohort check-blas --verify CONFIG` checks every element"
    }

    /// Forward, loss and backward of this rank's rows, `batch_size` rows at a time (the
    /// micro-batches of `accumulate_steps`); adds dL/dθ into the flat gradient buffer. A row's loss
    /// covers `positions` targets (T for a language model's window, else 1), each over `width`
    /// outputs, divided by every target of the optimizer step's global batch: so the sum over
    /// micro-batches and ranks is the gradient of the global mean, uneven last batches included.
    /// Batch norm normalizes each micro-batch by its own statistics (as PyTorch does). Returns the loss sum.
    /// The first step records its products and checks them (`checkKernels`): the failure, or nil.
    private func computeGradients(_ batch: BatchLoader.Batch, checkingKernels: Bool) -> (loss: Double, kernelFailure: String?) {
        if checkingKernels { BLASCalls.startRecording() }
        let loss = computeGradients(batch)
        return (loss, checkingKernels ? checkKernels(BLASCalls.stopRecording()) : nil)
    }

    private func computeGradients(_ batch: BatchLoader.Batch) -> Double {
        guard batch.count > 0 else { return 0 }
        let started = monotonicNanoseconds()
        defer { computeSeconds += seconds(since: started) }
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
        if config.training.timingBarrier {
            let barrierStart = monotonicNanoseconds()
            communicator.barrier()
            barrierSeconds += seconds(since: barrierStart)
        }
        let started = monotonicNanoseconds()
        let finite = synchronization.finish()
        let elapsed = seconds(since: started)
        allReduceSeconds += elapsed
        allReduceCalls += 1
        if config.training.timingBarrier { allReduceTimes.append(elapsed) }
        return finite
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
        // Rank 0's own rows stand for every rank's; those before a resume are every rank's already.
        let rate = ((epochTotals.rows - resumedRows) * Double(communicator.size) + resumedRows) / max(elapsed, 1e-9)
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
            setParameters(bestWeights)
            if communicator.isRoot { log("early_stopping: restored the weights of epoch \(callback.bestEpoch)") }
        }
        return true
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
}
