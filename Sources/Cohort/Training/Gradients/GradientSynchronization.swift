import CCohort

/// How a run holds its gradients and sums them over the ranks: one type per strategy, chosen
/// once (`GradientStrategies.choose`, during `Trainer.synchronizeInitialState`) from the config
/// and the topology. The step calls the chosen one at four fixed points:
///
///     synchronization.beginStep()                                  before the first forward
///     model.backward(…, finished: synchronization.backwardHook(…))  each micro-batch's backward
///     let finite = synchronization.finish()                        the sum over the ranks
///     synchronization.clip(maxNorm:)                               before the update
///
/// Adding a strategy is one file with a type conforming to this protocol and one line in
/// `GradientStrategies.all` (`GradientStrategyTests` adds one the same way).
protocol GradientSynchronization: AnyObject {
    /// The strategy for this run, or nil when it does not apply. Collective: every rank asks
    /// the strategies in the same order and gets the same answer (what a strategy allocates
    /// together, such as shared memory, it allocates here).
    static func make(_ run: GradientRun) -> Self?
    /// The run it was made for.
    var run: GradientRun { get }
    /// How the gradients are summed, for the run's first line.
    var description: String { get }
    /// Before a step's first forward: clears what backward adds into.
    func beginStep()
    /// What backward calls after each top-level layer (its index) of the micro-batch that is or
    /// is not the step's last; nil for nothing.
    func backwardHook(lastMicroBatch: Bool) -> ((Int) -> Void)?
    /// After the step's last backward: every rank holds the sum of the gradients over the
    /// ranks. Returns whether the part of the sum this rank checked is finite (the ranks agree
    /// on it afterwards).
    func finish() -> Bool
    /// Scales the summed gradients so their global L2 norm is at most `maxNorm`.
    func clip(maxNorm: Float)
    /// Memory the strategy holds besides the parameter store (for the per-node memory report).
    var scratchRegions: [UnsafeRawBufferPointer] { get }
    /// Seconds this rank spent summing during backward (inside the compute time), or nil.
    var backwardSumSeconds: Double? { get }
}

extension GradientSynchronization {
    func beginStep() { run.model.parameters.zeroGradients() }
    func backwardHook(lastMicroBatch: Bool) -> ((Int) -> Void)? { nil }
    func clip(maxNorm: Float) { clipGradientNorm(run.model.parameters.gradients, maxNorm: maxNorm) }
    var scratchRegions: [UnsafeRawBufferPointer] { [] }
    var backwardSumSeconds: Double? { nil }
}

/// What a strategy may look at when it is chosen, and works on afterwards.
struct GradientRun {
    let model: Model
    let communicator: Communicator
    let training: TrainingConfig
    /// The contiguous ranges of the flat buffer that train; nil when nothing is frozen.
    let trainableSpans: [Range<Int>]?
    /// A fault is injected (`COHORT_FAULT`): strategies that overlap communication stand aside.
    let faultInjected: Bool
}

/// Every strategy, in the order they are asked: the first that applies is the run's.
enum GradientStrategies {
    static let all: [any GradientSynchronization.Type] = [
        FrozenSpansSum.self,
        NodeGradientSumStrategy.self,
        NodeReductionBufferSum.self,
        OverlappedBucketSum.self,
        ReplicatedSum.self,
    ]

    /// The first of `strategies` that applies (the replicated sum always does).
    static func choose(_ run: GradientRun, from strategies: [any GradientSynchronization.Type] = all) -> any GradientSynchronization {
        for strategy in strategies {
            if let chosen = strategy.make(run) { return chosen }
        }
        return ReplicatedSum(run: run)
    }
}

/// One top-level layer bucket per layer with parameters (its range of the flat gradient buffer),
/// and per top-level layer the offset from which gradients are final once its backward has run
/// (a tied output head writes its embedding's gradient long before the embedding's turn).
struct GradientBuckets {
    let ranges: [Range<Int>]
    let finalFrom: [Int]

    init(model: Model) {
        let starts = model.parameterStarts
        let count = model.parameters.count
        let sorted = starts.compactMap { $0 }.sorted()
        ranges = sorted.indices.map { sorted[$0]..<($0 + 1 < sorted.count ? sorted[$0 + 1] : count) }.filter { !$0.isEmpty }
        finalFrom = Self.finalFrom(starts: starts, count: count)
    }

    /// Per top-level layer: the lowest start among it and the layers after it.
    static func finalFrom(starts: [Int?], count: Int) -> [Int] {
        var floor = count
        return Array(starts.reversed().map { start in
            if let start { floor = min(floor, start) }
            return floor
        }.reversed())
    }
}
