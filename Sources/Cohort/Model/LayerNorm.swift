import CCohort

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
/// backward (llm.c's `layernorm_forward`/`layernorm_backward`; `normalization.c`).
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
    public var threading: LayerThreading { .rows }

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

    /// Parts for the threads once a pass is worth a region (64K elements): any cut of the rows
    /// (and of the columns, for γ's and β's gradients) gives the same bits.
    private func parts(rows: Int) -> Int { rows * width >= 1 << 16 ? max(1, min(LayerThreads.count, rows, width / 8)) : 1 }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let rows = batch * inputSize / width
        let (gamma, beta) = (parameters.values(of: weight), parameters.values(of: bias))
        let (output, mean, inverseStd, width, epsilon, parts) = (output.pointer, mean.pointer, inverseStd.pointer, width, epsilon, parts(rows: rows))
        LayerThreads.run(parts: parts) { part, _ in
            cohort_layer_norm_forward(input, gamma, beta, output, mean, inverseStd, rows * part / parts, rows * (part + 1) / parts, width, epsilon)
        }
        return UnsafePointer(output)
    }

    /// With n = (x − μ)·s and g = dy ⊙ γ: dγ += Σ dy ⊙ n, dβ += Σ dy, and
    /// dx = s · (g − mean(g) − n · mean(g ⊙ n)).
    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let rows = batch * inputSize / width
        let gamma = parameters.values(of: weight)
        let (dGamma, dBeta) = (parameters.gradients(of: weight), parameters.gradients(of: bias))
        let (dx, mean, inverseStd, width, parts) = (inputGradient.pointer, mean.pointer, inverseStd.pointer, width, parts(rows: rows))
        LayerThreads.run(parts: parts) { part, _ in
            cohort_layer_norm_backward(input, outputGradient, gamma, mean, inverseStd, dx, dGamma, dBeta, rows, width,
                                       rows * part / parts, rows * (part + 1) / parts, width * part / parts, width * (part + 1) / parts)
        }
        return UnsafePointer(dx)
    }
}

extension LayerNormOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        (try graph.layerNorm(x, name, epsilon: epsilon), shape)
    }
}
