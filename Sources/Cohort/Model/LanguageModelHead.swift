import CCohort

/// `lm_head`: the output layer of a language model, [T, C] → logits [T, V].
///
/// YAML: `{type: lm_head}` ties it to the model's (first) embedding: logits = x · Wᵀ with the
/// embedding's W [V, C] itself, one parameter in the flat buffer whose gradient sums both uses
/// (GPT-2's `lm_head.weight = wte.weight`). `{type: lm_head, tie_embeddings: false, units: V}`
/// is an untied head without bias, the same as `{type: dense, units: V, bias: false}`.
public struct LanguageModelHeadOptions: LayerOptions {
    public static let type = "lm_head"
    public var tied: Bool
    public var units: Int?

    public init(tied: Bool = true, units: Int? = nil) {
        self.tied = tied
        self.units = units
    }
    public init(config: ConfigMap) throws {
        tied = try config.bool("tie_embeddings", default: true)
        units = try config.int("units")
        if let units, units < 1 { throw config.error("units", "must be positive") }
        if !tied && units == nil { throw config.error("tie_embeddings", "an untied lm_head needs units (the vocabulary size)") }
    }
    public var yaml: [String: String] {
        var keys = ["tie_embeddings": "\(tied)"]
        if let units { keys["units"] = "\(units)" }
        return keys
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard tied else {
            return Dense(name: name, inputShape: inputShape, units: units!, initializer: .normal, useBias: false, builder: builder)
        }
        guard let embedding = builder.built.first(where: { $0 is Embedding }) as? Embedding else {
            throw CohortError("\(name): tie_embeddings needs an embedding layer before it")
        }
        guard inputShape.last == embedding.dimension else {
            throw CohortError("\(name): its input has width \(inputShape.last ?? 0), the tied embedding \(embedding.name) has dim \(embedding.dimension)")
        }
        if let units, units != embedding.vocabulary {
            throw CohortError("\(name): units \(units) differs from the tied embedding's vocabulary \(embedding.vocabulary)")
        }
        return TiedHead(name: name, inputShape: inputShape, embedding: embedding, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(EmbeddingOptions(vocabulary: 5, dimension: 3)), .dense(3, activation: .tanh),
                               .family(LanguageModelHeadOptions())], inputShape: [4], vocabulary: 5)
    }
}

/// logits[rows, V] = x[rows, C] · Wᵀ; dW[V, C] += dyᵀ · x; dx = dy · W. W is the embedding's.
public final class TiedHead: Layer, InputGradientOptional {
    public var threading: LayerThreading { .products }
    public var computesInputGradient = true
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let embedding: Embedding
    /// The table gradient's sum over the batch's rows, in blocks of whole samples (`RowBlocks`).
    let blocks: RowBlocks
    private let output: Workspace
    private let inputGradient: Workspace
    /// The table packed for one product (`PanelProduct`).
    private let packed: Workspace

    public var multiplyAddsPerSample: Int { inputSize * embedding.vocabulary }

    init(name: String, inputShape: [Int], embedding: Embedding, builder: LayerBuilder) {
        let maxBatch = builder.maxBatch
        self.name = name
        self.inputShape = inputShape
        self.embedding = embedding
        outputShape = Array(inputShape.dropLast()) + [embedding.vocabulary]
        blocks = RowBlocks(positions: inputShape.count == 2 ? inputShape[0] : 1)
        output = builder.workspace(maxBatch * outputShape.reduce(1, *))
        inputGradient = builder.workspace(maxBatch * inputShape.reduce(1, *))
        let (width, vocabulary) = (embedding.dimension, embedding.vocabulary)
        packed = builder.workspace(gradient: max(PanelProduct.scratch(width, vocabulary), PanelProduct.scratch(vocabulary, width)))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (width, vocabulary) = (embedding.dimension, embedding.vocabulary)
        let rows = batch * inputSize / width
        let table = embedding.parameters.values(of: embedding.weight)
        if rows == 1 {  // generation: logits = E·x without packing E (see Dense.forward)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(vocabulary), Int32(width), 1, table, Int32(width), input, 1, 0, output.pointer, 1)
        } else {
            PanelProduct.multiply(rows: [0..<rows], vocabulary, width, input, width, table, width, transposeB: true,
                                  output.pointer, vocabulary, accumulate: false, packed: packed.pointer)
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (width, vocabulary) = (embedding.dimension, embedding.vocabulary)
        let rows = batch * inputSize / width
        blocks.summedProduct(vocabulary, width, rows, 1, outputGradient, vocabulary, input, width,
                             embedding.parameters.gradients(of: embedding.weight), width)
        guard computesInputGradient else { return UnsafePointer(inputGradient.pointer) }
        PanelProduct.multiply(rows: [0..<rows], width, vocabulary, outputGradient, vocabulary,
                              embedding.parameters.values(of: embedding.weight), width, transposeB: false,
                              inputGradient.pointer, width, accumulate: false, packed: packed.pointer)
        return UnsafePointer(inputGradient.pointer)
    }
}

extension LanguageModelHeadOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        guard tied else { return (try graph.linear(x, name, bias: false), shape.dropLast() + [units ?? 0]) }
        guard let embedding = graph.embedding else { throw CohortError("\(name): a tied head needs the embedding before it") }
        let transposed = graph.node("Transpose", [embedding.name], attributes: [.ints("perm", [1, 0])])
        return (graph.node("MatMul", [x, transposed]), shape.dropLast() + [embedding.vocabulary])
    }
}
