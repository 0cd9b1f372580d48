#if canImport(Glibc)
import Glibc
#endif
import CCohort

/// A gradient buffer that the ranks of a node sum through memory they all map: the hierarchical
/// all-reduce of NCCL and Horovod, with MPI shared-memory windows for the node's part.
///
/// Each rank's gradients live in its segment of an `MPI_Win_allocate_shared` window, split into
/// one cache-line-aligned slice per rank of the node. `allReduceSum()`, between two barriers:
///  1. each rank sums its slice straight out of every segment of its node, in node-rank order,
///     so the bits do not depend on which rank did the sum;
///  2. across nodes, the ranks holding the same slice all-reduce it with `MPI_Allreduce`;
///  3. each rank writes its slice's sum into every segment of its node.
/// Each gradient byte crosses between cores once each way and nothing goes through MPI's
/// buffers, where `MPI_Allreduce` over shared memory copies the whole buffer through them, sums,
/// and copies the sum back.
/// Made only when every node has the same number of ranks, more than one.
final class NodeSharedReduction {
    let gradients: UnsafeMutableBufferPointer<Float>
    /// How the sum is made, for the run's first line.
    let description: String
    private let node: MPI_Comm
    private let across: MPI_Comm?
    private let window: MPI_Win
    private let nodeRank: Int
    /// Every node rank's segment, in node-rank order, mapped into this process.
    private let segments: [UnsafeMutablePointer<Float>]
    private let slices: [Range<Int>]
    /// This rank's slice in every segment: the sources of step 1, and where its sum goes.
    private let sources: [UnsafePointer<Float>?]
    private let ownSlice: [UnsafeMutablePointer<Float>?]
    private let peerSlices: [UnsafeMutablePointer<Float>?]
    private let everySlice: [UnsafeMutablePointer<Float>?]
    /// Seconds spent so far in each phase: waiting for the node's ranks to arrive, summing
    /// within the node (and handing the sums back), and the all-reduce across nodes.
    private(set) var phaseSeconds: (wait: Double, node: Double, across: Double) = (0, 0, 0)
    /// The across-nodes step sends bfloat16 (`training.compress: bf16`).
    var compressesAcrossNodes = false

    /// Collective over `world`; nil (on every rank alike) where the ranks cannot share memory.
    static func make(world: MPI_Comm, count: Int) -> NodeSharedReduction? {
        guard count > 0 else { return nil }
        let (node, nodeSize, nodeRank) = splitByNode(world)
        var nodeHandle: MPI_Comm? = node
        guard everyNodeHasSeveralRanks(world, nodeSize: nodeSize) else {
            MPI_Comm_free(&nodeHandle)
            return nil
        }
        var (acrossHandle, nodes) = splitAcrossNodes(world, nodeRank: nodeRank)

        // Each segment on its own pages (close to the rank that writes it).
        var info: MPI_Info? = cohort_mpi_info_null()
        MPI_Info_create(&info)
        MPI_Info_set(info, "alloc_shared_noncontig", "true")
        MPI_Comm_set_errhandler(node, cohort_mpi_errors_return())
        var base: UnsafeMutableRawPointer?
        var windowHandle: MPI_Win? = cohort_mpi_win_null()
        let status = MPI_Win_allocate_shared(MPI_Aint(count * MemoryLayout<Float>.stride), Int32(MemoryLayout<Float>.stride),
                                             info, node, &base, &windowHandle)
        MPI_Info_free(&info)
        MPI_Comm_set_errhandler(node, cohort_mpi_errors_are_fatal())
        var failed: Int32 = status == MPI_SUCCESS && base != nil && windowHandle != nil ? 0 : 1
        MPI_Allreduce(cohort_mpi_in_place(), &failed, 1, cohort_mpi_int32(), cohort_mpi_max(), world)
        guard failed == 0, let window = windowHandle else {
            if status == MPI_SUCCESS { MPI_Win_free(&windowHandle) }
            if acrossHandle != nil { MPI_Comm_free(&acrossHandle) }
            MPI_Comm_free(&nodeHandle)
            return nil
        }
        var segments: [UnsafeMutablePointer<Float>] = []
        for peer in 0..<nodeSize {
            var bytes: MPI_Aint = 0
            var unit: Int32 = 0
            var address: UnsafeMutableRawPointer?
            MPI_Win_shared_query(window, peer, &bytes, &unit, &address)
            guard let address else { preconditionFailure("MPI_Win_shared_query gave no segment for node rank \(peer)") }
            segments.append(address.assumingMemoryBound(to: Float.self))
        }
        // Passive-target epoch for the window's lifetime; MPI_Win_sync orders memory around barriers.
        MPI_Win_lock_all(MPI_MODE_NOCHECK, window)
        return NodeSharedReduction(count: count, node: node, across: acrossHandle, window: window,
                                   nodeRank: Int(nodeRank), segments: segments, nodes: nodes)
    }

    private init(count: Int, node: MPI_Comm, across: MPI_Comm?, window: MPI_Win, nodeRank: Int,
                 segments: [UnsafeMutablePointer<Float>], nodes: Int) {
        self.node = node
        self.across = across
        self.window = window
        self.nodeRank = nodeRank
        self.segments = segments
        gradients = UnsafeMutableBufferPointer(start: segments[nodeRank], count: count)
        gradients.initialize(repeating: 0)
        slices = Self.slices(count: count, parts: segments.count)
        let mine = slices[nodeRank]
        sources = segments.map { UnsafePointer($0 + mine.lowerBound) }
        ownSlice = [segments[nodeRank] + mine.lowerBound]
        peerSlices = segments.indices.filter { $0 != nodeRank }.map { segments[$0] + mine.lowerBound }
        everySlice = ownSlice + peerSlices
        description = "node shared memory, \(segments.count) ranks per node"
            + (nodes > 1 ? " × \(nodes) nodes, MPI_Allreduce across nodes" : "")
    }

    /// `parts` contiguous slices covering 0..<count, each starting on a 64-byte line.
    static func slices(count: Int, parts: Int) -> [Range<Int>] {
        let line = 64 / MemoryLayout<Float>.stride
        let bounds = (0...parts).map { part in part == parts ? count : count * part / parts / line * line }
        return (0..<parts).map { bounds[$0]..<bounds[$0 + 1] }
    }

    /// Returns whether this rank's slice of the sum is finite: the slices of the node's ranks
    /// cover the buffer.
    func allReduceSum() -> Bool {
        let arrived = monotonicNanoseconds()
        synchronizeNode()  // every rank of the node has written its gradients
        let summing = monotonicNanoseconds()
        phaseSeconds.wait += Double(summing - arrived) / 1e9
        defer { phaseSeconds.node += seconds(since: summing) }
        let mine = slices[nodeRank]
        let finite: Bool
        if let across {
            _ = sum(into: ownSlice)
            let slice = gradients.baseAddress! + mine.lowerBound
            let crossing = monotonicNanoseconds()
            if compressesAcrossNodes {
                _ = cohort_allreduce_bf16(slice, mine.count, across)
            } else {
                MPI_Allreduce(cohort_mpi_in_place(), slice, Int32(mine.count), cohort_mpi_float(), cohort_mpi_sum(), across)
            }
            let crossed = seconds(since: crossing)
            (phaseSeconds.across, phaseSeconds.node) = (phaseSeconds.across + crossed, phaseSeconds.node - crossed)
            for case let target? in peerSlices { memcpy(target, slice, mine.count * MemoryLayout<Float>.stride) }
            finite = cohort_all_finite(slice, mine.count) != 0
        } else {
            finite = sum(into: everySlice)
        }
        synchronizeNode()  // every segment holds every sum; nobody touches another's segment until the next call
        return finite
    }

    /// This rank's slice summed over the node's segments, stored at `targets`; whether the sum is finite.
    private func sum(into targets: [UnsafeMutablePointer<Float>?]) -> Bool {
        sources.withUnsafeBufferPointer { sources in
            targets.withUnsafeBufferPointer { targets in
                cohort_sum_sources(sources.baseAddress, Int32(sources.count), targets.baseAddress, Int32(targets.count),
                                   slices[nodeRank].count) != 0
            }
        }
    }

    private func synchronizeNode() {
        MPI_Win_sync(window)
        MPI_Barrier(node)
        MPI_Win_sync(window)
    }

    /// Collective over the world, before `MPI_Finalize`.
    func free() {
        freeNodeWindow(window, node: node, across: across)
    }
}

/// The ranks of `world` that can share memory with this one (`MPI_Comm_split_type`), their
/// number and this rank's place among them. Collective over `world`; the caller frees `node`.
func splitByNode(_ world: MPI_Comm) -> (node: MPI_Comm, size: Int32, rank: Int32) {
    var worldRank: Int32 = 0
    MPI_Comm_rank(world, &worldRank)
    var handle: MPI_Comm?
    MPI_Comm_split_type(world, Int32(MPI_COMM_TYPE_SHARED), worldRank, cohort_mpi_info_null(), &handle)
    guard let node = handle else { preconditionFailure("MPI_Comm_split_type gave no communicator") }
    var size: Int32 = 0
    var rank: Int32 = 0
    MPI_Comm_size(node, &size)
    MPI_Comm_rank(node, &rank)
    return (node, size, rank)
}

/// Whether every node of `world` runs the same number of ranks, more than one (the smallest and
/// the largest node agree). Collective over `world`.
func everyNodeHasSeveralRanks(_ world: MPI_Comm, nodeSize: Int32) -> Bool {
    var sizes: [Int32] = [nodeSize, -nodeSize]
    MPI_Allreduce(cohort_mpi_in_place(), &sizes, 2, cohort_mpi_int32(), cohort_mpi_max(), world)
    return sizes[0] == -sizes[1] && nodeSize > 1
}

/// The ranks of `world` with this rank's node rank, one per node (they sum a slice across
/// nodes), and the number of nodes; no communicator when there is one node. Collective over `world`.
func splitAcrossNodes(_ world: MPI_Comm, nodeRank: Int32) -> (across: MPI_Comm?, nodes: Int) {
    var worldRank: Int32 = 0
    MPI_Comm_rank(world, &worldRank)
    var handle: MPI_Comm?
    MPI_Comm_split(world, nodeRank, worldRank, &handle)
    guard let across = handle else { preconditionFailure("MPI_Comm_split gave no communicator") }
    var nodes: Int32 = 0
    MPI_Comm_size(across, &nodes)
    if nodes == 1 {
        MPI_Comm_free(&handle)  // sets the handle to MPI_COMM_NULL, which is not nil
        return (nil, 1)
    }
    return (across, Int(nodes))
}

/// `bytes` of memory that node rank 0 allocates in an `MPI_Win_allocate_shared` window and every
/// rank of the node maps, in a passive-target epoch for the window's lifetime; nil on every rank
/// of `world` alike when some node could not allocate it. Collective over `world`.
func allocateNodeWindow(world: MPI_Comm, node: MPI_Comm, nodeRank: Int32, bytes: Int) -> (window: MPI_Win, start: UnsafeMutableRawPointer)? {
    MPI_Comm_set_errhandler(node, cohort_mpi_errors_return())
    var base: UnsafeMutableRawPointer?
    var windowHandle: MPI_Win? = cohort_mpi_win_null()
    let status = MPI_Win_allocate_shared(MPI_Aint(nodeRank == 0 ? bytes : 0), 1, cohort_mpi_info_null(), node, &base, &windowHandle)
    MPI_Comm_set_errhandler(node, cohort_mpi_errors_are_fatal())
    var start: UnsafeMutableRawPointer?
    if status == MPI_SUCCESS, let window = windowHandle {
        var size: MPI_Aint = 0
        var unit: Int32 = 0
        MPI_Win_shared_query(window, 0, &size, &unit, &start)
        if Int(size) < bytes { start = nil }
    }
    var failed: Int32 = start == nil ? 1 : 0
    MPI_Allreduce(cohort_mpi_in_place(), &failed, 1, cohort_mpi_int32(), cohort_mpi_max(), world)
    guard failed == 0, let window = windowHandle, let start else {
        if status == MPI_SUCCESS { MPI_Win_free(&windowHandle) }
        return nil
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, window)
    return (window, start)
}

/// Ends a node window's epoch and frees it with its communicators. Collective over the world.
func freeNodeWindow(_ window: MPI_Win, node: MPI_Comm, across: MPI_Comm?) {
    MPI_Win_unlock_all(window)
    var handles: (MPI_Win?, MPI_Comm?, MPI_Comm?) = (window, node, across)
    MPI_Win_free(&handles.0)
    MPI_Comm_free(&handles.1)
    if across != nil { MPI_Comm_free(&handles.2) }
}
