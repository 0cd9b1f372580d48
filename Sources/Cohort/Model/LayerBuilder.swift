import Foundation

/// What a layer needs while it is built: where to declare parameters, the largest batch it
/// will see, and the generator that initializes its weights.
public final class LayerBuilder {
    public let parameters: ParameterStore
    public let maxBatch: Int
    let communicator: Communicator
    let seed: UInt64
    var generator: Generator
    /// Fold 2×2 max pools into the convolution before them (Model's `fusePooling`).
    var fusesPooling = true
    private var counts: [String: Int] = [:]
    /// Layers of each registered type in the whole model (`typeCounts`), known before any is built.
    public internal(set) var typeCounts: [String: Int] = [:]
    /// Registered-family layers built so far, in order (a tied output head finds its embedding here).
    public internal(set) var built: [Layer] = []
    private var dropoutLayers: UInt64 = 0
    var initializers: [(ParameterStore.Entry, (UnsafeMutablePointer<Float>, inout Generator) -> Void)] = []

    /// Every buffer is counted against what this process may use; one that does not fit is not
    /// allocated, and `Model.init` refuses the model (nothing the user asked for reaches a
    /// failed allocation).
    let budget: MemoryBudget
    /// The model's shared backward buffers (nil: every workspace is owned).
    let blockGradients: BlockGradients?

    init(parameters: ParameterStore, maxBatch: Int, seed: UInt64, communicator: Communicator, budget: MemoryBudget = MemoryBudget(),
         blockGradients: BlockGradients? = nil) {
        (self.budget, self.blockGradients) = (budget, blockGradients)
        self.parameters = parameters
        self.maxBatch = maxBatch
        self.communicator = communicator
        self.seed = seed
        self.generator = Generator(seed: seed, streams: Stream.initialization.rawValue)
    }

    /// Each dropout layer on each rank gets its own stream: (seed, dropout, rank, layer).
    public func dropoutGenerator() -> Generator {
        dropoutLayers += 1
        return Generator(seed: seed, streams: Stream.dropout.rawValue, UInt64(communicator.rank), dropoutLayers)
    }

    /// Keras-style names: `dense_1`, `dense_2`, … unless the config names the layer.
    public func uniqueName(_ requested: String?, type: String) -> String {
        if let requested { return requested }
        counts[type, default: 0] += 1
        return "\(type)_\(counts[type]!)"
    }

    public func declare(_ name: String, shape: [Int], decays: Bool,
                 initialize: @escaping (UnsafeMutablePointer<Float>, inout Generator) -> Void) -> ParameterStore.Entry {
        let entry = parameters.declare(name, shape: shape, decays: decays)
        // Values, gradients and two optimizer moments, counted before anything is allocated.
        _ = budget.reserve(bytes: entry.count * MemoryLayout<Float>.size * 4, state: true)
        initializers.append((entry, initialize))
        return entry
    }

    /// Allocates the flat buffers and runs each initializer in declaration order. A parameter
    /// `willLoad` names (a checkpoint overwrites it next) draws its random numbers without
    /// transforming them: the same stream for the others, without the cost (22.6 M normal draws
    /// for all-MiniLM-L6-v2: about 0.4 s of start-up).
    func finish(willLoad: (String, [Int]) -> Bool = { _, _ in false }) {
        parameters.seal()
        for (entry, initialize) in initializers {
            generator.skipsTransforms = willLoad(entry.name, entry.shape)
            initialize(parameters.values(of: entry), &generator)
        }
        generator.skipsTransforms = false
    }

    // MARK: Workspaces

    /// A forward buffer: owned, except while a Transformer block is built for a model that
    /// computes its blocks again in backward (`training.recompute: blocks`), where the blocks
    /// share it like gradients.
    public func workspace(_ count: Int) -> Workspace { lent(count, .forward) ?? workspace(owned: count) }

    /// A buffer of this layer's own, never shared (a block's output: the next block's input).
    public func workspace(owned count: Int) -> Workspace { Workspace(owned: count, budget: budget) }

    /// A buffer for a gradient that nothing reads after the backward call of the Transformer
    /// block being built (its sublayers' input gradients and scratch): the blocks of a model
    /// share one such buffer per position. `leavesBlock` marks the block's own input gradient,
    /// which the previous block reads: blocks alternate between two of those.
    public func workspace(gradient count: Int, leavesBlock: Bool = false) -> Workspace {
        lent(count, leavesBlock ? .leavesBlock : .gradient) ?? workspace(owned: count)
    }

    /// A forward output that its layer computes again in backward before anything reads it
    /// there (a Transformer block's GELU output): shared by the blocks of a model like gradients.
    public func workspace(recomputed count: Int) -> Workspace { lent(count, .recomputed) ?? workspace(owned: count) }

    private func lent(_ count: Int, _ use: BlockGradients.Use) -> Workspace? {
        blockGradients?.lend(count, use, budget: budget).map { Workspace(viewing: $0) }
    }

    /// Builds one Transformer block: the gradient workspaces it asks for are lent from the
    /// model's shared set (`BlockGradients`) when there is one.
    func block<T>(_ body: () throws -> T) rethrows -> T {
        guard let blockGradients else { return try body() }
        return try blockGradients.block(body)
    }

    /// Whether the Transformer blocks run their forward again in backward (activation checkpointing).
    var recomputesBlocks: Bool { blockGradients?.recomputesBlocks ?? false }
}
