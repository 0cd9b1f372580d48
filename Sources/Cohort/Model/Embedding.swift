/// `embedding`: token ids to vectors (`torch.nn.Embedding(V, C)`).
///
/// YAML: `{type: embedding, vocabulary: V, dim: C}`. Input: a sequence sample [T] of ids, carried
/// as Floats that hold exact integers (every integer below 2²⁴ is exact in Float32; the token
/// loader checks each id against the vocabulary). Output [T, C]. Parameter `weight` [V, C],
/// N(0, 0.02²) as GPT-2 initializes it, weight-decayed (AdamW decays matrices and embeddings).
public struct EmbeddingOptions: LayerOptions {
    public static let type = "embedding"
    public var vocabulary: Int
    public var dimension: Int

    public init(vocabulary: Int, dimension: Int) {
        self.vocabulary = vocabulary
        self.dimension = dimension
    }
    public init(config: ConfigMap) throws {
        guard config.has("vocabulary"), config.has("dim") else {
            throw CohortError("\(config.file): \(config.path): embedding needs vocabulary and dim")
        }
        vocabulary = try config.int("vocabulary", default: 0, range: 1...(1 << 24))
        dimension = try config.int("dim", default: 0, range: 1...65_536)
    }
    public var yaml: [String: String] { ["vocabulary": "\(vocabulary)", "dim": "\(dimension)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard inputShape.count == 1 else {
            throw CohortError("\(name): an embedding reads a sequence of token ids [T]; its input here has shape \(inputShape)")
        }
        return Embedding(name: name, length: inputShape[0], vocabulary: vocabulary, dimension: dimension, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(EmbeddingOptions(vocabulary: 5, dimension: 3))], inputShape: [6], vocabulary: 5)
    }
}

/// ids [B, T] → y [B, T, C]: y[b, t, :] = W[id[b, t], :]. Backward scatter-adds dy into the rows of
/// dW the batch used, once per use (a repeated id collects every position's gradient); ids have
/// no gradient, so the input gradient is zeros and the embedding is a model's first layer.
public final class Embedding: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let vocabulary: Int
    public let dimension: Int
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    private let output: Workspace
    private let zeros: Workspace

    init(name: String, length: Int, vocabulary: Int, dimension: Int, builder: LayerBuilder) {
        self.name = name
        self.vocabulary = vocabulary
        self.dimension = dimension
        inputShape = [length]
        outputShape = [length, dimension]
        parameters = builder.parameters
        weight = builder.declare("\(name)/weight", shape: [vocabulary, dimension], decays: true) { pointer, generator in
            initializeWeights(pointer, count: vocabulary * dimension, fanIn: dimension, fanOut: vocabulary, .normal, &generator)
        }
        output = builder.workspace(builder.maxBatch * length * dimension)
        zeros = builder.workspace(builder.maxBatch * length)
    }

    @inline(__always)
    private func id(_ value: Float) -> Int {
        let id = Int(value)
        precondition(id >= 0 && id < vocabulary && Float(id) == value, "\(name): token id \(value) outside [0, \(vocabulary))")
        return id
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let table = parameters.values(of: weight)
        for row in 0..<(batch * inputShape[0]) {
            (output.pointer + row * dimension).update(from: table + id(input[row]) * dimension, count: dimension)
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let dTable = parameters.gradients(of: weight)
        for row in 0..<(batch * inputShape[0]) {
            let dRow = dTable + id(input[row]) * dimension
            let dy = outputGradient + row * dimension
            for c in 0..<dimension { dRow[c] += dy[c] }
        }
        return UnsafePointer(zeros.pointer)
    }
}

/// A layer that reads token ids, and the ids it accepts (the trainer checks them against the data).
public protocol TokenConsumer: Layer {
    var vocabulary: Int { get }
}
extension Embedding: TokenConsumer {}

extension EmbeddingOptions {
    /// Int64 ids [N, T] → [N, T, dim] by `Gather`.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let table = try graph.parameter("\(name)/weight")
        graph.embedding = (table.name, table.shape[0])
        return (graph.node("Gather", [table.name, x], attributes: [.int("axis", 0)]), shape + [dimension])
    }
}
