#if canImport(Glibc)
import Glibc
#endif
import CCohort

/// One copy per node of the model state (parameters and optimizer moments), in an
/// `MPI_Win_allocate_shared` window that every rank of the node maps: ZeRO's partitioned
/// optimizer state, with a node's shared memory in place of gathers.
///
/// The window holds `arrays` flat arrays of `count` floats, one after another. Each rank owns
/// one cache-line-aligned slice of the index range (`NodeSharedReduction.slices`, in node-rank
/// order): it alone writes that slice of every array (the optimizer update), and
/// `synchronize()` (a node barrier between memory syncs) publishes the writes before any rank
/// reads the parameters again. Across nodes nothing is exchanged: every node applies the same
/// summed gradients to its own copy, as replicas do.
final class NodeSharedState {
    let arrays: [UnsafeMutableBufferPointer<Float>]
    /// The indices this rank updates.
    let ownSlice: Range<Int>
    let ranksPerNode: Int
    private let node: MPI_Comm
    private let window: MPI_Win

    /// Collective over `world`; nil on every rank alike when some node could not allocate the window.
    static func make(world: MPI_Comm, count: Int, arrays: Int) -> NodeSharedState? {
        guard count > 0, arrays > 0 else { return nil }
        let (node, nodeSize, nodeRank) = splitByNode(world)
        var nodeHandle: MPI_Comm? = node

        // Node rank 0 allocates the whole window; the others map it.
        guard let (window, start) = allocateNodeWindow(world: world, node: node, nodeRank: nodeRank,
                                                       bytes: count * arrays * MemoryLayout<Float>.stride) else {
            MPI_Comm_free(&nodeHandle)
            return nil
        }
        let floats = start.assumingMemoryBound(to: Float.self)
        return NodeSharedState(arrays: (0..<arrays).map { UnsafeMutableBufferPointer(start: floats + $0 * count, count: count) },
                               ownSlice: NodeSharedReduction.slices(count: count, parts: Int(nodeSize))[Int(nodeRank)],
                               ranksPerNode: Int(nodeSize), node: node, window: window)
    }

    private init(arrays: [UnsafeMutableBufferPointer<Float>], ownSlice: Range<Int>, ranksPerNode: Int, node: MPI_Comm, window: MPI_Win) {
        (self.arrays, self.ownSlice, self.ranksPerNode, self.node, self.window) = (arrays, ownSlice, ranksPerNode, node, window)
    }

    /// Every rank's writes to its slice are visible to every rank of the node after this returns.
    func synchronize() {
        MPI_Win_sync(window)
        MPI_Barrier(node)
        MPI_Win_sync(window)
    }

    /// Collective over the world, before `MPI_Finalize`.
    func free() {
        MPI_Win_unlock_all(window)
        var handles: (MPI_Win?, MPI_Comm?) = (window, node)
        MPI_Win_free(&handles.0)
        MPI_Comm_free(&handles.1)
    }
}
