/// A model: a stack of layers over one flat parameter store (and one flat buffer store).
///
///     let model = try Model(inputShape: [1, 28, 28], layers: [
///         .conv2d(32, kernel: 3, activation: .relu), .maxPool(2),
///         .flatten, .dense(64, activation: .relu), .dense(10),
///     ])
public final class Model {
    public let parameters: ParameterStore
    public let inputShape: [Int]
    public let maxBatch: Int
    let stack: LayerStack

    public var layers: [Layer] { stack.layers }
    public var outputShape: [Int] { stack.outputShape }

    /// Builds the layers for samples of `inputShape` (NCHW for images), initializing weights
    /// from `seed`. Workspaces are sized for batches of up to `maxBatch` rows. `communicator`
    /// serves synchronized batch norm and gives each rank its own dropout streams.
    /// `fusePooling` folds a 2×2 max pool into the convolution before it (one layer, the same
    /// results bit for bit, and the full-size activation never leaves the cache); false keeps
    /// them as two layers. `shareBlockGradients` gives all Transformer blocks one set of
    /// backward buffers (`BlockGradients`; the same results bit for bit); false gives each its own.
    /// `recomputeBlocks` (activation checkpointing) keeps only each Transformer block's output
    /// from forward and runs the block's forward again at the start of its backward, so the
    /// blocks share all their other buffers: about one forward more per step for a fraction of
    /// the activations' memory, the same results bit for bit. `willLoad` names the parameters
    /// (by name and shape) that the caller overwrites next: their random draws skip the transforms.
    public init(inputShape: [Int], layers specs: [LayerSpec], maxBatch: Int = 64, seed: UInt64 = 0,
                communicator: Communicator = SingleProcess(), fusePooling: Bool = true,
                shareBlockGradients: Bool = true, recomputeBlocks: Bool = false,
                willLoad: (String, [Int]) -> Bool = { _, _ in false }) throws {
        // Every buffer is counted before it is allocated: a model or batch too large for this
        // process is refused with the bytes it needs, not met by a failed allocation.
        let budget = MemoryBudget()
        let blockGradients = shareBlockGradients || recomputeBlocks ? BlockGradients(recomputesBlocks: recomputeBlocks) : nil
        let builder = LayerBuilder(parameters: ParameterStore(), maxBatch: maxBatch, seed: seed, communicator: communicator,
                                   budget: budget, blockGradients: blockGradients)
        builder.fusesPooling = fusePooling
        builder.typeCounts = typeCounts(specs)
        stack = try LayerStack(specs: specs, inputShape: inputShape, builder: builder, prefix: "")
        if recomputeBlocks && blockGradients?.blocks == 0 {
            throw CohortError("training.recompute: blocks computes Transformer blocks again in backward; this model has no transformer_block layer")
        }
        guard !budget.exceeded else {
            throw CohortError("the model needs \(MemoryBudget.describe(budget.reserved)) (layer buffers for batches of \(maxBatch) rows \(MemoryBudget.describe(budget.layerBytes)), parameters with their gradients and optimizer state \(MemoryBudget.describe(budget.stateBytes))); this process may use \(MemoryBudget.describe(budget.limit)); lower training.batch_size, training.eval_batch_size or the layer sizes")
        }
        builder.finish(willLoad: willLoad)
        layerBufferBytes = budget.layerBytes
        // The first layer with parameters needs no input gradient when only shape-only layers precede it.
        for layer in stack.layers {
            if let optional = layer as? InputGradientOptional {
                optional.computesInputGradient = false
                break
            }
            guard layer.isShapeOnly else { break }
        }
        parameters = builder.parameters
        self.inputShape = inputShape
        self.maxBatch = maxBatch
    }

    public convenience init(specs: [LayerSpec], inputShape: [Int], maxBatch: Int, seed: UInt64,
                            communicator: Communicator = SingleProcess()) throws {
        try self.init(inputShape: inputShape, layers: specs, maxBatch: maxBatch, seed: seed, communicator: communicator)
    }

    /// x is [batch, inputShape...]; returns [batch, outputShape...].
    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the model's workspace of \(maxBatch)")
        return stack.forward(x, batch: batch, training: training)
    }

    /// Accumulates dL/dθ into `parameters.gradients` from dL/d(output) of the last forward;
    /// returns dL/d(input) (not computed when the first layer is a Dense or Conv2D, unless
    /// `computeInputGradient()` was called).
    @discardableResult
    /// `finished(i)` runs after layer i's backward (last layer first): from then on no later
    /// call writes the gradients of layers i and above (an overlapped all-reduce starts them).
    public func backward(outputGradient: UnsafePointer<Float>, batch: Int,
                         finished: ((Int) -> Void)? = nil) -> UnsafePointer<Float> {
        stack.backward(outputGradient: outputGradient, batch: batch, finished: finished)
    }

    /// Where each top-level layer's parameters begin in the flat gradient buffer (its nested
    /// layers' included), nil for a layer without any.
    public var parameterStarts: [Int?] {
        layers.map { layer in parameters.entries.filter { $0.name.hasPrefix(layer.name + "/") }.map(\.offset).min() }
    }

    /// Makes `backward` return a true dL/d(input) (gradient checks of the input).
    public func computeInputGradient() {
        for layer in stack.allLayers { (layer as? InputGradientOptional)?.computesInputGradient = true }
    }

    /// Layers that draw random numbers (dropout), in a fixed order, for checkpoints.
    public var randomizedLayers: [RandomizedLayer] { stack.allLayers.compactMap { $0 as? RandomizedLayer } }

    /// A one-line-per-layer description, printed at the start of training.
    /// Bytes of every layer's buffers (activations kept for backward, gradients, scratch),
    /// sized for the largest batch.
    public private(set) var layerBufferBytes = 0

    public func summary() -> String {
        var lines = ["input \(inputShape)"]
        for layer in layers {
            let count = parameters.entries.filter { $0.name.hasPrefix(layer.name + "/") }.reduce(0) { $0 + $1.count }
            lines.append("\((layer.name + layer.summaryTag).padding(toLength: 20, withPad: " ", startingAt: 0)) -> \(layer.outputShape)\(count > 0 ? "  \(count) parameters" : "")")
        }
        lines.append("total \(parameters.count) parameters; layer buffers \(String(format: "%.1f", Double(layerBufferBytes) / 1e6)) MB for batches of \(maxBatch) rows")
        return lines.joined(separator: "\n")
    }
}

/// Layers in sequence: `forward` is the list of layer calls, `backward` the same list reversed.
final class LayerStack {
    let layers: [Layer]
    let inputShape: [Int]
    private var inputs: [UnsafePointer<Float>]

    var outputShape: [Int] { layers.last?.outputShape ?? inputShape }

    /// Every layer, including those inside containers (residual and Transformer blocks, attention, LSTM stacks).
    var allLayers: [Layer] { layers.flatMap(\.selfAndDescendants) }

    init(specs: [LayerSpec], inputShape: [Int], builder: LayerBuilder, prefix: String) throws {
        var shape = inputShape
        var layers: [Layer] = []
        var index = 0
        while index < specs.count {
            var spec = specs[index]
            // Two entries that one layer does together (a convolution and its 2×2 max pool).
            let next = index + 1 < specs.count ? specs[index + 1] : nil
            var fusedNext = false
            if let next, let fused = spec.options.fused(with: next, inputShape: shape, builder: builder) {
                spec.options = fused
                fusedNext = true
            }
            for layer in try LayerStack.makeLayers(spec, inputShape: shape, builder: builder, prefix: prefix) {
                layers.append(layer)
                shape = layer.outputShape
            }
            if let next, fusedNext {
                _ = builder.uniqueName(next.name, type: next.type)  // later entries keep their numbers
                index += 1
            }
            index += 1
        }
        self.layers = layers
        self.inputShape = inputShape
        inputs = Array(repeating: UnsafePointer(bitPattern: 1)!, count: layers.count)
    }

    /// The layer of one entry, named `<type>_<n>` unless it has a name, and the activation that
    /// follows it when the family asks for one.
    static func makeLayers(_ spec: LayerSpec, inputShape: [Int], builder: LayerBuilder, prefix: String) throws -> [Layer] {
        let layer = try spec.options.makeLayer(name: prefix + builder.uniqueName(spec.name, type: spec.type), inputShape: inputShape,
                                               builder: builder)
        builder.built.append(layer)
        guard let activation = spec.options.followingActivation else { return [layer] }
        return [layer, Activation(name: "\(layer.name)/\(activation.rawValue)", kind: activation, inputShape: layer.outputShape,
                                  builder: builder)]
    }

    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        var activation = x
        for (index, layer) in layers.enumerated() {
            inputs[index] = activation
            activation = layer.timedForward(activation, batch: batch, training: training)
        }
        return activation
    }

    /// The first layer backward reaches: layers before it (frozen ones) get no gradients.
    var backwardStart = 0

    func backward(outputGradient: UnsafePointer<Float>, batch: Int, finished: ((Int) -> Void)? = nil) -> UnsafePointer<Float> {
        var gradient = outputGradient
        for index in layers.indices.reversed() where index >= backwardStart {
            gradient = layers[index].timedBackward(inputs[index], outputGradient: gradient, batch: batch)
            finished?(index)
        }
        return gradient
    }
}
