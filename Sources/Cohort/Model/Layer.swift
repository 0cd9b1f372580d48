#if canImport(Glibc)
import Glibc
#endif
/// A layer's forward and backward passes, side by side.
///
/// Activations are per-sample shapes in NCHW order for images ([C, H, W]) and [features] for
/// vectors; a batch of B samples is B contiguous rows. Each layer owns its output and
/// input-gradient buffers, sized once for the largest batch, so the step loop allocates nothing.
/// Backward ADDS into the flat gradient buffer (which the trainer zeroes each step) and
/// returns the gradient with respect to its input.
public protocol Layer: AnyObject {
    var name: String { get }
    /// How its own work (not its sublayers') uses `training.threads`, for `cohort profile`.
    var threading: LayerThreading { get }
    var inputShape: [Int] { get }
    var outputShape: [Int] { get }

    /// `input` is [batch, inputShape...]; returns [batch, outputShape...], valid until the next forward.
    func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float>

    /// `input` is the same pointer forward saw; `outputGradient` is dL/d(output).
    /// Returns dL/d(input), valid until the next backward.
    func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float>

    /// Layers this one is built from (a residual block's, a Transformer block's), so that
    /// whatever walks a model (generators for checkpoints, summaries) reaches them. Default: none.
    var sublayers: [Layer] { get }
    /// Multiply-adds of one sample's forward pass that are not in `sublayers` (profile, FLOPs).
    var multiplyAddsPerSample: Int { get }
    /// What the summary appends to the name (`+relu` for a fused ReLU). Default: nothing.
    var summaryTag: String { get }
    /// True for layers that only reshape: the model's first layer that computes needs no input
    /// gradient when only such layers stand before it.
    var isShapeOnly: Bool { get }
    /// Parameters stored [in, out] (Keras' kernel layout) that PyTorch stores [out, in]: an
    /// export transposes them. Default: none.
    var transposedForTorch: [String] { get }
    /// Normalizes with running statistics in training too, and leaves them as they are (a
    /// frozen batch norm when fine-tuning). Default: nothing to do.
    func useRunningStatistics()
}

/// How a layer's work spreads over `LayerThreads`.
public enum LayerThreading: String, Sendable {
    /// One thread: element-wise and row-wise work (layer norm, GELU, softmax, embeddings, pooling, batch norm, dropout).
    case single = "1"
    /// Its matrix products above 8 MFLOP, cut into parts (`gemm`).
    case products = "products"
    /// Attention's per-(row, head) products and softmax.
    case heads = "rows × heads"
    /// Convolution: groups of batch chunks (im2col, product, epilogue, col2im), fixed by the batch.
    case chunks = "batch chunks"
    /// Element-wise work in parts of at least 64K elements (`LayerThreads.elementwise`).
    case elements = "elements"
}

extension Layer {
    public var threading: LayerThreading { .single }
    public var sublayers: [Layer] { [] }
    public var multiplyAddsPerSample: Int { 0 }
    public var summaryTag: String { "" }
    public var isShapeOnly: Bool { false }
    public func useRunningStatistics() {}
    public var transposedForTorch: [String] { [] }

    /// This layer and every layer inside it, depth first.
    public var selfAndDescendants: [Layer] { [self] + sublayers.flatMap(\.selfAndDescendants) }
}

/// A layer whose input gradient costs real work can skip it when nothing consumes it
/// (the model's first layer: the data needs no gradient).
public protocol InputGradientOptional: AnyObject {
    var computesInputGradient: Bool { get set }
}

extension Layer {
    public var inputSize: Int { inputShape.reduce(1, *) }
    public var outputSize: Int { outputShape.reduce(1, *) }
}

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

    init(parameters: ParameterStore, maxBatch: Int, seed: UInt64, communicator: Communicator) {
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
        _ = Workspace.budget?.reserve(bytes: entry.count * MemoryLayout<Float>.size * 4, state: true)
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
}

/// A fixed-size Float buffer for activations and workspaces: owned, or lent by the model's
/// `BlockGradients` when it holds a gradient only while its Transformer block runs backward.
public final class Workspace {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// The shared buffer this workspace is a view of; nil when the workspace owns `pointer`.
    private let lender: SharedBuffer?
    /// While a model is built, every workspace is counted against what this process may use;
    /// one that does not fit is not allocated, and `Model.init` refuses the model (nothing the
    /// user asked for reaches a failed allocation).
    nonisolated(unsafe) static var budget: MemoryBudget?
    /// The model's shared backward buffers while it is built (nil: every workspace is owned).
    nonisolated(unsafe) static var blockGradients: BlockGradients?

    /// A forward buffer: owned, except while a Transformer block is built for a model that
    /// computes its blocks again in backward (`training.recompute: blocks`), where the blocks
    /// share it like gradients.
    public convenience init(_ count: Int) {
        if let shared = Workspace.blockGradients?.lend(count, .forward) {
            self.init(pointer: shared.pointer, count: shared.count, lender: shared)
        } else {
            self.init(owned: count)
        }
    }

    /// A buffer of this layer's own, never shared (a block's output: the next block's input).
    convenience init(owned count: Int) {
        let buffer = Workspace.allocate(count)
        self.init(pointer: buffer.pointer, count: buffer.count, lender: nil)
    }

    /// A buffer for a gradient that nothing reads after the backward call of the Transformer
    /// block being built (its sublayers' input gradients and scratch): the blocks of a model
    /// share one such buffer per position. `leavesBlock` marks the block's own input gradient,
    /// which the previous block reads: blocks alternate between two of those.
    convenience init(gradient count: Int, leavesBlock: Bool = false) {
        self.init(count, sharedAs: leavesBlock ? .leavesBlock : .gradient)
    }

    /// A forward output that its layer computes again in backward before anything reads it
    /// there (a Transformer block's GELU output): shared by the blocks of a model like gradients.
    convenience init(recomputed count: Int) {
        self.init(count, sharedAs: .recomputed)
    }

    /// Lent by the model's `BlockGradients` while a block is built; owned otherwise.
    private convenience init(_ count: Int, sharedAs use: BlockGradients.Use) {
        if let shared = Workspace.blockGradients?.lend(count, use) {
            self.init(pointer: shared.pointer, count: shared.count, lender: shared)
        } else {
            self.init(owned: count)
        }
    }

    private init(pointer: UnsafeMutablePointer<Float>, count: Int, lender: SharedBuffer?) {
        (self.pointer, self.count, self.lender) = (pointer, count, lender)
    }

    deinit { if lender == nil { free(pointer) } }

    /// Zeroed memory for `count` floats, counted against the budget (one float when it does not
    /// fit); from `calloc`, so its pages cost nothing until the first step writes them.
    static func allocate(_ count: Int) -> (pointer: UnsafeMutablePointer<Float>, count: Int) {
        let fits = budget?.reserve(bytes: max(count, 1) * MemoryLayout<Float>.size) ?? true
        let count = fits ? count : 1
        let buffer = UnsafeMutableBufferPointer<Float>.allocateZeroed(count)
        return (buffer.baseAddress!, count)
    }
}

/// A buffer that several workspaces view; freed with the last of them.
final class SharedBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int) { (pointer, self.count) = Workspace.allocate(count) }
    deinit { free(pointer) }
}

/// The backward buffers of a model's Transformer blocks, allocated once instead of once per
/// block. Backward runs the blocks one after another, and inside a block every buffer a
/// sublayer's backward writes is dead when the block's backward returns, except the block's
/// own input gradient, which the block before it reads as its output gradient. So the k-th
/// gradient buffer requested while a block is built is shared by the k-th of every block (of
/// the same size), and the blocks' input gradients alternate between two buffers. Forward
/// activations stay owned: backward reads them; except those a block computes again in its
/// backward (`Workspace(recomputed:)`), which are shared like gradients but apart from them.
/// With `recomputesBlocks` (activation checkpointing) every block runs its forward again at
/// the start of its backward, so all of its forward buffers are shared too; only each block's
/// output (the next block's input) stays its own.
final class BlockGradients {
    enum Use { case gradient, leavesBlock, recomputed, forward }
    let recomputesBlocks: Bool
    init(recomputesBlocks: Bool = false) { self.recomputesBlocks = recomputesBlocks }

    private struct Key: Hashable {
        let slot: Int
        let count: Int
    }
    private var buffers: [Key: SharedBuffer] = [:]
    private var building = false
    private var ordinal = 0
    private var recomputedOrdinal = 0
    private var forwardOrdinal = 0
    /// Transformer blocks built so far.
    private(set) var blocks = 0

    /// Builds one block: gradient workspaces requested in `body` are lent from the shared set.
    func block<T>(_ body: () throws -> T) rethrows -> T {
        (building, ordinal, recomputedOrdinal, forwardOrdinal) = (true, 0, 0, 0)
        defer { (building, blocks) = (false, blocks + 1) }
        return try body()
    }

    func lend(_ count: Int, _ use: Use) -> SharedBuffer? {
        guard building, count > 0, use != .forward || recomputesBlocks else { return nil }
        let slot: Int
        switch use {
        case .forward:
            slot = -1_000_000 - forwardOrdinal
            forwardOrdinal += 1
        case .leavesBlock:
            slot = -1 - blocks % 2
        case .gradient:
            slot = ordinal
            ordinal += 1
        case .recomputed:
            slot = -3 - recomputedOrdinal
            recomputedOrdinal += 1
        }
        if let buffer = buffers[Key(slot: slot, count: count)] { return buffer }
        let buffer = SharedBuffer(count)
        buffers[Key(slot: slot, count: count)] = buffer
        return buffer
    }
}

/// A layer whose output at a position depends on the position or on earlier positions.
/// Generation runs the model one token at a time (a model built for samples of one token) and
/// tells these layers where the token stands.
public protocol IncrementalLayer: Layer {
    /// Forgets the sequence so far; the next row is at `position` (0, or after a re-fill).
    func startSequence(capacity: Int)
    /// The absolute position of the next row.
    func move(to position: Int)
}

/// The times of containers' calls to their sublayers, recorded only while `cohort profile`
/// asks (`recording`); otherwise a sublayer call costs one branch more.
public enum SublayerTimes {
    nonisolated(unsafe) public static var recording = false
    nonisolated(unsafe) public static var forward: [String: Double] = [:]
    nonisolated(unsafe) public static var backward: [String: Double] = [:]

    public static func reset() { (forward, backward) = ([:], [:]) }
}

extension Layer {
    /// `forward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedForward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        guard SublayerTimes.recording else { return forward(input, batch: batch, training: training) }
        let start = monotonicNanoseconds()
        let output = forward(input, batch: batch, training: training)
        SublayerTimes.forward[name, default: 0] += Double(monotonicNanoseconds() - start) / 1e9
        return output
    }

    /// `backward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedBackward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        guard SublayerTimes.recording else { return backward(input, outputGradient: outputGradient, batch: batch) }
        let start = monotonicNanoseconds()
        let gradient = backward(input, outputGradient: outputGradient, batch: batch)
        SublayerTimes.backward[name, default: 0] += Double(monotonicNanoseconds() - start) / 1e9
        return gradient
    }
}
