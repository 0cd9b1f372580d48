/// A stack of layers over one flat parameter store: `forward` is the list of layer calls,
/// `backward` the same list reversed. Nothing else happens in between.
public final class Model {
    public let layers: [Layer]
    public let parameters: ParameterStore
    public let inputShape: [Int]
    public let maxBatch: Int
    private var inputs: [UnsafePointer<Float>] = []

    public var outputShape: [Int] { layers.last?.outputShape ?? inputShape }

    /// Builds the layers of `specs` for samples of `inputShape` (NCHW for images), initializing
    /// weights from `seed`. Workspaces are sized for batches of up to `maxBatch` rows.
    public init(specs: [LayerSpec], inputShape: [Int], maxBatch: Int, seed: UInt64) throws {
        let builder = LayerBuilder(parameters: ParameterStore(), maxBatch: maxBatch, seed: seed)
        var shape = inputShape
        var layers: [Layer] = []
        for spec in specs {
            for layer in try Model.makeLayers(spec, inputShape: shape, builder: builder) {
                layers.append(layer)
                shape = layer.outputShape
            }
        }
        builder.finish()
        self.layers = layers
        self.parameters = builder.parameters
        self.inputShape = inputShape
        self.maxBatch = maxBatch
        inputs = Array(repeating: UnsafePointer(bitPattern: 1)!, count: layers.count)
    }

    static func makeLayers(_ spec: LayerSpec, inputShape: [Int], builder: LayerBuilder) throws -> [Layer] {
        switch spec {
        case .flatten(let name):
            return [Flatten(name: builder.uniqueName(name, type: "flatten"), inputShape: inputShape)]
        case .dense(let name, let units, let activation, let initializer):
            let layerName = builder.uniqueName(name, type: "dense")
            let dense = Dense(name: layerName, inputShape: inputShape, units: units,
                              initializer: initializer ?? .glorotUniform, builder: builder)
            guard let activation else { return [dense] }
            return [dense, Activation(name: "\(layerName)/\(activation.rawValue)", kind: activation,
                                      inputShape: dense.outputShape, maxBatch: builder.maxBatch)]
        case .activation(let name, let kind):
            return [Activation(name: builder.uniqueName(name, type: kind.rawValue), kind: kind,
                               inputShape: inputShape, maxBatch: builder.maxBatch)]
        }
    }

    /// x is [batch, inputShape...]; returns [batch, outputShape...].
    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the model's workspace of \(maxBatch)")
        var activation = x
        for (index, layer) in layers.enumerated() {
            inputs[index] = activation
            activation = layer.forward(activation, batch: batch, training: training)
        }
        return activation
    }

    /// Accumulates dL/dθ into `parameters.gradients` from dL/d(output) of the last forward;
    /// returns dL/d(input).
    @discardableResult
    public func backward(outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        var gradient = outputGradient
        for index in layers.indices.reversed() {
            gradient = layers[index].backward(inputs[index], outputGradient: gradient, batch: batch)
        }
        return gradient
    }

    /// A one-line-per-layer description, printed at the start of training.
    public func summary() -> String {
        var lines = ["input \(inputShape)"]
        for layer in layers {
            let count = parameters.entries.filter { $0.name.hasPrefix(layer.name + "/") }.reduce(0) { $0 + $1.count }
            lines.append("\(layer.name.padding(toLength: 18, withPad: " ", startingAt: 0)) -> \(layer.outputShape)\(count > 0 ? "  \(count) parameters" : "")")
        }
        lines.append("total \(parameters.count) parameters")
        return lines.joined(separator: "\n")
    }
}
