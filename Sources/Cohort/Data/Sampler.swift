/// Which rows each rank trains on, step by step: the `global` sampling mode.
///
/// Each epoch has one permutation of all rows, the same on every rank, drawn from
/// (seed, epoch) alone. Global batch k is rows k·G ..< (k+1)·G of it, G = ranks × per-rank
/// batch, and rank r takes the r-th contiguous slice of that batch. So N ranks with batch b
/// train on exactly what 1 rank with batch N·b does, and the per-rank step count is the same on
/// every rank.
///
/// The remainder (rows mod G): with `partial` (default) the last global batch is smaller and
/// split as evenly as the ranks allow (a rank may get one row fewer, or none); every row is used
/// exactly once per epoch, nothing is repeated. With `drop` the last partial batch is skipped,
/// as `drop_last=True` in PyTorch; each epoch drops different rows.
public struct GlobalSampler: Equatable, Sendable {
    public let rows: Int
    public let worldSize: Int
    public let rank: Int
    public let batchPerRank: Int
    public let seed: UInt64
    public let dropRemainder: Bool

    public init(rows: Int, worldSize: Int, rank: Int, batchPerRank: Int, seed: UInt64, dropRemainder: Bool) {
        (self.rows, self.worldSize, self.rank, self.batchPerRank, self.seed, self.dropRemainder) =
            (rows, worldSize, rank, batchPerRank, seed, dropRemainder)
    }

    public var globalBatch: Int { worldSize * batchPerRank }

    public var stepsPerEpoch: Int {
        dropRemainder ? rows / globalBatch : (rows + globalBatch - 1) / globalBatch
    }

    /// The permutation of epoch `epoch`: a function of (seed, epoch) only.
    public func order(epoch: Int) -> [Int] {
        var generator = Generator(seed: seed, streams: Stream.shuffle.rawValue, UInt64(epoch))
        return permutation(count: rows, generator: &generator)
    }

    /// The global batch of `step` and this rank's slice of it.
    public func batch(step: Int, order: [Int]) -> (mine: ArraySlice<Int>, globalCount: Int) {
        let start = step * globalBatch
        let count = min(globalBatch, rows - start)
        let first = start + rank * count / worldSize
        let last = start + (rank + 1) * count / worldSize
        return (order[first..<last], count)
    }
}
