import CCohort

/// The collective operations data-parallel training needs, and nothing more.
/// `MPICommunicator` is the real one; `SingleProcess` stands in for unit tests of the math.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Ranks of the job on this rank's node (that can share memory with it), itself included.
    var ranksOnNode: Int { get }
    /// In place: every rank ends with the element-wise sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>)
    func allReduceSum(_ values: [Double]) -> [Double]
    /// `allReduceSum(buffer)`, and whether the part of the sum this rank checked is finite. The
    /// parts of all ranks cover the buffer (each rank checks all of it, or the slice it summed
    /// when the sum is made in slices), so agree on the answer with `allReduceMax`.
    func allReduceSumCheckingFinite(_ buffer: UnsafeMutableBufferPointer<Float>) -> Bool
    func allReduceMax(_ values: [Double]) -> [Double]
    /// Starts summing `buffer` over the ranks without waiting (`MPI_Iallreduce`); the buffer is
    /// not to be touched until `completeSums()`. Buckets of an overlapped gradient all-reduce.
    func startSum(_ buffer: UnsafeMutableBufferPointer<Float>)
    /// Lets the started sums advance (MPI moves a non-blocking collective only inside MPI calls).
    func progressSums()
    /// Waits for every started sum.
    func completeSums()
    /// Gradient sums that cross between nodes travel as bfloat16 (`training.compress: bf16`):
    /// the across-nodes step of a node-shared sum, or the whole sum when every rank is alone on
    /// its node. Sums within a node are never compressed.
    var compressesAcrossNodes: Bool { get set }
    /// Seconds the node shared-memory gradient sums spent waiting for the node's ranks, summing
    /// within the node, and all-reducing across nodes; nil when there is no such sum.
    var reductionPhaseSeconds: (wait: Double, node: Double, across: Double)? { get }
    /// In place: every rank ends with root's bytes.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int)
    /// Root receives every rank's words (rank order); other ranks receive [].
    func gather(_ words: [UInt64], root: Int) -> [[UInt64]]
    func barrier()
    /// Ends every process of the job with `code` (never returns).
    func abort(code: Int32) -> Never
    /// Ends communication at a clean exit; called once, after the last collective.
    func finalize()
}

/// Memory the communicator owns and reduces without copies; valid until it is finalized.
public struct ReductionBuffer {
    public let buffer: UnsafeMutableBufferPointer<Float>
    /// How it is summed, e.g. "node shared memory, 2 ranks per node".
    public let description: String
}

/// Model state kept once per node (`NodeMemory.makeSharedState`).
public struct SharedState {
    public let arrays: [UnsafeMutableBufferPointer<Float>]
    /// The indices this rank writes; the slices of a node's ranks cover every index.
    public let ownSlice: Range<Int>
    public let ranksPerNode: Int
    /// Publishes every rank's writes to the node (a barrier of the node's ranks).
    public let synchronize: () -> Void
}

/// Memory the ranks of a node share, which the communicator makes and reduces: a separate
/// protocol, so that `Communicator` stays communication. `MPICommunicator` provides it; a
/// communicator that does not (one process) has none, and the strategies that need it stand aside.
public protocol NodeMemory: Communicator {
    /// Collective: a zeroed buffer of `count` floats that `allReduceSum` sums faster than any
    /// other, or nil when there is none (one process; ranks that share no memory). Each call
    /// makes a new one, which lives until the communicator is finalized.
    func makeReductionBuffer(count: Int) -> ReductionBuffer?
    /// Collective: `arrays` flat arrays of `count` floats stored once per node, which every rank
    /// of the node reads and each rank writes in its own slice only; nil when there is no such
    /// memory (one process). Lives until the communicator is finalized.
    func makeSharedState(count: Int, arrays: Int) -> SharedState?
    /// Collective: one gradient sum per node that the node's ranks add into during backward,
    /// bucket by bucket (`NodeGradientSum`); nil where ranks cannot share memory.
    func makeNodeGradientSum(count: Int, buckets: [Range<Int>]) -> NodeGradientSum?
}

extension Communicator {
    /// The node-shared memory this communicator makes, or nil.
    public var nodeMemory: (any NodeMemory)? { self as? any NodeMemory }
    public func startSum(_ buffer: UnsafeMutableBufferPointer<Float>) { allReduceSum(buffer) }
    public func progressSums() {}
    public var reductionPhaseSeconds: (wait: Double, node: Double, across: Double)? { nil }
    public func completeSums() {}

    public func allReduceSumCheckingFinite(_ buffer: UnsafeMutableBufferPointer<Float>) -> Bool {
        allReduceSum(buffer)
        return cohort_all_finite(buffer.baseAddress, buffer.count) != 0
    }

    public var isRoot: Bool { rank == 0 }

    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) {
        broadcast(UnsafeMutableRawBufferPointer(buffer), root: root)
    }

    public func broadcast(_ values: [Double], root: Int) -> [Double] {
        var copy = values
        copy.withUnsafeMutableBytes { broadcast($0, root: root) }
        return copy
    }
}

/// One process, no MPI: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var ranksOnNode: Int { 1 }
    public var compressesAcrossNodes = false
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {}
    public func allReduceSum(_ values: [Double]) -> [Double] { values }
    public func allReduceMax(_ values: [Double]) -> [Double] { values }
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {}
    public func gather(_ words: [UInt64], root: Int) -> [[UInt64]] { [words] }
    public func barrier() {}
    public func abort(code: Int32) -> Never { exit(code) }
    public func finalize() {}
}

#if canImport(Glibc)
import Glibc
#endif
