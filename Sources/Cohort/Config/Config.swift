import Foundation
import Yams

/// A whole training run, as described by a YAML file under `configs/` (keys: configs/README.md).
public struct TrainConfig: Sendable {
    public var name: String
    public var seed: UInt64
    public var runDirectory: String
    public var data: DataConfig
    public var layers: [LayerSpec]
    public var loss: Loss
    public var optimizer: OptimizerConfig
    public var training: TrainingConfig
    public var checkpoint: CheckpointConfig
    public var callbacks: CallbackConfig
    /// Write TensorBoard event files into the run directory.
    public var tensorBoard: Bool
    /// The resolved YAML (after `--set` overrides): stored in every checkpoint and run directory.
    public var text: String
}

public struct DataConfig: Sendable {
    public var train: String
    public var test: String?
    public var features: String
    public var labels: String
    /// Read the whole features dataset into memory once (its size in the file's element type)
    /// instead of reading each batch's rows from the file.
    public var cache: Bool
    public var normalize: Normalization
    public var dropRemainder: Bool
    /// Per-channel mean and std for `standardize` (default: the file's attributes).
    public var mean: [Double]?
    public var std: [Double]?
    public var sampling: SamplingMode
    /// Rows per block in `sharded` mode (default: the features dataset's chunk rows).
    public var blockRows: Int?
    /// Rows held by each rank's shuffle buffer in `sharded` mode.
    public var shuffleBuffer: Int
    /// Fraction of the training file held out for validation: its last rows, before shuffling.
    public var validationSplit: Double
    /// Read and decode batches on a background thread, one batch ahead.
    public var prefetch: Bool
    public var augmentation: Augmentation
    /// Scan float features for NaN/Inf before training when they are not cached.
    public var checkFinite: Bool
    /// Tokens per sample of a token file (`cohort prepare text`): windows of `window` + 1 tokens.
    public var window: Int? = nil
}

public enum SamplingMode: String, Sendable {
    /// One permutation of all rows per epoch, split into global batches.
    case global
    /// Chunk-aligned blocks dealt to ranks, shuffled within a bounded buffer: for data larger than memory.
    case sharded
}

/// Per-rank, seeded image augmentation, applied to training batches only.
public struct Augmentation: Equatable, Sendable {
    /// Zero-pad by this many pixels and crop back to the original size at a random offset (0: off).
    public var cropPadding: Int = 0
    public var horizontalFlip: Bool = false
    public var isEnabled: Bool { cropPadding > 0 || horizontalFlip }
    public init(cropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
    }
}

public enum Normalization: String, Sendable {
    /// Integer pixels divided by 255, floats as they are.
    case scale
    /// As `scale`, then per channel (x - mean) / std with the file's `mean`/`std` attributes.
    case standardize
    case none
}

public struct OptimizerConfig: Sendable {
    public enum Kind: String, Sendable { case sgd, adam, adamw }
    public var kind: Kind
    public var learningRate: Float
    public var momentum: Float
    public var nesterov: Bool
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Apply weight decay to biases and batch-norm γ/β too (default: weights only).
    public var decayBiasAndNorm: Bool
    /// Clip the averaged gradient to this global L2 norm (0: off).
    public var clipNorm: Float
    public var schedule: LearningRateSchedule
}

public struct TrainingConfig: Sendable {
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
    /// Seconds a step's collectives may take before the job is ended as stalled (0: off).
    public var stallTimeout: Double = 300
    /// Rows each rank takes per optimizer step.
    public var rowsPerStep: Int { batchSize * accumulateSteps }
}

/// How the gradients are summed over the ranks.
public enum AllReduceMethod: String, Sendable {
    /// Through memory shared by the ranks of a node (then MPI across nodes) when every node has
    /// the same number of ranks; `MPI_Allreduce` otherwise.
    case auto
    /// `MPI_Allreduce` on the flat gradient buffer, always.
    case mpi
}

/// What a non-finite loss or gradient does to a run.
public enum NonFinitePolicy: String, Sendable {
    /// End the run with the step and rank (the default).
    case stop
    /// Skip that optimizer update on every rank and carry on.
    case skipStep = "skip_step"
}

public struct CheckpointConfig: Sendable {
    public var everyEpochs: Int
    public var everySteps: Int
    /// Also every this many seconds of rank 0's clock (0: off), decided by rank 0 for all.
    public var everySeconds: Double
    public var keepLast: Int
    /// Also keep `best.h5`, the epoch checkpoint with the best `monitor` value.
    public var keepBest: Bool
    public var monitor: Metric
}

public struct CallbackConfig: Sendable {
    public var earlyStopping: EarlyStopping?
    public var reduceOnPlateau: ReduceOnPlateau?
}

/// A per-epoch figure callbacks and best-checkpoint tracking can watch.
public enum Metric: String, Sendable, CaseIterable {
    case testAccuracy = "test_accuracy"
    case testLoss = "test_loss"
    case trainAccuracy = "train_accuracy"
    case trainLoss = "train_loss"
    case validationAccuracy = "validation_accuracy"
    case validationLoss = "validation_loss"

    public var lowerIsBetter: Bool { self == .testLoss || self == .trainLoss || self == .validationLoss }

    public func value(in report: EpochReport) -> Double? {
        switch self {
        case .testAccuracy: return report.testAccuracy
        case .testLoss: return report.testLoss
        case .trainAccuracy: return report.trainAccuracy
        case .trainLoss: return report.trainLoss
        case .validationAccuracy: return report.validationAccuracy
        case .validationLoss: return report.validationLoss
        }
    }
}

/// One entry of `model.layers` (keys: configs/README.md). The same values build models in
/// Swift code: `Model(inputShape: [1, 28, 28], layers: [.conv2d(32, kernel: 3, activation: .relu), .maxPool(2), .flatten, .dense(10)])`.
public struct LayerSpec: Equatable, Sendable {
    public var name: String?
    public var kind: Kind

    public indirect enum Kind: Equatable, Sendable {
        case flatten
        case dense(units: Int, activation: ActivationKind?, initializer: Initializer?, bias: Bool)
        case conv2d(filters: Int, kernel: Int, stride: Int, padding: Padding, activation: ActivationKind?,
                    initializer: Initializer?, bias: Bool)
        case maxPool(size: Int, stride: Int)
        case averagePool(size: Int, stride: Int)
        case globalAveragePool
        case dropout(rate: Float)
        case batchNorm(momentum: Float, epsilon: Float, sync: Bool)
        case activation(ActivationKind)
        /// output = activation(main(x) + shortcut(x)); the shortcut is the identity, or a 1×1
        /// convolution (stride and channels to match) followed by batch norm when `projection`
        /// is true, or when it is nil and the shapes differ.
        case residual(layers: [LayerSpec], projection: Bool?, activation: ActivationKind?)
        /// A family of `LayerRegistry` (layer norm, embeddings, attention, Transformer blocks, …).
        case family(FamilyOptions)
    }

    public init(name: String? = nil, _ kind: Kind) {
        self.name = name
        self.kind = kind
    }

    public static let typeNames = ["flatten", "dense", "conv2d", "max_pool", "avg_pool", "global_avg_pool",
                                   "dropout", "batch_norm", "residual"] + LayerRegistry.families.map { $0.type }
        + ActivationKind.allCases.map(\.rawValue)

    // Keras-like constructors for models written in Swift.
    public static var flatten: LayerSpec { LayerSpec(.flatten) }
    public static func dense(_ units: Int, activation: ActivationKind? = nil, initializer: Initializer? = nil, name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, .dense(units: units, activation: activation, initializer: initializer, bias: true))
    }
    public static func conv2d(_ filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .valid,
                              activation: ActivationKind? = nil, bias: Bool = true, name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, .conv2d(filters: filters, kernel: kernel, stride: stride, padding: padding,
                                      activation: activation, initializer: nil, bias: bias))
    }
    public static func maxPool(_ size: Int, stride: Int? = nil) -> LayerSpec { LayerSpec(.maxPool(size: size, stride: stride ?? size)) }
    public static func averagePool(_ size: Int, stride: Int? = nil) -> LayerSpec { LayerSpec(.averagePool(size: size, stride: stride ?? size)) }
    public static var globalAveragePool: LayerSpec { LayerSpec(.globalAveragePool) }
    public static func dropout(_ rate: Float) -> LayerSpec { LayerSpec(.dropout(rate: rate)) }
    public static func batchNorm(momentum: Float = 0.1, epsilon: Float = 1e-5, sync: Bool = false) -> LayerSpec {
        LayerSpec(.batchNorm(momentum: momentum, epsilon: epsilon, sync: sync))
    }
    public static func activation(_ kind: ActivationKind) -> LayerSpec { LayerSpec(.activation(kind)) }
    public static func residual(_ layers: [LayerSpec], projection: Bool? = nil, activation: ActivationKind? = .relu) -> LayerSpec {
        LayerSpec(.residual(layers: layers, projection: projection, activation: activation))
    }
}

public enum Padding: String, Sendable {
    /// No padding: output = floor((input − kernel) / stride) + 1.
    case valid
    /// Output = ceil(input / stride), zeros split as TensorFlow does (the extra one at the end).
    case same
}

public enum ActivationKind: Equatable, Sendable, CaseIterable, RawRepresentable {
    case relu
    case leakyRelu(slope: Float)
    case sigmoid
    case tanh
    case gelu

    public static let allCases: [ActivationKind] = [.relu, .leakyRelu(slope: 0.01), .sigmoid, .tanh, .gelu]

    public init?(rawValue: String) {
        switch rawValue {
        case "relu": self = .relu
        case "leaky_relu": self = .leakyRelu(slope: 0.01)
        case "sigmoid": self = .sigmoid
        case "tanh": self = .tanh
        case "gelu": self = .gelu
        default: return nil
        }
    }

    public var rawValue: String {
        switch self {
        case .relu: return "relu"
        case .leakyRelu: return "leaky_relu"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .gelu: return "gelu"
        }
    }
}

public enum Initializer: String, Sendable {
    /// U(-a, a), a = sqrt(6 / (fan_in + fan_out)) — Keras' default for Dense and Conv2D.
    case glorotUniform = "glorot_uniform"
    /// N(0, 2 / fan_in) — He et al. 2015, suited to ReLU.
    case heNormal = "he_normal"
    /// N(0, 0.02²) — GPT-2's and BERT's weights and embeddings (nanoGPT's `_init_weights`).
    case normal = "normal"
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
        guard let layerNodes = try modelMap.list("layers"), !layerNodes.isEmpty else {
            throw CohortError("\(file): model.layers must list at least one layer")
        }
        let layers = try layerNodes.enumerated().map { index, node in
            try parseLayer(node, file: file, path: "model.layers[\(index)]")
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
        let training = TrainingConfig(
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
            stallTimeout: try trainingMap.double("stall_timeout", default: 300, range: 0...1e7)
        )
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

        return TrainConfig(
            name: name, seed: seed, runDirectory: runDirectory, data: data, layers: layers,
            loss: loss, optimizer: optimizer, training: training,
            checkpoint: checkpoint, callbacks: callbacks, tensorBoard: tensorBoard, text: resolved
        )
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
        let map = try ConfigMap(node, file: file, path: path)
        guard let type = try map.string("type") else { throw CohortError("\(file): \(path): missing key type") }
        let name = try map.string("name")
        func activation() throws -> ActivationKind? {
            try map.string("activation").map { value in
                guard let kind = ActivationKind(rawValue: value) else {
                    throw map.error("activation", "unknown activation '\(value)' (known: \(ActivationKind.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return kind
            }
        }
        func initializer() throws -> Initializer? {
            try map.string("init").map { value in
                guard let initializer = Initializer(rawValue: value) else {
                    throw map.error("init", "unknown initializer '\(value)' (known: glorot_uniform, he_normal, normal)")
                }
                return initializer
            }
        }
        func required(_ key: String, _ range: ClosedRange<Int> = 1...1_000_000) throws -> Int {
            guard map.has(key) else { throw CohortError("\(file): \(path): \(type) needs \(key)") }
            return try map.int(key, default: 0, range: range)
        }
        let kind: LayerSpec.Kind
        switch type {
        case "flatten":
            kind = .flatten
        case "dense":
            kind = .dense(units: try required("units"), activation: try activation(), initializer: try initializer(),
                          bias: try map.bool("bias", default: true))
        case "conv2d":
            kind = .conv2d(filters: try required("filters"), kernel: try required("kernel", 1...64),
                           stride: try map.int("stride", default: 1, range: 1...64),
                           padding: Padding(rawValue: try map.choice("padding", ["valid", "same"], default: "valid"))!,
                           activation: try activation(), initializer: try initializer(), bias: try map.bool("bias", default: true))
        case "max_pool", "avg_pool":
            let size = try required("size", 1...64)
            let stride = try map.int("stride", default: size, range: 1...64)
            kind = type == "max_pool" ? .maxPool(size: size, stride: stride) : .averagePool(size: size, stride: stride)
        case "global_avg_pool":
            kind = .globalAveragePool
        case "dropout":
            kind = .dropout(rate: Float(try map.double("rate", default: 0.5, range: 0...0.999)))
        case "batch_norm":
            kind = .batchNorm(momentum: Float(try map.double("momentum", default: 0.1, range: 0...1)),
                              epsilon: Float(try map.double("epsilon", default: 1e-5, range: 0...1)),
                              sync: try map.bool("sync", default: false))
        case "residual":
            guard let nodes = try map.list("layers"), !nodes.isEmpty else {
                throw CohortError("\(file): \(path): residual needs a non-empty list of layers")
            }
            let layers = try nodes.enumerated().map { try parseLayer($1, file: file, path: "\(path).layers[\($0)]") }
            let projection = map.has("projection") ? try map.bool("projection", default: false) : nil
            kind = .residual(layers: layers, projection: projection, activation: try activation())
        case "leaky_relu":
            kind = .activation(.leakyRelu(slope: Float(try map.double("slope", default: 0.01, range: 0...1))))
        case _ where LayerRegistry.family(named: type) != nil:
            kind = .family(FamilyOptions(try LayerRegistry.family(named: type)!.init(config: map)))
        default:
            guard let activation = ActivationKind(rawValue: type) else {
                throw map.error("type", "unknown layer type '\(type)' (known: \(LayerSpec.typeNames.joined(separator: ", ")))")
            }
            kind = .activation(activation)
        }
        try map.finish()
        return LayerSpec(name: name, kind)
    }
}
