import CCohort
#if canImport(Glibc)
import Glibc
#endif
/// The activations as layers of their own: `{type: relu}`, `{type: tanh}`, `{type: sigmoid}`,
/// `{type: gelu}`, `{type: gelu_tanh}`, `{type: leaky_relu, slope: 0.01}`; one family under six types.
public struct ActivationOptions: LayerOptions {
    public static let type = "relu"
    public static var types: [String] { ActivationKind.allCases.map(\.rawValue) }
    public var kind: ActivationKind
    public init(_ kind: ActivationKind) { self.kind = kind }
    public init(config: ConfigMap) throws {
        let type = try config.requiredString("type")
        guard let kind = ActivationKind(rawValue: type) else { throw config.error("type", "'\(type)' is not an activation") }
        if case .leakyRelu = kind {
            self.kind = .leakyRelu(slope: Float(try config.double("slope", default: 0.01, range: 0...1)))
        } else {
            self.kind = kind
        }
    }
    public var typeName: String { kind.rawValue }
    public var yaml: [String: String] {
        if case .leakyRelu(let slope) = kind { return ["slope": "\(slope)"] }
        return [:]
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        Activation(name: name, kind: kind, inputShape: inputShape, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        // Inputs are at least 0.1 from 0 and the step is 0.01: the kinks of leaky_relu (slope 0.2 keeps them that far) and relu are not crossed.
        LayerSpecimen(layers: [.activation(.leakyRelu(slope: 0.2)), .activation(.relu), .activation(.sigmoid), .activation(.tanh),
                               .activation(.gelu), .activation(.geluTanh), .dense(2)], inputShape: [4])
    }
}

/// Elementwise activations, y = f(x) and dx = dy · f'(x), same shape in and out.
///   relu        max(x, 0)                      f' = 1 if x > 0 else 0 (0 at the kink, as PyTorch)
///   leaky_relu  x if x > 0 else a·x            f' = 1 or a
///   sigmoid     1 / (1 + e^−x)                 f' = y·(1 − y)
///   tanh        tanh x                         f' = 1 − y²
///   gelu        x·Φ(x) (the exact erf form)    f' = Φ(x) + x·φ(x)
///   gelu_tanh   ½x(1 + tanh(√(2/π)(x + 0.044715x³)))   (GPT-2's gelu_new)
public final class Activation: Layer {
    public var threading: LayerThreading { kind == .relu || kind == .gelu || kind == .geluTanh ? .elements : .single }
    public let name: String
    public let kind: ActivationKind
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    private let output: Workspace
    private let inputGradient: Workspace
    /// GELU's f'(x), written by `recompute` beside the output (one exponential for both) and read
    /// by the `backward` that follows it for the same input; nil for the other kinds, or when the
    /// output is kept.
    private let slope: Workspace?
    private var slopeInput: UnsafePointer<Float>?

    /// `recomputedOutput`: the caller runs `forward` again before a backward that reads the
    /// output (the output's memory is then shared, `builder.workspace(recomputed:)`), and nothing reads
    /// the output after this layer's backward, which then writes the input gradient over it
    /// (element by element: each dx[i] is made from y[i], x[i] and dy[i] alone).
    init(name: String, kind: ActivationKind, inputShape: [Int], builder: LayerBuilder, recomputedOutput: Bool = false) {
        let maxBatch = builder.maxBatch
        self.name = name
        self.kind = kind
        self.inputShape = inputShape
        let count = maxBatch * inputShape.reduce(1, *)
        output = recomputedOutput ? builder.workspace(recomputed: count) : builder.workspace(count)
        inputGradient = recomputedOutput ? output : builder.workspace(gradient: count)
        slope = recomputedOutput && (kind == .gelu || kind == .geluTanh) ? builder.workspace(gradient: count) : nil
    }

    /// The output again, before a backward that reads it (`recomputedOutput`). GELU's also keeps
    /// f'(x) for the `backward` of the same input, which is then one multiply: the slope's bits
    /// are those `backward` would compute.
    func recompute(_ input: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        guard let slope else { return forward(input, batch: batch, training: true) }
        let (y, s) = (output.pointer, slope.pointer)
        let kernel = kind == .gelu ? cohort_gelu_forward_slope : cohort_gelu_tanh_forward_slope
        LayerThreads.elementwise(batch * inputSize) { start, part in kernel(input + start, y + start, s + start, part) }
        slopeInput = input
        return UnsafePointer(y)
    }

    /// `recompute`, timed as part of this layer's backward when `SublayerTimes.recording`.
    func timedRecompute(_ input: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        SublayerTimes.timed(name, backward: true) { recompute(input, batch: batch) }
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let count = batch * inputSize
        slopeInput = nil
        let y = output.pointer
        switch kind {
        case .relu:
            LayerThreads.elementwise(count) { start, part in cohort_relu_forward(input + start, y + start, part) }
        case .leakyRelu(let slope):
            for i in 0..<count { y[i] = input[i] > 0 ? input[i] : slope * input[i] }
        case .sigmoid:
            for i in 0..<count { y[i] = 1 / (1 + expf(-input[i])) }
        case .tanh:
            for i in 0..<count { y[i] = tanhf(input[i]) }
        case .gelu:
            LayerThreads.elementwise(count) { start, part in cohort_gelu_forward(input + start, y + start, part) }
        case .geluTanh:
            LayerThreads.elementwise(count) { start, part in cohort_gelu_tanh_forward(input + start, y + start, part) }
        }
        return UnsafePointer(y)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let count = batch * inputSize
        let (dx, dy, y) = (inputGradient.pointer, outputGradient, output.pointer)
        if let slope, slopeInput == input {
            slopeInput = nil
            let s = slope.pointer
            LayerThreads.elementwise(count) { start, part in cohort_multiply(dy + start, s + start, dx + start, part) }
            return UnsafePointer(dx)
        }
        switch kind {
        case .relu:
            LayerThreads.elementwise(count) { start, part in cohort_relu_backward(input + start, dy + start, dx + start, part) }
        case .leakyRelu(let slope):
            for i in 0..<count { dx[i] = input[i] > 0 ? dy[i] : slope * dy[i] }
        case .sigmoid:
            for i in 0..<count { dx[i] = dy[i] * y[i] * (1 - y[i]) }
        case .tanh:
            for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
        case .gelu:
            LayerThreads.elementwise(count) { start, part in cohort_gelu_backward(input + start, dy + start, dx + start, part) }
        case .geluTanh:
            LayerThreads.elementwise(count) { start, part in cohort_gelu_tanh_backward(input + start, dy + start, dx + start, part) }
        }
        return UnsafePointer(dx)
    }
}

extension ActivationOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        (graph.activation(kind, x), shape)
    }
}
