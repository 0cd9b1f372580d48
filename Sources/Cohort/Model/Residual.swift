
/// `residual`: `{type: residual, layers: [...], projection: auto, activation: relu}`:
/// activation(layers(x) + shortcut(x)); the shortcut is the identity, or a 1×1 convolution (stride
/// and channels to match) then batch norm when `projection` is true, or unset and the shapes differ.
public struct ResidualOptions: LayerOptions {
    public static let type = "residual"
    public var layers: [LayerSpec]
    public var projection: Bool?
    public var activation: ActivationKind?
    public init(layers: [LayerSpec], projection: Bool? = nil, activation: ActivationKind? = .relu) {
        (self.layers, self.projection, self.activation) = (layers, projection, activation)
    }
    public init(config: ConfigMap) throws {
        guard let nodes = try config.list("layers"), !nodes.isEmpty else {
            throw CohortError("\(config.file): \(config.path): residual needs a non-empty list of layers")
        }
        layers = try nodes.enumerated().map { try LayerRegistry.parse($1, file: config.file, path: "\(config.path).layers[\($0)]") }
        projection = config.has("projection") ? try config.bool("projection", default: false) : nil
        activation = try config.activation()
    }
    public var yaml: [String: String] {
        var keys = ["layers": "[" + layers.map(\.yamlFlow).joined(separator: ", ") + "]"]
        keys["projection"] = projection.map { "\($0)" }
        keys["activation"] = activation?.rawValue
        return keys
    }
    public var nested: [LayerSpec] { layers }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try Residual(name: name, inputShape: inputShape, layers: layers, projection: projection, activation: activation, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.residual([.conv2d(2, kernel: 3, padding: .same, activation: .tanh), .conv2d(2, kernel: 3, padding: .same)],
                                         activation: nil),
                               .residual([.conv2d(3, kernel: 3, stride: 2, padding: .same)], activation: .tanh), .flatten, .dense(2)],
                      inputShape: [2, 3, 3])
    }
}

/// A residual block: y = act(main(x) + shortcut(x)).
/// The shortcut is x itself when shapes agree, or a 1×1 convolution with the stride and channels
/// that make them agree, followed by batch norm (the ResNet "projection shortcut").
/// Backward: the gradient after the activation flows into both paths and their input
/// gradients are added.
public final class Residual: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { main.outputShape }
    let main: LayerStack
    let shortcut: LayerStack?
    let activation: Activation?
    private let sum: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], layers: [LayerSpec], projection: Bool?, activation: ActivationKind?,
         builder: LayerBuilder) throws {
        self.name = name
        self.inputShape = inputShape
        main = try LayerStack(specs: layers, inputShape: inputShape, builder: builder, prefix: "\(name)/")
        let outputShape = main.outputShape
        let needsProjection = projection ?? (outputShape != inputShape)
        if needsProjection {
            guard inputShape.count == 3, outputShape.count == 3, outputShape[1] > 0,
                  inputShape[1] % outputShape[1] == 0 || (inputShape[1] + 1) / 2 == outputShape[1] else {
                throw CohortError("\(name): cannot project \(inputShape) to \(outputShape) with a 1×1 convolution")
            }
            let stride = max(1, (inputShape[1] + outputShape[1] - 1) / outputShape[1])
            shortcut = try LayerStack(specs: [
                .conv2d(outputShape[0], kernel: 1, stride: stride, padding: .same, initializer: .heNormal, bias: false, name: "projection"),
                LayerSpec(name: "projection_bn", BatchNormOptions()),
            ], inputShape: inputShape, builder: builder, prefix: "\(name)/")
            guard shortcut!.outputShape == outputShape else {
                throw CohortError("\(name): the projection gives \(shortcut!.outputShape), the block's layers \(outputShape)")
            }
        } else {
            guard outputShape == inputShape else {
                throw CohortError("\(name): its layers change \(inputShape) to \(outputShape); set projection: true or keep the shape")
            }
            shortcut = nil
        }
        self.activation = activation.map {
            Activation(name: "\(name)/\($0.rawValue)", kind: $0, inputShape: outputShape, builder: builder)
        }
        sum = builder.workspace(builder.maxBatch * outputShape.reduce(1, *))
        inputGradient = builder.workspace(builder.maxBatch * inputShape.reduce(1, *))
    }

    public var sublayers: [Layer] { main.layers + (shortcut?.layers ?? []) + (activation.map { [$0] } ?? []) }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let count = batch * outputSize
        let y = main.forward(input, batch: batch, training: training)
        let s = shortcut?.forward(input, batch: batch, training: training) ?? input
        LayerThreads.add(y, s, into: sum.pointer, count: count)
        return activation?.timedForward(sum.pointer, batch: batch, training: training) ?? UnsafePointer(sum.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let dy = activation?.timedBackward(sum.pointer, outputGradient: outputGradient, batch: batch) ?? outputGradient
        let dMain = main.backward(outputGradient: dy, batch: batch)
        let dShortcut = shortcut?.backward(outputGradient: dy, batch: batch) ?? dy
        LayerThreads.add(dMain, dShortcut, into: inputGradient.pointer, count: batch * inputSize)
        return UnsafePointer(inputGradient.pointer)
    }
}

extension ResidualOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let (main, out) = try graph.stack(layers, x, shape, prefix: "\(name)/")
        var shortcut = x
        if projection ?? (out != shape) {
            let stride = max(1, (shape[1] + out[1] - 1) / out[1])
            (shortcut, _) = try graph.conv(x, "\(name)/projection", filters: out[0], kernel: 1, stride: stride, padding: .same,
                                           bias: false, shape: shape)
            shortcut = try graph.batchNorm(shortcut, "\(name)/projection_bn", epsilon: 1e-5)
        }
        var value = graph.node("Add", [main, shortcut])
        if let activation { value = graph.activation(activation, value) }
        return (value, out)
    }
}
