import Foundation
import Yams

/// A whole training run, as described by a YAML file under `configs/` (keys: configs/README.md),
/// or built in Swift with the same defaults:
///
///     let config = TrainConfig(name: "mlp", data: DataConfig(train: "data/fashion-mnist/train.h5"),
///                              layers: [.flatten, .dense(128, activation: .relu), .dense(10)])
public struct TrainConfig: Equatable, Sendable {
    public var name: String
    public var seed: UInt64
    public var runDirectory: String
    public var data: DataConfig
    public var layers: [LayerSpec]
    /// `model.init_from`, `model.freeze`, `model.frozen_batch_norm`.
    public var fineTuning: FineTuning
    /// `model.add_layers`: layers on top of a published model's own (`init_from: {huggingface:
    /// DIR}` without `model.layers`); `resolvingPublishedModel` moves them into `layers`.
    public var addedLayers: [LayerSpec] = []
    public var loss: Loss
    public var optimizer: OptimizerConfig
    public var training: TrainingConfig
    public var checkpoint: CheckpointConfig
    public var callbacks: CallbackConfig
    /// Write TensorBoard event files into the run directory.
    public var tensorBoard: Bool
    /// The resolved YAML (after `--set` overrides): stored in every checkpoint and run directory.
    /// A config built in Swift has its own keys written out (`yaml`), which read back equal.
    public var text: String

    public init(name: String, seed: UInt64 = 0, runDirectory: String? = nil, data: DataConfig, layers: [LayerSpec],
                fineTuning: FineTuning = FineTuning(), loss: Loss = .softmaxCrossEntropy(smoothing: 0), optimizer: OptimizerConfig = OptimizerConfig(),
                training: TrainingConfig = TrainingConfig(), checkpoint: CheckpointConfig = CheckpointConfig(),
                callbacks: CallbackConfig = CallbackConfig(), tensorBoard: Bool = true, text: String? = nil) {
        (self.name, self.seed, self.runDirectory, self.data, self.layers) = (name, seed, runDirectory ?? "runs/\(name)", data, layers)
        self.fineTuning = fineTuning
        (self.loss, self.optimizer, self.training, self.checkpoint) = (loss, optimizer, training, checkpoint)
        (self.callbacks, self.tensorBoard, self.text) = (callbacks, tensorBoard, "")
        self.text = text ?? yaml
    }

    /// Equal settings (the text they were read from aside).
    public static func == (a: TrainConfig, b: TrainConfig) -> Bool {
        (a.name, a.seed, a.runDirectory, a.tensorBoard) == (b.name, b.seed, b.runDirectory, b.tensorBoard)
            && a.data == b.data && a.layers == b.layers && a.fineTuning == b.fineTuning && a.loss == b.loss && a.optimizer == b.optimizer
            && a.training == b.training && a.checkpoint == b.checkpoint && a.callbacks == b.callbacks && a.addedLayers == b.addedLayers
    }
}

public struct TrainingConfig: Equatable, Sendable {
    public var epochs: Int
    /// Per rank: the global batch is ranks × batchSize, as in PyTorch DDP.
    public var batchSize: Int
    public var evalBatchSize: Int
    /// Stop after this many optimizer steps in total (used by tests and quick trials).
    public var maxSteps: Int?
    /// Print a progress line every this many steps (0: only per-epoch lines).
    public var logEvery: Int
    public var onNonFinite: NonFinitePolicy
    /// Put a barrier before each gradient all-reduce so that its time excludes waiting for the
    /// slowest rank (benchmarks; costs one small message per step).
    public var timingBarrier: Bool = false
    public var allReduce: AllReduceMethod = .auto
    /// Micro-batches of `batchSize` rows per optimizer step: each rank reads accumulateSteps ×
    /// batchSize rows a step, runs forward and backward on them batchSize at a time, and the
    /// gradients are all-reduced once.
    public var accumulateSteps: Int = 1
    /// Where the parameters and optimizer state live: a copy per rank, or one per node.
    public var state: StateMode = .nodeShared
    /// Start summing each bucket of gradients as soon as backward has finished it (`MPI_Iallreduce`).
    public var overlapAllReduce: Bool = false
    /// Megabytes of gradients per bucket of the overlapped all-reduce.
    public var bucketMegabytes: Double = 4
    /// What gradient sums between nodes travel as.
    public var compress: GradientCompression = .none
    /// Threads of this rank for layer work (nil: the cores the rank is bound to).
    public var threads: Int? = nil
    /// Seconds a step's collectives may take before the job is ended as stalled (0: off).
    public var stallTimeout: Double = 300
    /// What backward computes again instead of keeping from forward (activation checkpointing).
    public var recompute: Recompute = .none
    /// On a resume with another rank count, keep the checkpoint's global batch by changing this
    /// rank's micro-batch and accumulation (elastic restarts: the same sum on fewer ranks).
    public var keepGlobalBatch: Bool = false
    /// Rows each rank takes per optimizer step.
    public var rowsPerStep: Int { batchSize * accumulateSteps }

    public init(epochs: Int = 1, batchSize: Int = 64, evalBatchSize: Int? = nil, maxSteps: Int? = nil, logEvery: Int = 0,
                onNonFinite: NonFinitePolicy = .stop, timingBarrier: Bool = false, allReduce: AllReduceMethod = .auto,
                accumulateSteps: Int = 1, state: StateMode = .nodeShared, overlapAllReduce: Bool = false,
                bucketMegabytes: Double = 4, compress: GradientCompression = .none, threads: Int? = nil, stallTimeout: Double = 300,
                recompute: Recompute = .none) {
        (self.epochs, self.batchSize, self.evalBatchSize, self.maxSteps) = (epochs, batchSize, evalBatchSize ?? batchSize, maxSteps)
        (self.logEvery, self.onNonFinite, self.timingBarrier, self.allReduce) = (logEvery, onNonFinite, timingBarrier, allReduce)
        (self.accumulateSteps, self.state, self.stallTimeout) = (accumulateSteps, state, stallTimeout)
        (self.overlapAllReduce, self.bucketMegabytes, self.compress, self.threads) = (overlapAllReduce, bucketMegabytes, compress, threads)
        self.recompute = recompute
    }
}

/// What backward computes again instead of keeping from forward.
public enum Recompute: String, Sendable {
    /// Nothing: forward keeps every activation backward reads.
    case none
    /// Transformer blocks keep only their outputs; each runs its forward again at the start of
    /// its backward (activation checkpointing, as `torch.utils.checkpoint` per block).
    case blocks
}

/// How the gradients are summed over the ranks.
public enum AllReduceMethod: String, Sendable {
    /// Through memory shared by the ranks of a node (then MPI across nodes) when every node has
    /// the same number of ranks; `MPI_Allreduce` otherwise.
    case auto
    /// `MPI_Allreduce` on the flat gradient buffer, always.
    case mpi
}

/// Where the model state (parameters and optimizer moments) lives.
public enum StateMode: String, Sendable {
    /// A full copy in every rank, as PyTorch DDP and Horovod keep it.
    case replicated
    /// One copy per node in shared memory; each rank of a node updates its slice of it.
    case nodeShared = "node_shared"
}

/// What gradient sums between nodes travel as.
public enum GradientCompression: String, Sendable {
    case none
    /// bfloat16: half the bytes, 8 bits of mantissa; each partial sum rounded to it.
    case bf16
}

/// What a non-finite loss or gradient does to a run.
public enum NonFinitePolicy: String, Sendable {
    /// End the run with the step and rank (the default).
    case stop
    /// Skip that optimizer update on every rank and carry on.
    case skipStep = "skip_step"
}

public struct CheckpointConfig: Equatable, Sendable {
    public var everyEpochs: Int
    public var everySteps: Int
    /// Also every this many seconds of rank 0's clock (0: off), decided by rank 0 for all.
    public var everySeconds: Double
    public var keepLast: Int
    /// Also keep `best.h5`, the epoch checkpoint with the best `monitor` value.
    public var keepBest: Bool
    public var monitor: Metric

    public init(everyEpochs: Int = 1, everySteps: Int = 0, everySeconds: Double = 0, keepLast: Int = 3, keepBest: Bool = false,
                monitor: Metric = .testAccuracy) {
        (self.everyEpochs, self.everySteps, self.everySeconds) = (everyEpochs, everySteps, everySeconds)
        (self.keepLast, self.keepBest, self.monitor) = (keepLast, keepBest, monitor)
    }
}

public struct CallbackConfig: Equatable, Sendable {
    public var earlyStopping: EarlyStopping?
    public var reduceOnPlateau: ReduceOnPlateau?

    public init(earlyStopping: EarlyStopping? = nil, reduceOnPlateau: ReduceOnPlateau? = nil) {
        (self.earlyStopping, self.reduceOnPlateau) = (earlyStopping, reduceOnPlateau)
    }
}

extension TrainConfig {
    public static func load(path: String, overrides: [String] = []) throws -> TrainConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CohortError("\(path): no such config file")
        }
        guard !isDirectory.boolValue else { throw CohortError("\(path): is a directory, not a config file") }
        // Read through a handle, so that a pipe (`<(…)`, /dev/fd/N) works too; at most 1 MiB.
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CohortError("\(path): cannot read the config file: \(String(cString: strerror(errno)))")
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: (1 << 20) + 1)) ?? Data()
        guard data.count <= 1 << 20 else { throw CohortError("\(path): larger than 1 MiB; a config is far smaller") }
        guard let text = String(data: data, encoding: .utf8) else { throw CohortError("\(path): not UTF-8 text") }
        return try parse(text: text, file: path, overrides: overrides)
    }

    public static func parse(text: String, file: String, overrides: [String] = []) throws -> TrainConfig {
        var root = try parseYAML(text, file: file)
        for assignment in overrides { try applyOverride(assignment, to: &root) }
        let resolved = (try? Yams.serialize(node: root)) ?? text
        let top = try ConfigMap(root, file: file, path: "")

        let name = try top.string("name", default: URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent)
        let seed = UInt64(try top.int("seed", default: 0, range: 0...Int.max))
        let runDirectory = try top.string("run_dir", default: "runs/\(name)")

        guard let dataMap = try top.map("data") else { throw CohortError("\(file): missing key data") }
        let data = DataConfig(
            train: try dataMap.requiredString("train"),
            test: try dataMap.string("test"),
            features: try dataMap.string("features", default: "images"),
            labels: try dataMap.string("labels", default: "labels"),
            cache: try dataMap.bool("cache", default: true),
            normalize: Normalization(rawValue: try dataMap.choice("normalize", ["scale", "standardize", "none"], default: "scale"))!,
            dropRemainder: try dataMap.choice("remainder", ["partial", "drop"], default: "partial") == "drop",
            mean: try dataMap.doubles("mean"),
            std: try dataMap.doubles("std"),
            sampling: SamplingMode(rawValue: try dataMap.choice("sampling", ["global", "sharded"], default: "global"))!,
            blockRows: try dataMap.int("block_rows").map { rows in
                guard rows > 0 else { throw dataMap.error("block_rows", "must be positive") }
                return rows
            },
            shuffleBuffer: try dataMap.int("shuffle_buffer", default: 8192, range: 1...Int.max),
            validationSplit: try dataMap.double("validation_split", default: 0, range: 0...0.9),
            prefetch: try dataMap.bool("prefetch", default: true),
            augmentation: try {
                guard let map = try dataMap.map("augment") else { return Augmentation() }
                let augmentation = Augmentation(cropPadding: try map.int("crop_padding", default: 0, range: 0...64),
                                                horizontalFlip: try map.bool("horizontal_flip", default: false))
                try map.finish()
                return augmentation
            }(),
            checkFinite: try dataMap.bool("check_finite", default: true),
            window: try dataMap.int("window").map { window in
                guard (1...1_048_576).contains(window) else { throw dataMap.error("window", "must be in 1...1048576") }
                return window
            }
        )
        try dataMap.finish()

        guard let modelMap = try top.map("model") else { throw CohortError("\(file): missing key model") }
        var fineTuning = FineTuning(freeze: try modelMap.strings("freeze") ?? [],
                                    frozenBatchNorm: FineTuning.FrozenBatchNorm(rawValue: try modelMap.choice(
                                        "frozen_batch_norm", FineTuning.FrozenBatchNorm.allCases.map(\.rawValue), default: "inference"))!)
        if let map = try modelMap.map("init_from") {
            let huggingface = try map.string("huggingface")
            guard (huggingface == nil) != (map.has("checkpoint") == false) else {
                throw map.error("checkpoint", "init_from takes checkpoint (a Cohort checkpoint) or huggingface (a model directory), one of them")
            }
            fineTuning.initFrom = FineTuning.InitFrom(checkpoint: try huggingface ?? map.requiredString("checkpoint"),
                                                      layers: try map.strings("layers"), skip: try map.strings("skip") ?? [])
            fineTuning.initFrom?.huggingface = huggingface != nil
            try map.finish()
        }
        let layers: [LayerSpec]
        if let layerNodes = try modelMap.list("layers"), !layerNodes.isEmpty {
            layers = try layerNodes.enumerated().map { index, node in
                try parseLayer(node, file: file, path: "model.layers[\(index)]")
            }
        } else if let from = fineTuning.initFrom, from.huggingface {
            layers = []  // the published model's own (`resolvingPublishedModel`)
        } else {
            throw CohortError("\(file): model.layers must list at least one layer")
        }
        var addedLayers: [LayerSpec] = []
        if let nodes = try modelMap.list("add_layers") {
            guard layers.isEmpty else {
                throw modelMap.error("add_layers", "adds to a published model's layers (init_from: {huggingface: DIR} without model.layers); list them in model.layers instead")
            }
            addedLayers = try nodes.enumerated().map { index, node in try parseLayer(node, file: file, path: "model.add_layers[\(index)]") }
        }
        try modelMap.finish()

        let loss = try parseLoss(top, file: file)

        let optimizerMap = try top.map("optimizer") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "optimizer")
        let kind = OptimizerConfig.Kind(rawValue: try optimizerMap.choice("type", ["sgd", "adam", "adamw"], default: "adam"))!
        let learningRate = Float(try optimizerMap.double("learning_rate", default: kind == .sgd ? 1e-2 : 1e-3, range: 0...10))
        let optimizer = OptimizerConfig(
            kind: kind,
            learningRate: learningRate,
            momentum: Float(try optimizerMap.double("momentum", default: 0, range: 0...1)),
            nesterov: try optimizerMap.bool("nesterov", default: false),
            beta1: Float(try optimizerMap.double("beta1", default: 0.9, range: 0...1)),
            beta2: Float(try optimizerMap.double("beta2", default: 0.999, range: 0...1)),
            epsilon: Float(try optimizerMap.double("epsilon", default: 1e-8, range: 0...1)),
            weightDecay: Float(try optimizerMap.double("weight_decay", default: kind == .adamw ? 0.01 : 0, range: 0...1)),
            decayBiasAndNorm: try optimizerMap.bool("decay_bias_and_norm", default: false),
            clipNorm: Float(try optimizerMap.double("clip_grad_norm", default: 0, range: 0...1e9)),
            schedule: try parseSchedule(optimizerMap, learningRate: learningRate, file: file)
        )
        if optimizer.nesterov && (kind != .sgd || optimizer.momentum == 0) {
            throw optimizerMap.error("nesterov", "Nesterov momentum needs type sgd and momentum > 0")
        }
        try optimizerMap.finish()

        let trainingMap = try top.map("training") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "training")
        let batchSize = try trainingMap.int("batch_size", default: 64, range: 1...1_000_000)
        var training = TrainingConfig(
            epochs: try trainingMap.int("epochs", default: 1, range: 1...1_000_000),
            batchSize: batchSize,
            // Workspaces are sized for the larger of the two batches: by default evaluation
            // reuses the training batch and costs no extra memory.
            evalBatchSize: try trainingMap.int("eval_batch_size", default: batchSize, range: 1...1_000_000),
            maxSteps: try trainingMap.int("max_steps").map { steps in
                guard steps > 0 else { throw trainingMap.error("max_steps", "must be positive") }
                return steps
            },
            logEvery: try trainingMap.int("log_every", default: 0, range: 0...Int.max),
            onNonFinite: NonFinitePolicy(rawValue: try trainingMap.choice("on_nonfinite", ["stop", "skip_step"], default: "stop"))!,
            timingBarrier: try trainingMap.bool("timing_barrier", default: false),
            allReduce: AllReduceMethod(rawValue: try trainingMap.choice("all_reduce", ["auto", "mpi"], default: "auto"))!,
            accumulateSteps: try trainingMap.int("accumulate_steps", default: 1, range: 1...65_536),
            state: StateMode(rawValue: try trainingMap.choice("state", ["replicated", "node_shared"], default: "node_shared"))!,
            overlapAllReduce: try trainingMap.bool("overlap_all_reduce", default: false),
            bucketMegabytes: try trainingMap.double("bucket_mb", default: 4, range: 0.001...1e6),
            compress: GradientCompression(rawValue: try trainingMap.choice("compress", ["none", "bf16"], default: "none"))!,
            threads: try trainingMap.int("threads").map { threads in
                guard (1...1024).contains(threads) else { throw trainingMap.error("threads", "must be in 1...1024, got \(threads)") }
                return threads
            },
            stallTimeout: try trainingMap.double("stall_timeout", default: 300, range: 0...1e7),
            recompute: Recompute(rawValue: try trainingMap.choice("recompute", ["none", "blocks"], default: "none"))!
        )
        training.keepGlobalBatch = try trainingMap.bool("keep_global_batch", default: false)
        try trainingMap.finish()

        let checkpointMap = try top.map("checkpoint") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "checkpoint")
        let checkpoint = CheckpointConfig(
            everyEpochs: try checkpointMap.int("every_epochs", default: 1, range: 0...Int.max),
            everySteps: try checkpointMap.int("every_steps", default: 0, range: 0...Int.max),
            everySeconds: try checkpointMap.double("every_seconds", default: 0, range: 0...1e9),
            keepLast: try checkpointMap.int("keep_last", default: 3, range: 1...Int.max),
            keepBest: try checkpointMap.bool("keep_best", default: false),
            monitor: Metric(rawValue: try checkpointMap.choice("monitor", Metric.allCases.map(\.rawValue), default: "test_accuracy"))!
        )
        try checkpointMap.finish()

        var callbacks = CallbackConfig()
        if let callbackMap = try top.map("callbacks") {
            func metric(_ map: ConfigMap) throws -> Metric {
                Metric(rawValue: try map.choice("monitor", Metric.allCases.map(\.rawValue), default: "test_loss"))!
            }
            if let map = try callbackMap.map("early_stopping") {
                callbacks.earlyStopping = EarlyStopping(
                    monitor: try metric(map), patience: try map.int("patience", default: 3, range: 1...Int.max),
                    minDelta: try map.double("min_delta", default: 0, range: 0...1e9),
                    restoreBestWeights: try map.bool("restore_best_weights", default: false))
                try map.finish()
            }
            if let map = try callbackMap.map("reduce_lr_on_plateau") {
                callbacks.reduceOnPlateau = ReduceOnPlateau(
                    monitor: try metric(map), factor: try map.double("factor", default: 0.1, range: 0...0.999_999),
                    patience: try map.int("patience", default: 2, range: 1...Int.max),
                    minDelta: try map.double("min_delta", default: 0, range: 0...1e9),
                    cooldown: try map.int("cooldown", default: 0, range: 0...Int.max),
                    minimumRate: try map.double("min_learning_rate", default: 0, range: 0...10))
                try map.finish()
            }
            try callbackMap.finish()
        }
        let tensorBoard = try top.bool("tensorboard", default: true)
        try top.finish()

        var config = TrainConfig(
            name: name, seed: seed, runDirectory: runDirectory, data: data, layers: layers, fineTuning: fineTuning,
            loss: loss, optimizer: optimizer, training: training,
            checkpoint: checkpoint, callbacks: callbacks, tensorBoard: tensorBoard, text: resolved
        )
        config.addedLayers = addedLayers
        return config
    }

    static func parseLoss(_ top: ConfigMap, file: String) throws -> Loss {
        let names = ["softmax_cross_entropy", "binary_cross_entropy", "mean_squared_error"]
        guard let node = top.node("loss") else { return .softmaxCrossEntropy(smoothing: 0) }
        let map: ConfigMap
        let type: String
        if case .scalar = node {
            map = try ConfigMap(Node([(Node("type"), node)]), file: file, path: "loss")
        } else {
            map = try ConfigMap(node, file: file, path: "loss")
        }
        type = try map.choice("type", names, default: "softmax_cross_entropy")
        let loss: Loss
        switch type {
        case "binary_cross_entropy": loss = .binaryCrossEntropy
        case "mean_squared_error": loss = .meanSquaredError
        default: loss = .softmaxCrossEntropy(smoothing: Float(try map.double("label_smoothing", default: 0, range: 0...0.999)))
        }
        try map.finish()
        return loss
    }

    static func parseSchedule(_ optimizer: ConfigMap, learningRate: Float, file: String) throws -> LearningRateSchedule {
        guard let map = try optimizer.map("schedule") else { return LearningRateSchedule(baseRate: learningRate) }
        let kinds = LearningRateSchedule.Kind.allCases.map(\.rawValue)
        var schedule = LearningRateSchedule(
            kind: LearningRateSchedule.Kind(rawValue: try map.choice("type", kinds, default: "constant"))!,
            baseRate: learningRate,
            warmupSteps: try map.int("warmup_steps", default: 0, range: 0...Int.max),
            stepSize: try map.int("step_size", default: 1, range: 1...Int.max),
            gamma: Float(try map.double("gamma", default: 0.1, range: 0...1)),
            minimumRate: Float(try map.double("min_learning_rate", default: 0, range: 0...10)))
        schedule.totalSteps = try map.int("total_steps").map { steps in
            guard steps > 0 else { throw map.error("total_steps", "must be positive") }
            return steps
        }
        try map.finish()
        return schedule
    }

    static func parseLayer(_ node: Node, file: String, path: String) throws -> LayerSpec {
        try LayerRegistry.parse(node, file: file, path: path)
    }
}
