import CCohort

/// `training.overlap_all_reduce`: buckets of the flat gradient buffer summed by `MPI_Iallreduce`
/// started during the last micro-batch's backward, from the end of the buffer (the last layers,
/// whose backward ends first) to its start. Bucket bounds fall between layers, so they depend
/// on the model alone and every rank starts the same collectives in the same order.
final class OverlappedBucketSum: GradientSynchronization {
    let run: GradientRun
    let buckets: [Range<Int>]
    /// After top-level layer i's backward, gradients from `finalFrom[i]` on are final.
    let finalFrom: [Int]
    private var started = 0
    var description: String { "MPI_Iallreduce of \(buckets.count) buckets started during backward" }

    init(run: GradientRun, bucketFloats: Int) {
        self.run = run
        (buckets, finalFrom) = Self.plan(starts: run.model.parameterStarts, count: run.model.parameters.count, bucketFloats: bucketFloats)
    }

    /// The buckets, in the order they start, for top-level layers whose parameters start at
    /// `starts` (nil: none) in a buffer of `count`, each at least `bucketFloats` but the first.
    static func plan(starts: [Int?], count: Int, bucketFloats: Int) -> (buckets: [Range<Int>], finalFrom: [Int]) {
        let finalFrom = GradientBuckets.finalFrom(starts: starts, count: count)
        var buckets: [Range<Int>] = []
        var high = count
        for floor in finalFrom.reversed() where high - floor >= bucketFloats {
            buckets.append(floor..<high)
            high = floor
        }
        if high > 0 { buckets.append(0..<high) }
        return (buckets, finalFrom)
    }

    static func make(_ run: GradientRun) -> OverlappedBucketSum? {
        guard run.training.overlapAllReduce, run.communicator.size > 1, run.trainableSpans == nil, !run.faultInjected else { return nil }
        return OverlappedBucketSum(run: run, bucketFloats: max(1, Int(run.training.bucketMegabytes * 1e6) / MemoryLayout<Float>.stride))
    }

    func backwardHook(lastMicroBatch: Bool) -> ((Int) -> Void)? {
        lastMicroBatch ? { [unowned self] in self.startFinishedBuckets(after: $0) } : nil
    }

    /// Starts every bucket that is final after layer `index`'s backward; lets the others advance.
    private func startFinishedBuckets(after index: Int) {
        let gradients = run.model.parameters.gradients
        var startedAny = false
        while started < buckets.count, buckets[started].lowerBound >= finalFrom[index] {
            run.communicator.startSum(UnsafeMutableBufferPointer(rebasing: gradients[buckets[started]]))
            started += 1
            startedAny = true
        }
        if !startedAny { run.communicator.progressSums() }
    }

    /// Starts the buckets backward did not (all of them on a rank without rows this step), then waits.
    func finish() -> Bool {
        let gradients = run.model.parameters.gradients
        for bucket in buckets[started...] { run.communicator.startSum(UnsafeMutableBufferPointer(rebasing: gradients[bucket])) }
        run.communicator.completeSums()
        started = 0
        return cohort_all_finite(gradients.baseAddress, gradients.count) != 0
    }
}
