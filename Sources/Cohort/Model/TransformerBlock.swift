/// `transformer_block`: a pre-LN GPT block (nanoGPT's `Block`):
///     h = x + attention(layer_norm_1(x));  y = h + proj(gelu(fc(layer_norm_2(h))))
///
/// YAML: `{type: transformer_block, heads: H, dropout: 0, bias: true, mlp_ratio: 4}`, and for
/// imported models `activation: gelu_tanh` (GPT-2's `gelu_new`; `gelu`, the erf form, by
/// default) and `epsilon` (the layer norms', 1e-5 by default). Input and
/// output [T, C]. Sub-layers and their parameters (under `transformer_block_N/`): `ln_1`,
/// `attention` (`qkv`, `proj`), `ln_2`, `fc` [C, 4C], `proj` [4C, C]. Weights N(0, 0.02²); the two
/// residual projections (`attention/proj`, `proj`) N(0, (0.02/√(2·L))²) with L the number of
/// transformer blocks in the model, as GPT-2 and nanoGPT initialize them. `dropout` applies in
/// the attention (weights and output) and after the MLP.
public struct TransformerBlockOptions: LayerOptions {
    public static let type = "transformer_block"
    public var heads: Int
    public var dropout: Float
    public var bias: Bool
    public var mlpRatio: Int
    public var activation: ActivationKind
    public var epsilon: Float

    public init(heads: Int, dropout: Float = 0, bias: Bool = true, mlpRatio: Int = 4, activation: ActivationKind = .gelu,
                epsilon: Float = 1e-5) {
        self.heads = heads
        self.dropout = dropout
        self.bias = bias
        self.mlpRatio = mlpRatio
        self.activation = activation
        self.epsilon = epsilon
    }
    public init(config: ConfigMap) throws {
        guard config.has("heads") else { throw CohortError("\(config.file): \(config.path): transformer_block needs heads") }
        heads = try config.int("heads", default: 1, range: 1...1024)
        dropout = Float(try config.double("dropout", default: 0, range: 0...0.999))
        bias = try config.bool("bias", default: true)
        mlpRatio = try config.int("mlp_ratio", default: 4, range: 1...64)
        let name = try config.choice("activation", ["gelu", "gelu_tanh"], default: "gelu")
        activation = name == "gelu" ? .gelu : .geluTanh
        epsilon = Float(try config.double("epsilon", default: 1e-5, range: 1e-12...1))
    }
    public var yaml: [String: String] {
        var keys = ["heads": "\(heads)", "dropout": "\(dropout)", "bias": "\(bias)", "mlp_ratio": "\(mlpRatio)"]
        if activation != .gelu { keys["activation"] = activation.rawValue }
        if epsilon != 1e-5 { keys["epsilon"] = "\(epsilon)" }
        return keys
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try TransformerBlock(name: name, inputShape: inputShape, options: self, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(TransformerBlockOptions(heads: 2, mlpRatio: 2)),
                               .family(TransformerBlockOptions(heads: 2, mlpRatio: 2, activation: .geluTanh, epsilon: 1e-6))], inputShape: [3, 4])
    }
}

public final class TransformerBlock: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let norm1: LayerNorm
    let attention: Attention
    let norm2: LayerNorm
    let fc: Dense
    let gelu: Activation
    let proj: Dense
    let mlpDropout: Dropout?
    private let hidden: Workspace
    private let output: Workspace
    /// Whether backward starts by running forward again (`training.recompute: blocks`): the
    /// block then keeps only its output between the two passes, and shares every other
    /// forward buffer with the model's other blocks.
    private let recomputes: Bool
    /// The dropout generators as this block's last training forward found them, so that
    /// running it again in backward draws the same masks.
    private var generatorsAtForward: [Generator] = []
    private let hiddenGradient: Workspace
    private let inputGradient: Workspace
    // Each sub-layer's input from the last forward (backward hands it back).
    private var normed1: UnsafePointer<Float>?
    private var normed2: UnsafePointer<Float>?
    private var expanded: UnsafePointer<Float>?
    private var projected: UnsafePointer<Float>?

    public var sublayers: [Layer] { [norm1, attention, norm2, fc, gelu, proj] + (mlpDropout.map { [$0] } ?? []) }

    init(name: String, inputShape: [Int], options: TransformerBlockOptions, builder: LayerBuilder) throws {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): a transformer block reads a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        self.name = name
        self.inputShape = inputShape
        let (length, width) = (inputShape[0], inputShape[1])
        let blocks = max(builder.typeCounts[TransformerBlockOptions.type] ?? 1, 1)
        let residualScale = 1 / Float(2 * blocks).squareRoot()
        let count = builder.maxBatch * length * width
        output = builder.workspace(owned: count)
        recomputes = builder.recomputesBlocks
        // The sublayers' gradient buffers, and this block's, are shared with the model's other
        // blocks (`BlockGradients`): nothing reads them once the block's backward has returned.
        typealias Parts = (LayerNorm, Attention, LayerNorm, Dense, Activation, Dense, Dropout?, Workspace, Workspace, Workspace)
        func build() throws -> Parts {
            let norm1 = LayerNorm(name: "\(name)/ln_1", inputShape: inputShape, epsilon: options.epsilon, builder: builder)
            let attention = try Attention(name: "\(name)/attention", inputShape: inputShape, heads: options.heads,
                                          dropout: options.dropout, bias: options.bias, projectionScale: residualScale, builder: builder)
            let norm2 = LayerNorm(name: "\(name)/ln_2", inputShape: inputShape, epsilon: options.epsilon, builder: builder)
            let inner = options.mlpRatio * width
            let fc = Dense(name: "\(name)/fc", inputShape: inputShape, units: inner, initializer: .normal, useBias: options.bias,
                           builder: builder)
            // Its output is computed again in backward (one GELU pass) instead of kept per block.
            let gelu = Activation(name: "\(name)/gelu", kind: options.activation, inputShape: [length, inner], builder: builder,
                                  recomputedOutput: true)
            let proj = Dense(name: "\(name)/proj", inputShape: [length, inner], units: width, initializer: .normal,
                             useBias: options.bias, initScale: residualScale, builder: builder)
            let mlpDropout = options.dropout > 0
                ? Dropout(name: "\(name)/dropout", inputShape: inputShape, rate: options.dropout,
                          generator: builder.dropoutGenerator(), builder: builder) : nil
            return (norm1, attention, norm2, fc, gelu, proj, mlpDropout, builder.workspace(count),
                    builder.workspace(gradient: count), builder.workspace(gradient: count, leavesBlock: true))
        }
        (norm1, attention, norm2, fc, gelu, proj, mlpDropout, hidden, hiddenGradient, inputGradient) =
            try builder.block(build)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let count = batch * inputSize
        if recomputes && training { generatorsAtForward = randomizedLayers.map(\.generator) }
        let normed1 = norm1.timedForward(input, batch: batch, training: training)
        let attended = attention.timedForward(normed1, batch: batch, training: training)
        LayerThreads.add(input, attended, into: hidden.pointer, count: count)
        let normed2 = norm2.timedForward(hidden.pointer, batch: batch, training: training)
        let expanded = fc.timedForward(normed2, batch: batch, training: training)
        let activated = gelu.timedForward(expanded, batch: batch, training: training)
        let projected = proj.timedForward(activated, batch: batch, training: training)
        let mlp = mlpDropout?.timedForward(projected, batch: batch, training: training) ?? projected
        LayerThreads.add(hidden.pointer, mlp, into: output.pointer, count: count)
        (self.normed1, self.normed2, self.expanded, self.projected) = (normed1, normed2, expanded, projected)
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let count = batch * inputSize
        if recomputes { runForwardAgain(input, batch: batch) }
        // The MLP branch, then the residual: dh = dy + d(mlp branch)/dh.
        let dProjected = mlpDropout?.timedBackward(projected!, outputGradient: outputGradient, batch: batch) ?? outputGradient
        let activated = gelu.timedRecompute(expanded!, batch: batch)  // the blocks share its memory
        let dActivated = proj.timedBackward(activated, outputGradient: dProjected, batch: batch)
        let dExpanded = gelu.timedBackward(expanded!, outputGradient: dActivated, batch: batch)
        let dNormed2 = fc.timedBackward(normed2!, outputGradient: dExpanded, batch: batch)
        let dHiddenBranch = norm2.timedBackward(hidden.pointer, outputGradient: dNormed2, batch: batch)
        LayerThreads.add(outputGradient, dHiddenBranch, into: hiddenGradient.pointer, count: count)
        // The attention branch, then the residual: dx = dh + d(attention branch)/dx.
        let dNormed1 = attention.timedBackward(normed1!, outputGradient: hiddenGradient.pointer, batch: batch)
        let dInputBranch = norm1.timedBackward(input, outputGradient: dNormed1, batch: batch)
        LayerThreads.add(hiddenGradient.pointer, dInputBranch, into: inputGradient.pointer, count: count)
        return UnsafePointer(inputGradient.pointer)
    }

    private lazy var randomizedLayers: [RandomizedLayer] = selfAndDescendants.compactMap { $0 as? RandomizedLayer }

    /// Fills the shared forward buffers with this block's activations again, drawing the same
    /// dropout masks as its forward did, and leaves the generators where that forward left them.
    private func runForwardAgain(_ input: UnsafePointer<Float>, batch: Int) {
        let layers = randomizedLayers
        let afterForward = layers.map(\.generator)
        for (layer, generator) in zip(layers, generatorsAtForward) { layer.generator = generator }
        _ = forward(input, batch: batch, training: true)
        for (layer, generator) in zip(layers, afterForward) { layer.generator = generator }
    }
}

extension TransformerBlockOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let attended = try graph.attention(try graph.layerNorm(x, "\(name)/ln_1", epsilon: epsilon), "\(name)/attention",
                                           heads: heads, bias: bias, length: shape[0], width: shape[1], causal: true)
        let h = graph.node("Add", [x, attended])
        let inner = try graph.linear(try graph.layerNorm(h, "\(name)/ln_2", epsilon: epsilon), "\(name)/fc", bias: bias)
        let mlp = try graph.linear(graph.activation(activation, inner), "\(name)/proj", bias: bias)
        return (graph.node("Add", [h, mlp]), shape)
    }
}
