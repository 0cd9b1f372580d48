/// `encoder_block`: BERT's post-LN Transformer encoder layer (Hugging Face's `BertLayer`):
///     h = layer_norm_1(x + attention(x));  y = layer_norm_2(h + proj(gelu(fc(h))))
/// with bidirectional attention: every position attends to every real position of its sample
/// (padded keys masked by the lengths the model's `bert_embeddings` publishes).
///
/// YAML: `{type: encoder_block, heads: H, mlp_ratio: 4, epsilon: 1e-12, dropout: 0, activation:
/// gelu}`. Input and output [T, C]. Parameters (under `encoder_block_N/`): `attention` (`qkv`
/// [C, 3C] with columns q | k | v, `proj` [C, C]), `ln_1`, `fc` [C, ratio·C], `proj` [ratio·C, C],
/// `ln_2`. `dropout` acts on the attention weights, the attention's output and the MLP's output,
/// as BERT's `attention_probs_dropout_prob` and `hidden_dropout_prob` do (one rate for both).
public struct EncoderBlockOptions: LayerOptions {
    public static let type = "encoder_block"
    public var heads: Int
    public var mlpRatio: Int
    public var epsilon: Float
    public var dropout: Float
    public var activation: ActivationKind

    public init(heads: Int, mlpRatio: Int = 4, epsilon: Float = 1e-12, dropout: Float = 0, activation: ActivationKind = .gelu) {
        (self.heads, self.mlpRatio, self.epsilon, self.dropout, self.activation) = (heads, mlpRatio, epsilon, dropout, activation)
    }
    public init(config: ConfigMap) throws {
        guard config.has("heads") else { throw CohortError("\(config.file): \(config.path): encoder_block needs heads") }
        heads = try config.int("heads", default: 1, range: 1...1024)
        mlpRatio = try config.int("mlp_ratio", default: 4, range: 1...64)
        epsilon = Float(try config.double("epsilon", default: 1e-12, range: 1e-14...1))
        dropout = Float(try config.double("dropout", default: 0, range: 0...0.999))
        let name = try config.choice("activation", ["gelu", "gelu_tanh", "relu"], default: "gelu")
        activation = ActivationKind(rawValue: name) ?? .gelu
    }
    public var yaml: [String: String] {
        ["heads": "\(heads)", "mlp_ratio": "\(mlpRatio)", "epsilon": "\(epsilon)", "dropout": "\(dropout)", "activation": activation.rawValue]
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try EncoderBlock(name: name, inputShape: inputShape, options: self, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        // Ids 0…4 with pad id 0: samples of different lengths, so the mask is exercised (the
        // check's ids make the first sample 5 real tokens and a pad, the second 6). Large
        // epsilons keep the layer norms smooth at the finite-difference step, 1e-2.
        LayerSpecimen(layers: [.family(BertEmbeddingsOptions(vocabulary: 5, dimension: 4, maxLength: 8, epsilon: 1)),
                               .family(EncoderBlockOptions(heads: 2, mlpRatio: 2, epsilon: 0.1)), .dense(3)],
                      inputShape: [6], vocabulary: 5)
    }
}

public final class EncoderBlock: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let attention: Attention
    let norm1: LayerNorm
    let fc: Dense
    let activation: Activation
    let proj: Dense
    let mlpDropout: Dropout?
    private let firstSum: Workspace
    private let secondSum: Workspace
    private let hiddenGradient: Workspace
    private let inputGradient: Workspace
    private var hidden: UnsafePointer<Float>?
    private var expanded: UnsafePointer<Float>?
    private var projected: UnsafePointer<Float>?
    let norm2: LayerNorm

    public var sublayers: [Layer] { [attention, norm1, fc, activation, proj] + (mlpDropout.map { [$0] } ?? []) + [norm2] }

    init(name: String, inputShape: [Int], options: EncoderBlockOptions, builder: LayerBuilder) throws {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): an encoder block reads a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        self.name = name
        self.inputShape = inputShape
        let (length, width) = (inputShape[0], inputShape[1])
        let lengths = (builder.built.last { $0 is BertEmbeddings } as? BertEmbeddings)?.lengths
        if builder.recomputesBlocks {
            throw CohortError("\(name): training.recompute: blocks computes transformer_blocks again in backward; encoder_block does not implement it")
        }
        // Built as a Transformer block is: the blocks of a model share their backward buffers and
        // the GELU output (computed again in backward), the same results bit for bit.
        let build = { () throws -> (Attention, LayerNorm, Dense, Activation, Dense, Dropout?, LayerNorm, Workspace, Workspace) in
            let attention = try Attention(name: "\(name)/attention", inputShape: inputShape, heads: options.heads, dropout: options.dropout,
                                          bias: true, projectionScale: 1, causal: false, lengths: lengths, builder: builder)
            let norm1 = LayerNorm(name: "\(name)/ln_1", inputShape: inputShape, epsilon: options.epsilon, builder: builder)
            let inner = options.mlpRatio * width
            // The MLP's products cover each sample's real positions (0 at the padded ones).
            let fc = Dense(name: "\(name)/fc", inputShape: inputShape, units: inner, initializer: .normal, useBias: true,
                           lengths: lengths, builder: builder)
            let activation = Activation(name: "\(name)/gelu", kind: options.activation, inputShape: [length, inner], builder: builder,
                                        recomputedOutput: true)
            let proj = Dense(name: "\(name)/proj", inputShape: [length, inner], units: width, initializer: .normal, useBias: true,
                             lengths: lengths, builder: builder)
            let mlpDropout = options.dropout > 0
                ? Dropout(name: "\(name)/dropout", inputShape: inputShape, rate: options.dropout, generator: builder.dropoutGenerator(),
                          builder: builder) : nil
            let norm2 = LayerNorm(name: "\(name)/ln_2", inputShape: inputShape, epsilon: options.epsilon, builder: builder)
            let count = builder.maxBatch * length * width
            return (attention, norm1, fc, activation, proj, mlpDropout, norm2, builder.workspace(gradient: count),
                    builder.workspace(gradient: count, leavesBlock: true))
        }
        (attention, norm1, fc, activation, proj, mlpDropout, norm2, hiddenGradient, inputGradient) =
            try builder.block(build)
        let count = builder.maxBatch * length * width
        (firstSum, secondSum) = (builder.workspace(owned: count), builder.workspace(owned: count))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let count = batch * inputSize
        let attended = attention.timedForward(input, batch: batch, training: training)
        LayerThreads.add(input, attended, into: firstSum.pointer, count: count)
        let hidden = norm1.timedForward(firstSum.pointer, batch: batch, training: training)
        let expanded = fc.timedForward(hidden, batch: batch, training: training)
        let activated = activation.timedForward(expanded, batch: batch, training: training)
        let projected = proj.timedForward(activated, batch: batch, training: training)
        let mlp = mlpDropout?.timedForward(projected, batch: batch, training: training) ?? projected
        LayerThreads.add(hidden, mlp, into: secondSum.pointer, count: count)
        (self.hidden, self.expanded, self.projected) = (hidden, expanded, projected)
        return norm2.timedForward(secondSum.pointer, batch: batch, training: training)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let count = batch * inputSize
        // y = ln_2(h + mlp(h)): both branches of h get d(second sum).
        let dSecond = norm2.timedBackward(secondSum.pointer, outputGradient: outputGradient, batch: batch)
        let dProjected = mlpDropout?.timedBackward(projected!, outputGradient: dSecond, batch: batch) ?? dSecond
        let activated = activation.timedRecompute(expanded!, batch: batch)  // the blocks share its memory
        let dActivated = proj.timedBackward(activated, outputGradient: dProjected, batch: batch)
        let dExpanded = activation.timedBackward(expanded!, outputGradient: dActivated, batch: batch)
        let dHiddenBranch = fc.timedBackward(hidden!, outputGradient: dExpanded, batch: batch)
        LayerThreads.add(dSecond, dHiddenBranch, into: hiddenGradient.pointer, count: count)
        // h = ln_1(x + attention(x)).
        let dFirst = norm1.timedBackward(firstSum.pointer, outputGradient: hiddenGradient.pointer, batch: batch)
        let dInputBranch = attention.timedBackward(input, outputGradient: dFirst, batch: batch)
        LayerThreads.add(dFirst, dInputBranch, into: inputGradient.pointer, count: count)
        return UnsafePointer(inputGradient.pointer)
    }
}

extension EncoderBlockOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let attended = try graph.attention(x, "\(name)/attention", heads: heads, bias: true, length: shape[0], width: shape[1], causal: false)
        let h = try graph.layerNorm(graph.node("Add", [x, attended]), "\(name)/ln_1", epsilon: epsilon)
        let inner = try graph.linear(h, "\(name)/fc", bias: true)
        let mlp = try graph.linear(graph.activation(activation, inner), "\(name)/proj", bias: true)
        return (try graph.layerNorm(graph.node("Add", [h, mlp]), "\(name)/ln_2", epsilon: epsilon), shape)
    }
}
