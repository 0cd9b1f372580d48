#if canImport(Glibc)
import Glibc
#endif
import CCohort

/// The gradient sum of a node, held once (`training.state: node_shared` with one micro-batch per
/// step): the ranks of the node add their gradients into one shared buffer while backward runs,
/// instead of each keeping a full gradient buffer of its own for a sum after backward.
///
/// The buffer is cut into buckets, one per top-level layer with parameters. Backward writes a
/// bucket's gradients into a scratch buffer of this rank (`route`, through
/// `ParameterStore.gradientRoute`, opened at the bucket's first write); once no later layer
/// writes it (`finish`), the rank takes its turn: node rank 0 copies its scratch into the
/// shared bucket, then rank 1 adds its own, and so on, each waiting on the bucket's counter for
/// the rank before it. So every element is ((g₀ + g₁) + g₂) + …, the order and the bits of
/// `NodeSharedReduction`'s sum, and a node holds one gradient buffer plus a few buckets of
/// scratch per rank instead of one buffer per rank. `complete()` takes the turns of buckets
/// backward did not write (zeros), then sums each rank's slice across nodes as
/// `NodeSharedReduction` does.
public final class NodeGradientSum {
    /// The node's gradient sum: every rank reads all of it after `complete()`.
    public let sum: UnsafeMutableBufferPointer<Float>
    /// The slice this rank sums across nodes (and updates, with `node_shared` state).
    public let ownSlice: Range<Int>
    public let description: String
    private let buckets: [Range<Int>]
    private let counters: UnsafeMutablePointer<Int64>
    private let node: MPI_Comm
    private let across: MPI_Comm?
    private let window: MPI_Win
    private let nodeRank: Int
    private let nodeSize: Int
    private var steps: Int64 = 0
    /// Scratch of the buckets backward has opened this step, by bucket index.
    private var open: [Int: UnsafeMutableBufferPointer<Float>] = [:]
    private var done: [Bool]
    /// Scratch buffers of the largest bucket's size, reused step after step.
    private var pool: [UnsafeMutableBufferPointer<Float>] = []
    private var allocated: [UnsafeMutableBufferPointer<Float>] = []
    private let largest: Int
    var compressesAcrossNodes = false
    /// Seconds of `complete()`: waiting for the node's other ranks, the turns backward left
    /// (zeros), and across nodes.
    private(set) var phaseSeconds: (wait: Double, node: Double, across: Double) = (0, 0, 0)
    /// Seconds of the turns taken during backward (waiting for the rank before, adding): part
    /// of the step's compute time, not of the sum after it.
    public private(set) var turnSeconds = 0.0
    private var completing = false

    /// Collective over `world`; nil on every rank alike where the node's ranks cannot share
    /// memory (one rank per node, nodes of different sizes, no window).
    static func make(world: MPI_Comm, count: Int, buckets: [Range<Int>]) -> NodeGradientSum? {
        guard count > 0, !buckets.isEmpty else { return nil }
        let (node, nodeSize, nodeRank) = splitByNode(world)
        var nodeHandle: MPI_Comm? = node
        // Node rank 0 allocates the counters (one cache line each), then the sum.
        let counterBytes = buckets.count * 64
        guard everyNodeHasSeveralRanks(world, nodeSize: nodeSize),
              let (window, start) = allocateNodeWindow(world: world, node: node, nodeRank: nodeRank,
                                                       bytes: counterBytes + count * MemoryLayout<Float>.stride) else {
            MPI_Comm_free(&nodeHandle)
            return nil
        }
        let (across, nodes) = splitAcrossNodes(world, nodeRank: nodeRank)
        let counters = start.assumingMemoryBound(to: Int64.self)
        if nodeRank == 0 {
            for bucket in buckets.indices { counters[bucket * 8] = 0 }
        }
        let sum = UnsafeMutableBufferPointer(start: (start + counterBytes).assumingMemoryBound(to: Float.self), count: count)
        let reduction = NodeGradientSum(sum: sum, buckets: buckets, counters: counters, node: node, across: across,
                                        nodes: nodes, window: window, nodeRank: Int(nodeRank), nodeSize: Int(nodeSize))
        reduction.synchronizeNode()
        return reduction
    }

    private init(sum: UnsafeMutableBufferPointer<Float>, buckets: [Range<Int>], counters: UnsafeMutablePointer<Int64>, node: MPI_Comm,
                 across: MPI_Comm?, nodes: Int, window: MPI_Win, nodeRank: Int, nodeSize: Int) {
        (self.sum, self.buckets, self.counters, self.node, self.across) = (sum, buckets, counters, node, across)
        (self.window, self.nodeRank, self.nodeSize) = (window, nodeRank, nodeSize)
        ownSlice = NodeSharedReduction.slices(count: sum.count, parts: nodeSize)[nodeRank]
        done = Array(repeating: false, count: buckets.count)
        largest = buckets.map(\.count).max() ?? 0
        description = "node shared memory, \(nodeSize) ranks per node"
            + (across != nil ? " × \(nodes) nodes, MPI_Allreduce across nodes" : "")
    }

    /// Where backward writes the gradient at `offset` of the flat buffer: this rank's scratch
    /// for the offset's bucket (zeroed when the bucket opens).
    public func route(_ offset: Int) -> UnsafeMutablePointer<Float> {
        let bucket = index(of: offset)
        if let scratch = open[bucket] { return scratch.baseAddress! + (offset - buckets[bucket].lowerBound) }
        precondition(!done[bucket], "a layer wrote gradients of bucket \(bucket) after it was summed")
        let scratch: UnsafeMutableBufferPointer<Float>
        if let reused = pool.popLast() {
            scratch = reused
        } else {
            scratch = .allocateZeroed(largest)
            allocated.append(scratch)
        }
        scratch.baseAddress!.update(repeating: 0, count: buckets[bucket].count)
        open[bucket] = scratch
        return scratch.baseAddress! + (offset - buckets[bucket].lowerBound)
    }

    /// Takes this rank's turn for every bucket from `floor` on that is not summed yet: no later
    /// call of this step writes gradients there (`Model.backward`'s `finished`).
    public func finish(from floor: Int) {
        for bucket in buckets.indices.reversed() where buckets[bucket].lowerBound >= floor && !done[bucket] {
            takeTurn(bucket)
        }
    }

    /// This rank's turn for `bucket`: wait for the rank before it, add (or copy) the scratch, pass on.
    private func takeTurn(_ bucket: Int) {
        let counter = counters + bucket * 8
        let waiting = monotonicNanoseconds()
        cohort_counter_wait(counter, steps * Int64(nodeSize) + Int64(nodeRank))
        let adding = monotonicNanoseconds()
        let range = buckets[bucket]
        cohort_sum_turn(sum.baseAddress! + range.lowerBound, open[bucket].map { UnsafePointer($0.baseAddress!) }, range.count,
                        nodeRank == 0 ? 1 : 0)
        cohort_counter_store(counter, steps * Int64(nodeSize) + Int64(nodeRank) + 1)
        if completing {
            phaseSeconds.wait += Double(adding - waiting) / 1e9
            phaseSeconds.node += seconds(since: adding)
        } else {
            turnSeconds += seconds(since: waiting)
        }
        if let scratch = open.removeValue(forKey: bucket) { pool.append(scratch) }
        done[bucket] = true
    }

    /// Ends the step's sum: the turns backward has not taken, then (with several nodes) this
    /// rank's slice summed across nodes. Returns whether that slice is finite. Collective over the world.
    public func complete() -> Bool {
        completing = true
        finish(from: 0)
        completing = false
        let arrived = monotonicNanoseconds()
        synchronizeNode()  // every rank's turn for every bucket is in the sum
        phaseSeconds.wait += seconds(since: arrived)
        let slice = sum.baseAddress! + ownSlice.lowerBound
        if let across {
            let crossing = monotonicNanoseconds()
            if compressesAcrossNodes {
                _ = cohort_allreduce_bf16(slice, ownSlice.count, across)
            } else {
                MPI_Allreduce(cohort_mpi_in_place(), slice, Int32(ownSlice.count), cohort_mpi_float(), cohort_mpi_sum(), across)
            }
            phaseSeconds.across += seconds(since: crossing)
        }
        let finite = cohort_all_finite(slice, ownSlice.count) != 0
        synchronizeNode()  // every slice summed across nodes before any rank reads the sum
        steps += 1
        done = Array(repeating: false, count: buckets.count)
        return finite
    }

    /// Publishes every rank's writes to the node (a node barrier between memory syncs): after
    /// clipping read the whole sum and before any rank scales its slice.
    public func synchronizeNode() {
        MPI_Win_sync(window)
        MPI_Barrier(node)
        MPI_Win_sync(window)
    }

    /// This rank's scratch, for the memory report.
    public var scratchRegions: [UnsafeRawBufferPointer] { allocated.map { UnsafeRawBufferPointer($0) } }

    private func index(of offset: Int) -> Int {
        var (low, high) = (0, buckets.count - 1)
        while low < high {
            let middle = (low + high + 1) / 2
            if buckets[middle].lowerBound <= offset { low = middle } else { high = middle - 1 }
        }
        precondition(buckets[low].contains(offset), "gradient offset \(offset) is in no bucket")
        return low
    }

    /// Collective over the world, before `MPI_Finalize`.
    func free() {
        freeNodeWindow(window, node: node, across: across)
        allocated.forEach { $0.freeZeroed() }
    }
}
