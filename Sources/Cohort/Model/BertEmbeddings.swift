/// `bert_embeddings`: BERT's input layer (Hugging Face's `BertEmbeddings`): token ids to
/// y = LayerNorm(word[id] + position[t] + token_type[type]), then dropout.
///
/// YAML: `{type: bert_embeddings, vocabulary: V, dim: C, max_length: 512, token_types: 2,
/// epsilon: 1e-12, pad_id: 0, sep_id: none, dropout: 0}`. Input [T] ids (Floats holding exact integers), padded
/// at the end with `pad_id`; output [T, C]. Parameters `word/weight` [V, C], `position/weight`
/// [max_length, C], `token_type/weight` [token_types, C], `ln/weight`
/// and `ln/bias`. Each sample's length (1 + the last position whose id is not `pad_id`) is
/// published in `lengths`, which the attention of `encoder_block`s and `sequence_pool` read:
/// padded keys are masked and padded positions left out of pooling, as the `attention_mask`
/// a Hugging Face tokenizer returns makes them. Token types: 0, or with `sep_id` (a sentence
/// pair `[CLS] a [SEP] b [SEP]`, `cohort prepare text-classification --text-pair`) 1 for the real
/// positions after the first `sep_id`, as BERT's tokenizer sets `token_type_ids`.
public struct BertEmbeddingsOptions: LayerOptions {
    public static let type = "bert_embeddings"
    public var vocabulary: Int
    public var dimension: Int
    public var maxLength: Int
    public var tokenTypes: Int
    public var epsilon: Float
    public var padID: Int
    /// The id whose first occurrence ends segment A of a sentence pair (BERT's `[SEP]`), or nil: one segment.
    public var sepID: Int?
    public var dropout: Float

    public init(vocabulary: Int, dimension: Int, maxLength: Int = 512, tokenTypes: Int = 2, epsilon: Float = 1e-12, padID: Int = 0,
                sepID: Int? = nil, dropout: Float = 0) {
        (self.vocabulary, self.dimension, self.maxLength, self.tokenTypes) = (vocabulary, dimension, maxLength, tokenTypes)
        (self.epsilon, self.padID, self.sepID, self.dropout) = (epsilon, padID, sepID, dropout)
    }
    public init(config: ConfigMap) throws {
        guard config.has("vocabulary"), config.has("dim") else {
            throw CohortError("\(config.file): \(config.path): bert_embeddings needs vocabulary and dim")
        }
        vocabulary = try config.int("vocabulary", default: 0, range: 1...(1 << 24))
        dimension = try config.int("dim", default: 0, range: 1...65_536)
        maxLength = try config.int("max_length", default: 512, range: 1...1_048_576)
        tokenTypes = try config.int("token_types", default: 2, range: 1...1024)
        epsilon = Float(try config.double("epsilon", default: 1e-12, range: 1e-14...1))
        padID = try config.int("pad_id", default: 0, range: 0...(1 << 24))
        sepID = config.has("sep_id") ? try config.int("sep_id", default: 0, range: 0...(1 << 24)) : nil
        dropout = Float(try config.double("dropout", default: 0, range: 0...0.999))
        guard padID < vocabulary else { throw config.error("pad_id", "must be below vocabulary \(vocabulary)") }
        if let sepID {
            guard sepID < vocabulary else { throw config.error("sep_id", "must be below vocabulary \(vocabulary)") }
            guard tokenTypes >= 2 else { throw config.error("sep_id", "marks a second segment, but token_types is \(tokenTypes)") }
        }
    }
    public var yaml: [String: String] {
        var keys = ["vocabulary": "\(vocabulary)", "dim": "\(dimension)", "max_length": "\(maxLength)", "token_types": "\(tokenTypes)",
                    "epsilon": "\(epsilon)", "pad_id": "\(padID)", "dropout": "\(dropout)"]
        keys["sep_id"] = sepID.map(String.init)
        return keys
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard inputShape.count == 1 else {
            throw CohortError("\(name): bert_embeddings reads a sequence of token ids [T]; its input here has shape \(inputShape)")
        }
        guard inputShape[0] <= maxLength else {
            throw CohortError("\(name): sequences of \(inputShape[0]) tokens are longer than its position table (max_length \(maxLength))")
        }
        return BertEmbeddings(name: name, length: inputShape[0], options: self, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        // Its table entries are N(0, 0.02²): a large epsilon keeps the normalization smooth at the
        // finite-difference step (1e-2) without changing what is checked. Ids 0…4, pad 0: the
        // samples end in padding of different lengths; sep_id 3 gives the positions after the
        // first 3 token type 1 (a sentence pair), so both type rows are checked.
        LayerSpecimen(layers: [.family(BertEmbeddingsOptions(vocabulary: 5, dimension: 4, maxLength: 8, epsilon: 0.1, sepID: 3)),
                               .dense(3)], inputShape: [6], vocabulary: 5)
    }
}

/// Per sample of the batch in flight, how many leading positions hold real tokens.
public final class SequenceLengths {
    public internal(set) var values: [Int]
    init(maxBatch: Int, length: Int) { values = Array(repeating: length, count: maxBatch) }
}

public final class BertEmbeddings: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let options: BertEmbeddingsOptions
    public let lengths: SequenceLengths
    let parameters: ParameterStore
    let word: ParameterStore.Entry
    let position: ParameterStore.Entry
    let tokenType: ParameterStore.Entry
    let norm: LayerNorm
    let dropout: Dropout?
    private let sum: Workspace
    private let zeros: Workspace
    private var normed: UnsafePointer<Float>?
    public var sublayers: [Layer] { [norm] + (dropout.map { [$0] } ?? []) }

    init(name: String, length: Int, options: BertEmbeddingsOptions, builder: LayerBuilder) {
        self.name = name
        self.options = options
        inputShape = [length]
        outputShape = [length, options.dimension]
        let (V, C) = (options.vocabulary, options.dimension)
        parameters = builder.parameters
        word = builder.declare("\(name)/word/weight", shape: [V, C], decays: true) { pointer, generator in
            initializeWeights(pointer, count: V * C, fanIn: C, fanOut: V, .normal, &generator)
        }
        position = builder.declare("\(name)/position/weight", shape: [options.maxLength, C], decays: true) { pointer, generator in
            initializeWeights(pointer, count: options.maxLength * C, fanIn: C, fanOut: options.maxLength, .normal, &generator)
        }
        tokenType = builder.declare("\(name)/token_type/weight", shape: [options.tokenTypes, C], decays: true) { pointer, generator in
            initializeWeights(pointer, count: options.tokenTypes * C, fanIn: C, fanOut: options.tokenTypes, .normal, &generator)
        }
        norm = LayerNorm(name: "\(name)/ln", inputShape: [length, C], epsilon: options.epsilon, builder: builder)
        dropout = options.dropout > 0
            ? Dropout(name: "\(name)/dropout", inputShape: [length, C], rate: options.dropout, generator: builder.dropoutGenerator(),
                      builder: builder) : nil
        lengths = SequenceLengths(maxBatch: builder.maxBatch, length: length)
        sum = builder.workspace(builder.maxBatch * length * C)
        zeros = builder.workspace(builder.maxBatch * length)
    }

    @inline(__always)
    private func id(_ value: Float) -> Int {
        let id = Int(value)
        precondition(id >= 0 && id < options.vocabulary && Float(id) == value, "\(name): token id \(value) outside [0, \(options.vocabulary))")
        return id
    }

    /// 1 + the last position whose id is not the pad id (at least 1).
    private func realLength(_ ids: UnsafePointer<Float>) -> Int {
        var last = 0
        for t in 0..<inputShape[0] where id(ids[t]) != options.padID { last = t + 1 }
        return max(last, 1)
    }

    /// The positions of token type 1: the real ones after the first `sep_id` (empty without one).
    private func secondSegment(_ ids: UnsafePointer<Float>, length: Int) -> Range<Int> {
        guard let sep = options.sepID, let first = (0..<length).first(where: { id(ids[$0]) == sep }) else { return 0..<0 }
        return (first + 1)..<max(first + 1, length)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (T, C) = (inputShape[0], options.dimension)
        let (words, positions, types) = (parameters.values(of: word), parameters.values(of: position), parameters.values(of: tokenType))
        for b in 0..<batch {
            let length = realLength(input + b * T)
            lengths.values[b] = length
            let second = secondSegment(input + b * T, length: length)
            for t in 0..<T {
                let token = id(input[b * T + t])
                let (y, w, p) = (sum.pointer + (b * T + t) * C, words + token * C, positions + t * C)
                let type = types + (second.contains(t) ? C : 0)
                for c in 0..<C { y[c] = w[c] + p[c] + type[c] }
            }
        }
        let normed = norm.timedForward(sum.pointer, batch: batch, training: training)
        self.normed = normed
        return dropout?.timedForward(normed, batch: batch, training: training) ?? normed
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (T, C) = (inputShape[0], options.dimension)
        let dNormed = dropout?.timedBackward(normed!, outputGradient: outputGradient, batch: batch) ?? outputGradient
        let dSum = norm.timedBackward(sum.pointer, outputGradient: dNormed, batch: batch)
        let (dWords, dPositions, dTypes) = (parameters.gradients(of: word), parameters.gradients(of: position), parameters.gradients(of: tokenType))
        for b in 0..<batch {
            let second = secondSegment(input + b * T, length: lengths.values[b])
            for t in 0..<T {
                let dy = dSum + (b * T + t) * C
                let (dw, dp, dt) = (dWords + id(input[b * T + t]) * C, dPositions + t * C, dTypes + (second.contains(t) ? C : 0))
                for c in 0..<C {
                    dw[c] += dy[c]
                    dp[c] += dy[c]
                    dt[c] += dy[c]
                }
            }
        }
        return UnsafePointer(zeros.pointer)
    }
}

extension BertEmbeddings: TokenConsumer {
    public var vocabulary: Int { options.vocabulary }
}

extension BertEmbeddingsOptions {
    /// Int64 ids [N, T]: Gather of words, plus positions and type 0, LayerNormalization; the
    /// lengths (1 + the last non-pad position) become the graph's key mask.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let T = shape[0]
        let words = try graph.parameter("\(name)/word/weight")
        let positions = try graph.parameter("\(name)/position/weight")
        let types = try graph.parameter("\(name)/token_type/weight")
        let embedded = graph.node("Gather", [words.name, x], attributes: [.int("axis", 0)])
        let positionRows = graph.node("Gather", [positions.name, graph.constantInt("positions", [T], (0..<T).map(Int64.init))],
                                      attributes: [.int("axis", 0)])
        graph.sequenceMask(ids: x, padID: padID, length: T)
        let typeRows: String
        if let sepID, let mask = graph.sequenceMask {
            // Type 1 after the first sep_id, at real positions: min(separators before t, 1) · real.
            let separators = graph.node("Cast", [graph.node("Equal", [x, graph.constantInt("sep_id", [], [Int64(sepID)])])],
                                        attributes: [.int("to", 7)])
            let before = graph.node("CumSum", [separators, graph.constantInt("sequence_axis", [], [1])], attributes: [.int("exclusive", 1)])
            let real = graph.node("Cast", [graph.node("Reshape", [mask.weights, graph.constantInt("ids_shape", [2], [0, Int64(T)])])],
                                  attributes: [.int("to", 7)])
            let typeIDs = graph.node("Mul", [graph.node("Min", [before, graph.constantInt("one_type", [], [1])]), real])
            typeRows = graph.node("Gather", [types.name, typeIDs], attributes: [.int("axis", 0)])
        } else {
            typeRows = graph.node("Gather", [types.name, graph.constantInt("type_zero", [], [0])], attributes: [.int("axis", 0)])
        }
        let summed = graph.node("Add", [graph.node("Add", [embedded, positionRows]), typeRows])
        return (try graph.layerNorm(summed, "\(name)/ln", epsilon: epsilon), shape + [dimension])
    }
}
