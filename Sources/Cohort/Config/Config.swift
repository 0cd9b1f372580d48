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
public enum Recompute: String, Sendable, CaseIterable {
    /// Nothing: forward keeps every activation backward reads.
    case none
    /// Transformer blocks keep only their outputs; each runs its forward again at the start of
    /// its backward (activation checkpointing, as `torch.utils.checkpoint` per block).
    case blocks
}

/// How the gradients are summed over the ranks.
public enum AllReduceMethod: String, Sendable, CaseIterable {
    /// Through memory shared by the ranks of a node (then MPI across nodes) when every node has
    /// the same number of ranks; `MPI_Allreduce` otherwise.
    case auto
    /// `MPI_Allreduce` on the flat gradient buffer, always.
    case mpi
}

/// Where the model state (parameters and optimizer moments) lives.
public enum StateMode: String, Sendable, CaseIterable {
    /// A full copy in every rank, as PyTorch DDP and Horovod keep it.
    case replicated
    /// One copy per node in shared memory; each rank of a node updates its slice of it.
    case nodeShared = "node_shared"
}

/// What gradient sums between nodes travel as.
public enum GradientCompression: String, Sendable, CaseIterable {
    case none
    /// bfloat16: half the bytes, 8 bits of mantissa; each partial sum rounded to it.
    case bf16
}

/// What a non-finite loss or gradient does to a run.
public enum NonFinitePolicy: String, Sendable, CaseIterable {
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
        let data = try DataConfig.parse(dataMap, over: DataConfig(train: try dataMap.requiredString("train")))
        guard let modelMap = try top.map("model") else { throw CohortError("\(file): missing key model") }
        let fineTuning = try FineTuning.parse(modelMap)
        let (layers, addedLayers) = try parseLayers(modelMap, publishedModel: fineTuning.initFrom?.huggingface == true, file: file)
        try modelMap.finish()
        let loss = try parseLoss(top, file: file)
        let empty = { (path: String) in try ConfigMap(Node([(Node, Node)]()), file: file, path: path) }
        let optimizer = try OptimizerConfig.parse(top.map("optimizer") ?? empty("optimizer"))
        let training = try TrainingConfig.parse(top.map("training") ?? empty("training"), over: TrainingConfig())
        let checkpoint = try CheckpointConfig.parse(top.map("checkpoint") ?? empty("checkpoint"), over: CheckpointConfig())
        let callbacks = try CallbackConfig.parse(top.map("callbacks") ?? empty("callbacks"), over: CallbackConfig())
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

    /// `model.layers`, or none for a published model's own (`resolvingPublishedModel`), and
    /// `model.add_layers` on top of those.
    static func parseLayers(_ model: ConfigMap, publishedModel: Bool, file: String) throws -> (layers: [LayerSpec], added: [LayerSpec]) {
        let layers: [LayerSpec]
        if let nodes = try model.list("layers"), !nodes.isEmpty {
            layers = try nodes.enumerated().map { index, node in try parseLayer(node, file: file, path: "model.layers[\(index)]") }
        } else if publishedModel {
            layers = []
        } else {
            throw CohortError("\(file): model.layers must list at least one layer")
        }
        guard let nodes = try model.list("add_layers") else { return (layers, []) }
        guard layers.isEmpty else {
            throw model.error("add_layers", "adds to a published model's layers (init_from: {huggingface: DIR} without model.layers); list them in model.layers instead")
        }
        return (layers, try nodes.enumerated().map { index, node in try parseLayer(node, file: file, path: "model.add_layers[\(index)]") })
    }

    static func parseLayer(_ node: Node, file: String, path: String) throws -> LayerSpec {
        try LayerRegistry.parse(node, file: file, path: path)
    }
}
