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
    /// them as two layers.
    public init(inputShape: [Int], layers specs: [LayerSpec], maxBatch: Int = 64, seed: UInt64 = 0,
                communicator: Communicator = SingleProcess(), fusePooling: Bool = true) throws {
        let builder = LayerBuilder(parameters: ParameterStore(), maxBatch: maxBatch, seed: seed, communicator: communicator)
        builder.fusesPooling = fusePooling
        builder.typeCounts = typeCounts(specs)
        // Every buffer is counted before it is allocated: a model or batch too large for this
        // process is refused with the bytes it needs, not met by a failed allocation.
        let budget = MemoryBudget()
        Workspace.budget = budget
        defer { Workspace.budget = nil }
        stack = try LayerStack(specs: specs, inputShape: inputShape, builder: builder, prefix: "")
        guard !budget.exceeded else {
            throw CohortError("the model needs \(MemoryBudget.describe(budget.reserved)) (layer buffers for batches of \(maxBatch) rows \(MemoryBudget.describe(budget.layerBytes)), parameters with their gradients and optimizer state \(MemoryBudget.describe(budget.stateBytes))); this process may use \(MemoryBudget.describe(budget.limit)); lower training.batch_size, training.eval_batch_size or the layer sizes")
        }
        builder.finish()
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
    public func backward(outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        stack.backward(outputGradient: outputGradient, batch: batch)
    }

    /// Makes `backward` return a true dL/d(input) (gradient checks of the input).
    public func computeInputGradient() {
        for layer in stack.allLayers { (layer as? InputGradientOptional)?.computesInputGradient = true }
    }

    /// Layers that draw random numbers (dropout), in a fixed order, for checkpoints.
    public var randomizedLayers: [RandomizedLayer] { stack.allLayers.compactMap { $0 as? RandomizedLayer } }

    /// A one-line-per-layer description, printed at the start of training.
    public func summary() -> String {
        var lines = ["input \(inputShape)"]
        for layer in layers {
            let count = parameters.entries.filter { $0.name.hasPrefix(layer.name + "/") }.reduce(0) { $0 + $1.count }
            lines.append("\((layer.name + layer.summaryTag).padding(toLength: 20, withPad: " ", startingAt: 0)) -> \(layer.outputShape)\(count > 0 ? "  \(count) parameters" : "")")
        }
        lines.append("total \(parameters.count) parameters")
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
            let pooled = LayerStack.fusesPool(specs, at: index, inputShape: shape, builder: builder)
            for layer in try LayerStack.makeLayers(specs[index], inputShape: shape, builder: builder, prefix: prefix, pooled: pooled) {
                layers.append(layer)
                shape = layer.outputShape
            }
            if pooled {
                _ = builder.uniqueName(specs[index + 1].name, type: "max_pool")  // later pools keep their numbers
                index += 1
            }
            index += 1
        }
        self.layers = layers
        self.inputShape = inputShape
        inputs = Array(repeating: UnsafePointer(bitPattern: 1)!, count: layers.count)
    }

    /// A conv2d whose activation is ReLU or none, followed by a 2×2 stride-2 max pool, with an
    /// output of at least 2×2: the two run as one layer (Conv2D.pooled).
    static func fusesPool(_ specs: [LayerSpec], at index: Int, inputShape: [Int], builder: LayerBuilder) -> Bool {
        guard builder.fusesPooling, index + 1 < specs.count, inputShape.count == 3,
              case .conv2d(_, let kernel, let stride, let padding, let activation, _, _) = specs[index].kind,
              activation == nil || activation == .relu,
              case .maxPool(2, 2) = specs[index + 1].kind,
              let geometry = try? ConvolutionGeometry(name: "", channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                                                      kernel: kernel, stride: stride, padding: padding)
        else { return false }
        return geometry.outputHeight >= 2 && geometry.outputWidth >= 2
    }

    static func makeLayers(_ spec: LayerSpec, inputShape: [Int], builder: LayerBuilder, prefix: String, pooled: Bool = false) throws -> [Layer] {
        func named(_ type: String) -> String { prefix + builder.uniqueName(spec.name, type: type) }
        func withActivation(_ layer: Layer, _ activation: ActivationKind?) -> [Layer] {
            guard let activation else { return [layer] }
            return [layer, Activation(name: "\(layer.name)/\(activation.rawValue)", kind: activation,
                                      inputShape: layer.outputShape, maxBatch: builder.maxBatch)]
        }
        let maxBatch = builder.maxBatch
        switch spec.kind {
        case .flatten:
            return [Flatten(name: named("flatten"), inputShape: inputShape)]
        case .dense(let units, let activation, let initializer, let bias):
            // A ReLU is fused into the layer; other activations follow as their own layer.
            let dense = Dense(name: named("dense"), inputShape: inputShape, units: units, initializer: initializer ?? .glorotUniform,
                              useBias: bias, fusedReLU: activation == .relu, builder: builder)
            return withActivation(dense, activation == .relu ? nil : activation)
        case .conv2d(let filters, let kernel, let stride, let padding, let activation, let initializer, let bias):
            let conv = try Conv2D(name: named("conv2d"), inputShape: inputShape, filters: filters, kernel: kernel, stride: stride,
                                  padding: padding, initializer: initializer ?? .glorotUniform, useBias: bias,
                                  fusedReLU: activation == .relu, pooled: pooled, builder: builder)
            return withActivation(conv, activation == .relu ? nil : activation)
        case .maxPool(let size, let stride):
            return [try MaxPool2D(name: named("max_pool"), inputShape: inputShape, size: size, stride: stride, maxBatch: maxBatch)]
        case .averagePool(let size, let stride):
            return [try AveragePool2D(name: named("avg_pool"), inputShape: inputShape, size: size, stride: stride, maxBatch: maxBatch)]
        case .globalAveragePool:
            return [try GlobalAveragePool(name: named("global_avg_pool"), inputShape: inputShape, maxBatch: maxBatch)]
        case .dropout(let rate):
            let name = named("dropout")
            return [Dropout(name: name, inputShape: inputShape, rate: rate, generator: builder.dropoutGenerator(), maxBatch: maxBatch)]
        case .batchNorm(let momentum, let epsilon, let sync):
            return [BatchNorm(name: named("batch_norm"), inputShape: inputShape, momentum: momentum, epsilon: epsilon,
                              sync: sync, builder: builder)]
        case .activation(let kind):
            return [Activation(name: named(kind.rawValue), kind: kind, inputShape: inputShape, maxBatch: maxBatch)]
        case .residual(let layers, let projection, let activation):
            return [try Residual(name: named("residual"), inputShape: inputShape, layers: layers, projection: projection,
                                 activation: activation, builder: builder)]
        case .family(let family):
            let layer = try family.options.makeLayer(name: named(family.type), inputShape: inputShape, builder: builder)
            builder.built.append(layer)
            return [layer]
        }
    }

    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        var activation = x
        for (index, layer) in layers.enumerated() {
            inputs[index] = activation
            activation = layer.forward(activation, batch: batch, training: training)
        }
        return activation
    }

    func backward(outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        var gradient = outputGradient
        for index in layers.indices.reversed() {
            gradient = layers[index].backward(inputs[index], outputGradient: gradient, batch: batch)
        }
        return gradient
    }
}
