/// `positional_embedding`: a learned vector per position, added to the input (GPT-2's `wpe`).
///
/// YAML: `{type: positional_embedding, max_length: L}`. Input and output [T, C] with T ≤ L.
/// Parameter `weight` [L, C], N(0, 0.02²), weight-decayed like the token embedding.
/// While generating (`Model.generator`), `offset` is the absolute position of the row it sees.
public struct PositionalEmbeddingOptions: LayerOptions {
    public static let type = "positional_embedding"
    public var maxLength: Int

    public init(maxLength: Int) { self.maxLength = maxLength }
    public init(config: ConfigMap) throws {
        guard config.has("max_length") else { throw CohortError("\(config.file): \(config.path): positional_embedding needs max_length") }
        maxLength = try config.int("max_length", default: 0, range: 1...1_048_576)
    }
    public var yaml: [String: String] { ["max_length": "\(maxLength)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): a positional embedding adds to a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        guard inputShape[0] <= maxLength else {
            throw CohortError("\(name): sequences of \(inputShape[0]) tokens are longer than its table (max_length \(maxLength)); raise max_length or shorten the window")
        }
        return PositionalEmbedding(name: name, inputShape: inputShape, maxLength: maxLength, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(PositionalEmbeddingOptions(maxLength: 5))], inputShape: [4, 3])
    }
}

/// y[b, t, :] = x[b, t, :] + P[offset + t, :]; dP[t] += Σ_b dy[b, t]; dx = dy.
public final class PositionalEmbedding: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let maxLength: Int
    /// The position of the first row (0 in training; the token's position while generating).
    public var offset = 0
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    private let output: Workspace

    init(name: String, inputShape: [Int], maxLength: Int, builder: LayerBuilder) {
        self.name = name
        self.inputShape = inputShape
        self.maxLength = maxLength
        let width = inputShape[1]
        parameters = builder.parameters
        weight = builder.declare("\(name)/weight", shape: [maxLength, width], decays: true) { pointer, generator in
            initializeWeights(pointer, count: maxLength * width, fanIn: width, fanOut: maxLength, .normal, &generator)
        }
        output = builder.workspace(builder.maxBatch * inputShape[0] * width)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (length, width) = (inputShape[0], inputShape[1])
        precondition(offset + length <= maxLength, "\(name): position \(offset + length - 1) is beyond max_length \(maxLength)")
        let table = parameters.values(of: weight) + offset * width
        for b in 0..<batch {
            for index in 0..<(length * width) {
                output.pointer[b * length * width + index] = input[b * length * width + index] + table[index]
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (length, width) = (inputShape[0], inputShape[1])
        let dTable = parameters.gradients(of: weight) + offset * width
        for b in 0..<batch {
            for index in 0..<(length * width) { dTable[index] += outputGradient[b * length * width + index] }
        }
        return outputGradient
    }
}

extension PositionalEmbeddingOptions {
    /// Adds the table's first T rows.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let table = try graph.tensor("\(name)/weight")
        let used = graph.constant("\(name).weight", [shape[0], shape[1]], Array(table.values.prefix(shape[0] * shape[1])))
        return (graph.node("Add", [x, used]), shape)
    }
}
