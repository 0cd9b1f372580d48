/// The `sharded` sampling mode, for training files larger than memory.
///
/// The training rows are cut into blocks of `blockRows` consecutive rows (aligned with the HDF5
/// chunks, so a block is one contiguous read). Each epoch the blocks are permuted from
/// (seed, epoch), the same on every rank, and dealt round-robin: rank r gets blocks r, r + W, …
/// Each rank then streams its blocks, in that order, through a shuffle buffer of at most
/// `bufferRows` rows and draws rows from it at random (its own generator from
/// (seed, epoch, rank)); a block is read when the buffer has room for all of it.
/// So a rank reads only its blocks, about 1/W of the file per epoch, and holds at most
/// `bufferRows` decoded rows, whatever the file size. Every row is used exactly once per epoch.
///
/// Ranks may hold a few rows more or fewer (whole blocks). The step count is the same on every
/// rank: with `partial` (default) it is set by the largest share, and ranks whose share has run
/// out contribute smaller or empty batches at the end; with `drop` it is set by the smallest
/// share and the surplus rows of that epoch are skipped. The global row count of each step is
/// computed identically on every rank, so gradients stay exact means.
public struct ShardedSampler: Sendable {
    public let rows: Int
    public let worldSize: Int
    public let rank: Int
    public let batchPerRank: Int
    public let blockRows: Int
    public let bufferRows: Int
    public let seed: UInt64
    public let dropRemainder: Bool

    public init(rows: Int, worldSize: Int, rank: Int, batchPerRank: Int, blockRows: Int, bufferRows: Int, seed: UInt64, dropRemainder: Bool) {
        (self.rows, self.worldSize, self.rank, self.batchPerRank, self.seed, self.dropRemainder) =
            (rows, worldSize, rank, batchPerRank, seed, dropRemainder)
        self.blockRows = max(1, blockRows)
        self.bufferRows = max(bufferRows, self.blockRows)
    }

    public var blockCount: Int { (rows + blockRows - 1) / blockRows }

    public func block(_ index: Int) -> Range<Int> { (index * blockRows)..<min((index + 1) * blockRows, rows) }

    /// The blocks of `rank` in epoch `epoch`, in reading order.
    public func blocks(epoch: Int, rank: Int) -> [Int] {
        var generator = Generator(seed: seed, streams: Stream.shuffle.rawValue, UInt64(epoch), 0xB10C)
        let order = permutation(count: blockCount, generator: &generator)
        return stride(from: rank, to: order.count, by: worldSize).map { order[$0] }
    }

    public func rowCount(epoch: Int, rank: Int) -> Int { blocks(epoch: epoch, rank: rank).reduce(0) { $0 + block($1).count } }

    private func shares(epoch: Int) -> [Int] { (0..<worldSize).map { rowCount(epoch: epoch, rank: $0) } }

    public func stepsPerEpoch(epoch: Int) -> Int {
        let counts = shares(epoch: epoch)
        return dropRemainder ? (counts.min() ?? 0) / batchPerRank : ((counts.max() ?? 0) + batchPerRank - 1) / batchPerRank
    }

    /// Rows in the global batch of `step`: the sum of every rank's batch at that step.
    public func globalCount(epoch: Int, step: Int, shares counts: [Int]) -> Int {
        counts.reduce(0) { $0 + min(batchPerRank, max($1 - step * batchPerRank, 0)) }
    }

    public func shares(forEpoch epoch: Int) -> [Int] { shares(epoch: epoch) }

    /// The stream of this rank's rows for one epoch: which blocks to read, and which buffered
    /// row each draw takes. It works on row ids only, so replaying it to a step is cheap.
    public struct EpochStream {
        let sampler: ShardedSampler
        let blocks: [Int]
        var nextBlock = 0
        /// Row ids in the buffer; the loader keeps their data in the same slots.
        public private(set) var buffer: [Int] = []
        var generator: Generator

        init(sampler: ShardedSampler, epoch: Int) {
            self.sampler = sampler
            blocks = sampler.blocks(epoch: epoch, rank: sampler.rank)
            generator = Generator(seed: sampler.seed, streams: Stream.shuffle.rawValue, UInt64(epoch), UInt64(sampler.rank) + 1)
            buffer.reserveCapacity(sampler.bufferRows)
        }

        /// The block to read next, if the buffer has room for it (call before each draw).
        public mutating func blockToRead() -> Range<Int>? {
            guard nextBlock < blocks.count else { return nil }
            let range = sampler.block(blocks[nextBlock])
            guard buffer.count + range.count <= sampler.bufferRows || buffer.isEmpty else { return nil }
            nextBlock += 1
            buffer.append(contentsOf: range)
            return range
        }

        /// Draws one buffered row: returns its slot; the last slot moves into it.
        public mutating func draw() -> (slot: Int, row: Int)? {
            guard !buffer.isEmpty else { return nil }
            let slot = generator.nextIndex(below: buffer.count)
            let row = buffer[slot]
            buffer[slot] = buffer[buffer.count - 1]
            buffer.removeLast()
            return (slot, row)
        }
    }

    public func stream(epoch: Int) -> EpochStream { EpochStream(sampler: self, epoch: epoch) }
}
