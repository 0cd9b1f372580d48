#if canImport(Glibc)
import Glibc
#endif

/// `layer_norm`: normalization over the last axis (Ba et al. 2016; `torch.nn.LayerNorm(C)`).
///
/// YAML: `{type: layer_norm, epsilon: 1e-5}`. Parameters: `weight` γ [C] (ones) and `bias` β [C]
/// (zeros), never weight-decayed. Each position's C features are normalized with their own mean
/// and biased variance, so a [T, C] sample is T independent rows, as are the B samples.
public struct LayerNormOptions: LayerOptions {
    public static let type = "layer_norm"
    public var epsilon: Float

    public init(epsilon: Float = 1e-5) { self.epsilon = epsilon }
    public init(config: ConfigMap) throws {
        epsilon = Float(try config.double("epsilon", default: 1e-5, range: 1e-12...1))
    }
    public var yaml: [String: String] { ["epsilon": "\(epsilon)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        LayerNorm(name: name, inputShape: inputShape, epsilon: epsilon, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.dense(6), .family(LayerNormOptions()), .dense(3)], inputShape: [3, 4])
    }
}

/// x, y are [rows, C] with rows = B · (positions per sample); mean and 1/σ are kept per row for
/// backward (llm.c's `layernorm_forward`/`layernorm_backward`).
public final class LayerNorm: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let epsilon: Float
    let width: Int
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    let bias: ParameterStore.Entry
    private let output: Workspace
    private let mean: Workspace
    private let inverseStd: Workspace
    private let inputGradient: Workspace

    public var multiplyAddsPerSample: Int { inputSize * 4 }

    init(name: String, inputShape: [Int], epsilon: Float, builder: LayerBuilder) {
        self.name = name
        self.inputShape = inputShape
        self.epsilon = epsilon
        let width = inputShape.last!
        self.width = width
        parameters = builder.parameters
        weight = builder.declare("\(name)/weight", shape: [width], decays: false) { pointer, _ in pointer.initialize(repeating: 1, count: width) }
        bias = builder.declare("\(name)/bias", shape: [width], decays: false) { pointer, _ in pointer.initialize(repeating: 0, count: width) }
        let rows = builder.maxBatch * inputShape.reduce(1, *) / width
        output = builder.workspace(rows * width)
        mean = builder.workspace(rows)
        inverseStd = builder.workspace(rows)
        inputGradient = builder.workspace(gradient: rows * width)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let rows = batch * inputSize / width
        let (gamma, beta) = (parameters.values(of: weight), parameters.values(of: bias))
        for row in 0..<rows {
            let x = input + row * width
            let y = output.pointer + row * width
            var sum: Float = 0
            for c in 0..<width { sum += x[c] }
            let m = sum / Float(width)
            var squares: Float = 0
            for c in 0..<width { squares += (x[c] - m) * (x[c] - m) }
            let s = 1 / (squares / Float(width) + epsilon).squareRoot()
            for c in 0..<width { y[c] = (x[c] - m) * s * gamma[c] + beta[c] }
            mean.pointer[row] = m
            inverseStd.pointer[row] = s
        }
        return UnsafePointer(output.pointer)
    }

    /// With n = (x − μ)·s and g = dy ⊙ γ: dγ += Σ dy ⊙ n, dβ += Σ dy, and
    /// dx = s · (g − mean(g) − n · mean(g ⊙ n)).
    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let rows = batch * inputSize / width
        let gamma = parameters.values(of: weight)
        let (dGamma, dBeta) = (parameters.gradients(of: weight), parameters.gradients(of: bias))
        for row in 0..<rows {
            let x = input + row * width
            let dy = outputGradient + row * width
            let dx = inputGradient.pointer + row * width
            let (m, s) = (mean.pointer[row], inverseStd.pointer[row])
            var gMean: Float = 0
            var gnMean: Float = 0
            for c in 0..<width {
                let n = (x[c] - m) * s
                let g = dy[c] * gamma[c]
                gMean += g
                gnMean += g * n
                dGamma[c] += dy[c] * n
                dBeta[c] += dy[c]
            }
            gMean /= Float(width)
            gnMean /= Float(width)
            for c in 0..<width {
                let n = (x[c] - m) * s
                dx[c] = s * (dy[c] * gamma[c] - gMean - n * gnMean)
            }
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

extension LayerNormOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        (try graph.layerNorm(x, name, epsilon: epsilon), shape)
    }
}
