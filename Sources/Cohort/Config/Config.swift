import Foundation
import Yams

/// A whole training run, as described by a YAML file under `configs/` (keys: configs/README.md).
public struct TrainConfig: Sendable {
    public var name: String
    public var seed: UInt64
    public var runDirectory: String
    public var data: DataConfig
    public var layers: [LayerSpec]
    public var loss: LossKind
    public var optimizer: OptimizerConfig
    public var training: TrainingConfig
    public var checkpoint: CheckpointConfig
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
}

public enum Normalization: String, Sendable {
    /// Integer pixels divided by 255, floats as they are.
    case scale
    /// As `scale`, then per channel (x - mean) / std with the file's `mean`/`std` attributes.
    case standardize
    case none
}

public enum LossKind: String, Sendable {
    case softmaxCrossEntropy = "softmax_cross_entropy"
}

public struct OptimizerConfig: Sendable {
    public enum Kind: String, Sendable { case sgd, adam }
    public var kind: Kind
    public var learningRate: Float
    public var momentum: Float
    public var nesterov: Bool
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
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
}

public struct CheckpointConfig: Sendable {
    public var everyEpochs: Int
    public var everySteps: Int
    public var keepLast: Int
}

/// One entry of `model.layers`.
public enum LayerSpec: Equatable, Sendable {
    case flatten(name: String?)
    case dense(name: String?, units: Int, activation: ActivationKind?, initializer: Initializer?)
    case activation(name: String?, kind: ActivationKind)

    public static let typeNames = ["flatten", "dense", "relu"]
}

public enum ActivationKind: String, Sendable, CaseIterable {
    case relu
}

public enum Initializer: String, Sendable {
    /// U(-a, a), a = sqrt(6 / (fan_in + fan_out)) — Keras' default for Dense.
    case glorotUniform = "glorot_uniform"
    /// N(0, 2 / fan_in) — He et al. 2015, suited to ReLU.
    case heNormal = "he_normal"
}

extension TrainConfig {
    public static func load(path: String, overrides: [String] = []) throws -> TrainConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CohortError("\(path): no such config file")
        }
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
            dropRemainder: try dataMap.choice("remainder", ["partial", "drop"], default: "partial") == "drop"
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

        let lossName = try top.choice("loss", [LossKind.softmaxCrossEntropy.rawValue], default: LossKind.softmaxCrossEntropy.rawValue)

        let optimizerMap = try top.map("optimizer") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "optimizer")
        let kind = OptimizerConfig.Kind(rawValue: try optimizerMap.choice("type", ["sgd", "adam"], default: "adam"))!
        let optimizer = OptimizerConfig(
            kind: kind,
            learningRate: Float(try optimizerMap.double("learning_rate", default: kind == .adam ? 1e-3 : 1e-2, range: 0...10)),
            momentum: Float(try optimizerMap.double("momentum", default: 0, range: 0...1)),
            nesterov: try optimizerMap.bool("nesterov", default: false),
            beta1: Float(try optimizerMap.double("beta1", default: 0.9, range: 0...1)),
            beta2: Float(try optimizerMap.double("beta2", default: 0.999, range: 0...1)),
            epsilon: Float(try optimizerMap.double("epsilon", default: 1e-8, range: 0...1)),
            weightDecay: Float(try optimizerMap.double("weight_decay", default: 0, range: 0...1))
        )
        if optimizer.nesterov && (kind != .sgd || optimizer.momentum == 0) {
            throw optimizerMap.error("nesterov", "Nesterov momentum needs type sgd and momentum > 0")
        }
        try optimizerMap.finish()

        let trainingMap = try top.map("training") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "training")
        let training = TrainingConfig(
            epochs: try trainingMap.int("epochs", default: 1, range: 1...1_000_000),
            batchSize: try trainingMap.int("batch_size", default: 64, range: 1...1_000_000),
            evalBatchSize: try trainingMap.int("eval_batch_size", default: 1000, range: 1...1_000_000),
            maxSteps: try trainingMap.int("max_steps").map { steps in
                guard steps > 0 else { throw trainingMap.error("max_steps", "must be positive") }
                return steps
            },
            logEvery: try trainingMap.int("log_every", default: 0, range: 0...Int.max)
        )
        try trainingMap.finish()

        let checkpointMap = try top.map("checkpoint") ?? ConfigMap(Node([(Node, Node)]()), file: file, path: "checkpoint")
        let checkpoint = CheckpointConfig(
            everyEpochs: try checkpointMap.int("every_epochs", default: 1, range: 0...Int.max),
            everySteps: try checkpointMap.int("every_steps", default: 0, range: 0...Int.max),
            keepLast: try checkpointMap.int("keep_last", default: 3, range: 1...Int.max)
        )
        try checkpointMap.finish()
        try top.finish()

        return TrainConfig(
            name: name, seed: seed, runDirectory: runDirectory, data: data, layers: layers,
            loss: LossKind(rawValue: lossName)!, optimizer: optimizer, training: training,
            checkpoint: checkpoint, text: resolved
        )
    }

    static func parseLayer(_ node: Node, file: String, path: String) throws -> LayerSpec {
        let map = try ConfigMap(node, file: file, path: path)
        guard let type = try map.string("type") else { throw CohortError("\(file): \(path): missing key type") }
        let name = try map.string("name")
        let spec: LayerSpec
        switch type {
        case "flatten":
            spec = .flatten(name: name)
        case "dense":
            guard let units = try map.int("units") else { throw CohortError("\(file): \(path): dense needs units") }
            guard units > 0 else { throw map.error("units", "must be positive") }
            let activation = try map.string("activation").map { value -> ActivationKind in
                guard let kind = ActivationKind(rawValue: value) else {
                    throw map.error("activation", "unknown activation '\(value)' (known: \(ActivationKind.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return kind
            }
            let initializer = try map.string("init").map { value -> Initializer in
                guard let initializer = Initializer(rawValue: value) else {
                    throw map.error("init", "unknown initializer '\(value)' (known: glorot_uniform, he_normal)")
                }
                return initializer
            }
            spec = .dense(name: name, units: units, activation: activation, initializer: initializer)
        default:
            if let kind = ActivationKind(rawValue: type) {
                spec = .activation(name: name, kind: kind)
            } else {
                throw map.error("type", "unknown layer type '\(type)' (known: \(LayerSpec.typeNames.joined(separator: ", ")))")
            }
        }
        try map.finish()
        return spec
    }
}
