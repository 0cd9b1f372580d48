
/// `dropout`: `{type: dropout, rate: 0.5}`. Each rank draws its own masks from a generator that
/// checkpoints carry. (The specimen uses rate 0, the identity, since a finite-difference check
/// needs the same mask on every forward; `GradientCheckTests` checks a real rate's masks.)
public struct DropoutOptions: LayerOptions {
    public static let type = "dropout"
    public var rate: Float
    public init(rate: Float = 0.5) { self.rate = rate }
    public init(config: ConfigMap) throws { rate = Float(try config.double("rate", default: 0.5, range: 0...0.999)) }
    public var yaml: [String: String] { ["rate": "\(rate)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        Dropout(name: name, inputShape: inputShape, rate: rate, generator: builder.dropoutGenerator(), builder: builder)
    }
    public static var specimen: LayerSpecimen { LayerSpecimen(layers: [.dense(3), .dropout(0), .dense(2)], inputShape: [4]) }
}

/// Inverted dropout: in training each element is kept with probability 1 − p and scaled by
/// 1 / (1 − p), so evaluation (where the layer is the identity) needs no rescaling.
/// Every rank draws its masks from its own generator, derived from (seed, rank, layer); the
/// generator's state is part of the checkpoint, so a resumed run draws the same masks.
public final class Dropout: Layer, RandomizedLayer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let rate: Float
    public var generator: Generator
    private let mask: Workspace
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], rate: Float, generator: Generator, builder: LayerBuilder) {
        let maxBatch = builder.maxBatch
        self.name = name
        self.inputShape = inputShape
        self.rate = rate
        self.generator = generator
        let count = maxBatch * inputShape.reduce(1, *)
        mask = builder.workspace(count)
        output = builder.workspace(count)
        inputGradient = builder.workspace(gradient: count)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        guard training, rate > 0 else { return input }
        let keep = 1 / (1 - rate)
        for index in 0..<(batch * inputSize) {
            mask.pointer[index] = generator.nextUnitFloat() >= rate ? keep : 0
            output.pointer[index] = input[index] * mask.pointer[index]
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        guard rate > 0 else { return outputGradient }
        for index in 0..<(batch * inputSize) { inputGradient.pointer[index] = outputGradient[index] * mask.pointer[index] }
        return UnsafePointer(inputGradient.pointer)
    }
}

/// A layer that draws random numbers; its generator is saved and restored with checkpoints.
public protocol RandomizedLayer: Layer {
    var generator: Generator { get set }
}

extension DropoutOptions {
    /// Inference: the identity.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) { (x, shape) }
}
