import CCohort
#if canImport(Glibc)
import Glibc
#endif

/// An update rule over the flat parameter buffer. Every rank runs it on the same averaged
/// gradients, so replicas stay identical without exchanging parameters.
public protocol Optimizer: AnyObject {
    /// Optimizer steps taken so far (Adam's t).
    var stepCount: Int { get set }
    /// Named flat state buffers (same layout as the parameters), for checkpoints.
    var slots: [(name: String, buffer: UnsafeMutableBufferPointer<Float>)] { get }
    /// Moves the state into `storage` (one array per slot, in `slots` order: memory the ranks
    /// of a node share), copying only `range`, and from then on updates only `range` of the
    /// parameters and of the state: `training.state: node_shared`.
    func share(_ storage: [UnsafeMutableBufferPointer<Float>], updating range: Range<Int>)
    /// Every buffer of the optimizer's state (its slots), for the memory report.
    var stateRegions: [UnsafeRawBufferPointer] { get }
    func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>, learningRate: Float)
}

/// Builds the optimizer a config names, with state sized for `parameters`.
/// Parameters named in `frozen` are never decayed (their gradients are zero, so they never move).
public func makeOptimizer(_ config: OptimizerConfig, parameters: ParameterStore, frozen: Set<String> = []) -> Optimizer {
    let decay = DecayRanges(parameters.entries.filter { ($0.decays || config.decayBiasAndNorm) && !frozen.contains($0.name) }
        .map { $0.offset..<($0.offset + $0.count) })
    switch config.kind {
    case .sgd:
        return SGD(count: parameters.count, momentum: config.momentum, nesterov: config.nesterov,
                   weightDecay: config.weightDecay, decay: decay)
    case .adam:
        return Adam(count: parameters.count, beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon,
                    weightDecay: config.weightDecay, decay: decay)
    case .adamw:
        return Adam(count: parameters.count, beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon,
                    weightDecay: config.weightDecay, decay: decay, decoupled: true)
    }
}

/// Where weight decay applies in the flat parameter buffer: whole tensors (weights, not biases
/// or normalization scales), so a few ranges instead of a mask of one float per parameter.
public struct DecayRanges: Equatable, Sendable {
    /// Sorted, disjoint and not touching (neighbours are merged).
    public private(set) var ranges: [Range<Int>] = []

    public init(_ ranges: [Range<Int>]) {
        for range in ranges.filter({ !$0.isEmpty }).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = self.ranges.last, range.lowerBound <= last.upperBound {
                self.ranges[self.ranges.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                self.ranges.append(range)
            }
        }
    }

    /// From a mask with 1 where decay applies (0 elsewhere).
    public init(mask: [Float]) {
        self.init(mask.indices.filter { mask[$0] != 0 }.map { $0..<($0 + 1) })
    }

    /// Calls `body` on consecutive pieces of `span` with 1 where decay applies and 0 where not.
    func forEachPiece(of span: Range<Int>, _ body: (Range<Int>, Float) -> Void) {
        guard !span.isEmpty else { return }
        var position = span.lowerBound
        for range in ranges where range.upperBound > position && range.lowerBound < span.upperBound {
            if range.lowerBound > position { body(position..<range.lowerBound, 0) }
            let end = min(range.upperBound, span.upperBound)
            body(max(range.lowerBound, position)..<end, 1)
            position = end
        }
        if position < span.upperBound { body(position..<span.upperBound, 0) }
    }
}

/// Scales `gradients` so their global L2 norm is at most `maxNorm` (PyTorch's clip_grad_norm_:
/// factor maxNorm / (norm + 1e-6) when below 1). Run after the all-reduce, so every rank
/// clips the same averaged gradient identically. Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float, scaling range: Range<Int>? = nil,
                             afterReading: () -> Void = {}) -> Float {
    let sum = gradients.baseAddress.map { cohort_sum_squares($0, gradients.count) } ?? 0
    let norm = Float(sum.squareRoot())
    let factor = maxNorm / (norm + 1e-6)
    // Where a node's ranks share one gradient sum, each scales only the slice it updates, and
    // only after every rank has read the whole sum (`afterReading`: a node barrier).
    afterReading()
    if factor < 1 {
        for index in range ?? gradients.indices { gradients[index] *= factor }
    }
    return norm
}

/// SGD with momentum as PyTorch defines it (dampening 0):
/// g ← g + λθ (weight decay, where `decay` allows); v ← μv + g;
/// θ ← θ − lr·(g + μv) with Nesterov, θ ← θ − lr·v without.
public final class SGD: Optimizer {
    public var stepCount = 0
    let momentum: Float
    let nesterov: Bool
    let weightDecay: Float
    let state: UpdateState

    public init(count: Int, momentum: Float, nesterov: Bool, weightDecay: Float, decay: DecayRanges) {
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        state = UpdateState(count: count, arrays: 1, decay: decay)
    }

    public var slots: [(name: String, buffer: UnsafeMutableBufferPointer<Float>)] {
        momentum > 0 ? [("momentum", state.arrays[0])] : []
    }

    public func share(_ storage: [UnsafeMutableBufferPointer<Float>], updating range: Range<Int>) {
        // Without momentum the velocity is scratch that is never saved: each rank keeps its own.
        momentum > 0 ? state.share(storage, updating: range) : state.restrict(to: range)
    }

    public var stateRegions: [UnsafeRawBufferPointer] { state.regions }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>, learningRate: Float) {
        stepCount += 1
        let (momentum, nesterov, weightDecay) = (momentum, nesterov, weightDecay)
        let (start, velocity, decay) = (state.range.lowerBound, state.arrays[0].baseAddress!, state.decay)
        LayerThreads.elementwise(state.range.count) { offset, count in
            decay.forEachPiece(of: (start + offset)..<(start + offset + count)) { piece, decays in
                let at = piece.lowerBound
                cohort_sgd_update(parameters.baseAddress! + at, gradients.baseAddress! + at, velocity + at, decays, piece.count,
                                  learningRate, momentum, nesterov ? 1 : 0, weightDecay)
            }
        }
    }
}

/// Adam (Kingma & Ba 2015) as PyTorch's `torch.optim.Adam`, weight decay added to the gradient:
/// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// θ ← θ − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + ε).
/// With `decoupled` it is AdamW (Loshchilov & Hutter 2019, as `torch.optim.AdamW`): first
/// θ ← θ·(1 − lr·λ) where `decay` allows, then the Adam step on the raw gradient.
public final class Adam: Optimizer {
    public var stepCount = 0
    let beta1, beta2, epsilon, weightDecay: Float
    let state: UpdateState
    let decoupled: Bool

    public init(count: Int, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float, decay: DecayRanges, decoupled: Bool = false) {
        (self.beta1, self.beta2, self.epsilon, self.weightDecay) = (beta1, beta2, epsilon, weightDecay)
        self.decoupled = decoupled
        state = UpdateState(count: count, arrays: 2, decay: decay)
    }

    public var slots: [(name: String, buffer: UnsafeMutableBufferPointer<Float>)] {
        [("adam_m", state.arrays[0]), ("adam_v", state.arrays[1])]
    }

    public func share(_ storage: [UnsafeMutableBufferPointer<Float>], updating range: Range<Int>) {
        state.share(storage, updating: range)
    }

    public var stateRegions: [UnsafeRawBufferPointer] { state.regions }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>, learningRate: Float) {
        stepCount += 1
        let t = Float(stepCount)
        let correction1 = 1 - powf(beta1, t)
        let correction2 = 1 - powf(beta2, t)
        // Folding both corrections into the step size and epsilon is exact algebra:
        // lr·m̂/(sqrt(v̂)+ε) = (lr·sqrt(c2)/c1)·m/(sqrt(v)+ε·sqrt(c2)).
        let stepSize = learningRate * correction2.squareRoot() / correction1
        let epsilonHat = epsilon * correction2.squareRoot()
        // AdamW's decay θ·(1 − lr·λ), where it applies, is done by the kernel in the same pass over memory.
        let shrink = decoupled ? learningRate * weightDecay : 0
        let (beta1, beta2, decay) = (beta1, beta2, decoupled ? 0 : weightDecay)
        let (start, m, v, decayRanges) = (state.range.lowerBound, state.arrays[0].baseAddress!, state.arrays[1].baseAddress!, state.decay)
        LayerThreads.elementwise(state.range.count) { offset, count in
            decayRanges.forEachPiece(of: (start + offset)..<(start + offset + count)) { piece, decays in
                let at = piece.lowerBound
                cohort_adam_update(parameters.baseAddress! + at, gradients.baseAddress! + at, m + at, v + at, decays, piece.count,
                                   beta1, beta2, stepSize, epsilonHat, decay, shrink)
            }
        }
    }
}

/// An optimizer's per-parameter arrays (momentum, Adam's moments), where weight decay applies
/// and the range of parameters it updates: all of them, or with `training.state: node_shared`
/// the slice of the parameters this rank owns on its node, with the arrays in the node's
/// shared memory.
final class UpdateState {
    private(set) var arrays: [UnsafeMutableBufferPointer<Float>]
    private(set) var range: Range<Int>
    let decay: DecayRanges
    private var owned = true

    init(count: Int, arrays: Int, decay: DecayRanges) {
        precondition(decay.ranges.allSatisfy { $0.clamped(to: 0..<count) == $0 }, "weight decay applies inside the parameters")
        // Untouched until the first update writes them: no memory when a node's shared state replaces them.
        self.arrays = (0..<arrays).map { _ in .allocateZeroed(count) }
        (self.decay, range) = (decay, 0..<count)
    }

    deinit {
        if owned { arrays.forEach { $0.freeZeroed() } }
    }

    /// The memory this state holds (for the memory report).
    var regions: [UnsafeRawBufferPointer] { arrays.map { UnsafeRawBufferPointer($0) } }

    /// Updates only `range` from now on.
    func restrict(to range: Range<Int>) {
        precondition(range.clamped(to: self.range) == range, "an optimizer is restricted to a part of what it updates")
        self.range = range
    }

    /// Copies `range` of each array into `storage` (the same count each) and uses `storage` from now on.
    func share(_ storage: [UnsafeMutableBufferPointer<Float>], updating range: Range<Int>) {
        precondition(storage.count == arrays.count && storage.allSatisfy { $0.count == arrays.first?.count },
                     "shared optimizer state has one array per slot, each the parameters' size")
        for (target, source) in zip(storage, arrays) {
            (target.baseAddress! + range.lowerBound).update(from: source.baseAddress! + range.lowerBound, count: range.count)
        }
        if owned { arrays.forEach { $0.freeZeroed() } }
        (arrays, owned) = (storage, false)
        restrict(to: range)
    }
}

/// The `optimizer:` section of a config.
public struct OptimizerConfig: Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable { case sgd, adam, adamw }
    public var kind: Kind
    public var learningRate: Float
    public var momentum: Float
    public var nesterov: Bool
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Apply weight decay to biases and batch-norm γ/β too (default: weights only).
    public var decayBiasAndNorm: Bool
    /// Clip the averaged gradient to this global L2 norm (0: off).
    public var clipNorm: Float
    public var schedule: LearningRateSchedule

    /// Defaults as in YAML: Adam at 1e-3 (SGD at 1e-2), weight decay 0.01 for AdamW only.
    public init(kind: Kind = .adam, learningRate: Float? = nil, momentum: Float = 0, nesterov: Bool = false, beta1: Float = 0.9,
                beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float? = nil, decayBiasAndNorm: Bool = false,
                clipNorm: Float = 0, schedule: LearningRateSchedule? = nil) {
        let rate = learningRate ?? (kind == .sgd ? 1e-2 : 1e-3)
        (self.kind, self.learningRate, self.momentum, self.nesterov) = (kind, rate, momentum, nesterov)
        (self.beta1, self.beta2, self.epsilon, self.weightDecay) = (beta1, beta2, epsilon, weightDecay ?? (kind == .adamw ? 0.01 : 0))
        (self.decayBiasAndNorm, self.clipNorm, self.schedule) = (decayBiasAndNorm, clipNorm, schedule ?? LearningRateSchedule(baseRate: rate))
    }
}
