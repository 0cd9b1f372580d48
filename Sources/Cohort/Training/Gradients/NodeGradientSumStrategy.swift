/// `training.state: node_shared` with one micro-batch a step: one gradient buffer per node that
/// each rank adds its own gradients into, in turn, bucket by bucket during backward (a bucket
/// as soon as backward has finished it); `finish` all-reduces the node sums across nodes.
/// Bitwise the replicated sum's result.
final class NodeGradientSumStrategy: GradientSynchronization {
    let run: GradientRun
    let sum: NodeGradientSum
    /// Per top-level layer, the offset from which gradients are final after its backward.
    let finalFrom: [Int]
    var description: String { sum.description }

    private init(run: GradientRun, sum: NodeGradientSum, finalFrom: [Int]) { (self.run, self.sum, self.finalFrom) = (run, sum, finalFrom) }

    static func make(_ run: GradientRun) -> NodeGradientSumStrategy? {
        let training = run.training
        guard training.allReduce == .auto, training.state == .nodeShared, training.accumulateSteps == 1, !training.overlapAllReduce else {
            return nil
        }
        let buckets = GradientBuckets(model: run.model)
        guard let sum = run.communicator.nodeMemory?.makeNodeGradientSum(count: run.model.parameters.count, buckets: buckets.ranges) else { return nil }
        run.model.parameters.useGradients(sum.sum)
        run.model.parameters.gradientRoute = sum.route
        return NodeGradientSumStrategy(run: run, sum: sum, finalFrom: buckets.finalFrom)
    }

    /// Each bucket's scratch is zeroed as it opens.
    func beginStep() {}

    func backwardHook(lastMicroBatch: Bool) -> ((Int) -> Void)? {
        let (sum, finalFrom) = (sum, finalFrom)
        return { sum.finish(from: finalFrom[$0]) }
    }

    func finish() -> Bool { sum.complete() }

    /// Each rank scales its slice of the node's one sum, after every rank has read the norm.
    func clip(maxNorm: Float) {
        clipGradientNorm(run.model.parameters.gradients, maxNorm: maxNorm, scaling: sum.ownSlice, afterReading: { self.sum.synchronizeNode() })
    }

    var scratchRegions: [UnsafeRawBufferPointer] { sum.scratchRegions }
    var backwardSumSeconds: Double? { sum.turnSeconds }
}
