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
    /// One thread: element-wise and row-wise work (GELU, softmax, embeddings, pooling, batch norm, dropout).
    case single = "1"
    /// Its matrix products above 8 MFLOP, cut into parts (`gemm`).
    case products = "products"
    /// Attention's per-(row, head) products and softmax.
    case heads = "rows × heads"
    /// Convolution: groups of batch chunks (im2col, product, epilogue, col2im), fixed by the batch.
    case chunks = "batch chunks"
    /// Element-wise work in parts of at least 64K elements (`LayerThreads.elementwise`).
    case elements = "elements"
    /// Parts of the rows (layer norm), and of the columns for its parameter gradients.
    case rows = "rows"
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

/// A layer whose output at a position depends on the position or on earlier positions.
/// Generation runs the model one token at a time (a model built for samples of one token) and
/// tells these layers where the token stands.
public protocol IncrementalLayer: Layer {
    /// Forgets the sequence so far; the next row is at `position` (0, or after a re-fill).
    func startSequence(capacity: Int)
    /// The absolute position of the next row.
    func move(to position: Int)
}
