/// `model.init_from`, `model.freeze` and `model.frozen_batch_norm`: start from another run's
/// weights and train only some of them (docs/guide.md, "Fine-tuning").
public struct FineTuning: Equatable, Sendable {
    /// Load parameters (and batch-norm buffers) by name and shape from a checkpoint.
    public struct InitFrom: Equatable, Sendable {
        /// A Cohort checkpoint (or a directory of them), or with `huggingface` a Hugging Face
        /// model directory (`init_from: {huggingface: DIR}`), imported as `cohort import` does.
        public var checkpoint: String
        public var huggingface = false
        /// Names or prefixes to load (nil: every tensor of the model the checkpoint has).
        public var layers: [String]?
        /// Names or prefixes never loaded (a new head).
        public var skip: [String]
        public init(checkpoint: String, layers: [String]? = nil, skip: [String] = []) {
            (self.checkpoint, self.layers, self.skip) = (checkpoint, layers, skip)
        }
    }

    /// How a frozen batch norm runs in training: on its running statistics, which stay as
    /// loaded (Keras' behaviour for a non-trainable BatchNormalization), or on batch statistics
    /// that keep updating the running ones (PyTorch's, unless the module is put in eval mode).
    public enum FrozenBatchNorm: String, Sendable, CaseIterable {
        case inference, train
    }

    public var initFrom: InitFrom?
    /// Names or prefixes of parameters that stay fixed: no weight decay, no update, not
    /// all-reduced, and no backward pass through the layers before the first trainable one.
    public var freeze: [String]
    public var frozenBatchNorm: FrozenBatchNorm

    public init(initFrom: InitFrom? = nil, freeze: [String] = [], frozenBatchNorm: FrozenBatchNorm = .inference) {
        (self.initFrom, self.freeze, self.frozenBatchNorm) = (initFrom, freeze, frozenBatchNorm)
    }

    /// Whether a parameter or buffer name (`residual_1/conv2d_2/weight`) is named by `pattern`:
    /// the name itself, a layer path it lies under (`residual_1`, `residual_1/conv2d_2`), or any
    /// name starting with the text before a final `*` (`residual_*`).
    public static func matches(_ name: String, _ pattern: String) -> Bool {
        if pattern.hasSuffix("*") { return name.hasPrefix(String(pattern.dropLast())) }
        return name == pattern || name.hasPrefix(pattern + "/")
    }

    /// The names `patterns` pick out of `names`; a pattern that picks nothing is an error
    /// naming `key` (a misspelt layer must not leave a model silently unfrozen).
    public static func select(_ patterns: [String], from names: [String], key: String) throws -> Set<String> {
        var selected = Set<String>()
        for pattern in patterns {
            let matched = names.filter { matches($0, pattern) }
            guard !matched.isEmpty else {
                let layers = Array(Set(names.compactMap { $0.split(separator: "/").first.map(String.init) })).sorted()
                throw CohortError("\(key): '\(pattern)' names no parameter of the model (its layers: \(layers.joined(separator: ", ")))")
            }
            selected.formUnion(matched)
        }
        return selected
    }
}

extension Model {
    /// Fixes the parameters named in `frozen`: backward stops at the first top-level layer
    /// holding a trainable parameter (the layers before it need no gradients at all), and batch
    /// norms whose parameters are all frozen run on their running statistics when asked.
    func freeze(_ frozen: Set<String>, batchNormInference: Bool) {
        let trainable = parameters.entries.filter { !frozen.contains($0.name) }.map(\.name)
        let first = stack.layers.firstIndex { layer in trainable.contains { FineTuning.matches($0, layer.name) } }
        stack.backwardStart = first ?? stack.layers.count
        if let first, let optional = stack.layers[first] as? InputGradientOptional { optional.computesInputGradient = false }
        guard batchNormInference else { return }
        for layer in stack.allLayers {
            let own = parameters.entries.filter { $0.name.hasPrefix(layer.name + "/") }.map(\.name)
            if !own.isEmpty, own.allSatisfy(frozen.contains) { layer.useRunningStatistics() }
        }
    }
}
