import CCohort
import Foundation

/// MPI_COMM_WORLD. Initialized once per process (`MPI_Init_thread`, funneled: only the main
/// thread calls MPI) and finalized by `finalize()` at a clean exit.
public final class MPICommunicator: NodeMemory {
    public let rank: Int
    public let size: Int
    public let ranksOnNode: Int
    private let world: MPI_Comm
    private var reductions: [NodeSharedReduction] = []
    private var states: [NodeSharedState] = []
    private var gradientSums: [NodeGradientSum] = []
    public var compressesAcrossNodes = false {
        didSet {
            reductions.forEach { $0.compressesAcrossNodes = compressesAcrossNodes }
            gradientSums.forEach { $0.compressesAcrossNodes = compressesAcrossNodes }
        }
    }
    /// Whether every rank of the job is alone on its node (so the whole sum crosses between nodes).
    private let everyRankAlone: Bool
    private struct PendingSum {
        var request: MPI_Request?
        let buffer: UnsafeMutableBufferPointer<Float>
        let compressed: Bool
    }
    private var pending: [PendingSum] = []

    public init() {
        Self.chooseTransportWithoutFabric()
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        world = cohort_mpi_comm_world()
        var rank: Int32 = 0
        var size: Int32 = 0
        MPI_Comm_rank(world, &rank)
        MPI_Comm_size(world, &size)
        self.rank = Int(rank)
        self.size = Int(size)
        let split = splitByNode(world)
        var node: MPI_Comm? = split.node
        MPI_Comm_free(&node)
        let nodeSize = split.size
        ranksOnNode = Int(nodeSize)
        var largestNode = nodeSize
        MPI_Allreduce(cohort_mpi_in_place(), &largestNode, 1, cohort_mpi_int32(), cohort_mpi_max(), world)
        everyRankAlone = largestNode == 1
    }

    /// Whether an MPI launcher started this process: mpirun or mpiexec (Open MPI's or Hydra's), or
    /// srun with PMIx or PMI2. They name its rank in the environment.
    public static var launched: Bool {
        let environment = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { environment[$0] != nil }
    }

    /// The world of a command that also runs as one process: MPI's under a launcher; otherwise one
    /// process without MPI. Open MPI 4 starts a process of its own (a singleton) by forking a daemon
    /// that makes a session directory under TMPDIR, and two started at the same instant race to make
    /// it: one ends in MPI_Init with "Unable to start a daemon on the local node" (open-mpi/ompi#8510).
    public static func orSingleProcess() -> Communicator {
        launched ? MPICommunicator() : SingleProcess()
    }

    /// Without a high-speed fabric OpenMPI can only use its ob1 layer (shared memory, TCP), but
    /// it first initializes the cm layer, whose PSM and PSM2 transports spend 0.1 s each looking
    /// for their adapters: 0.24 s of a 0.27 s MPI_Init on this machine. So where no fabric device
    /// is present (InfiniBand/RoCE/EFA, Omni-Path, TrueScale, Slingshot) and nobody chose a
    /// layer (`OMPI_MCA_pml`, `mpirun --mca pml`, or an include list in a parameter file),
    /// name ob1 before MPI_Init. `COHORT_MPI_DEFAULTS=0` turns this off.
    static func chooseTransportWithoutFabric() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OMPI_MCA_pml"] == nil, environment["COHORT_MPI_DEFAULTS"] != "0" else { return }
        let files = FileManager.default
        let fabric = ["/sys/class/infiniband", "/sys/class/cxi"].contains { !((try? files.contentsOfDirectory(atPath: $0)) ?? []).isEmpty }
            || ((try? files.contentsOfDirectory(atPath: "/dev")) ?? []).contains { $0.hasPrefix("hfi1") || $0.hasPrefix("ipath") }
        let parameterFiles = ["/etc/openmpi/openmpi-mca-params.conf", "\(environment["HOME"] ?? "")/.openmpi/mca-params.conf"]
        let includeList = parameterFiles.contains { path in
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").contains { line in
                let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                return parts.count == 2 && parts[0] == "pml" && !parts[1].hasPrefix("^")
            }
        }
        if !fabric && !includeList { setenv("OMPI_MCA_pml", "ob1", 1) }
    }

    public func finalize() {
        for reduction in reductions { reduction.free() }
        for state in states { state.free() }
        for sum in gradientSums { sum.free() }
        (reductions, states, gradientSums) = ([], [], [])
        MPI_Finalize()
    }

    public func makeReductionBuffer(count: Int) -> ReductionBuffer? {
        guard size > 1, let reduction = NodeSharedReduction.make(world: world, count: count) else { return nil }
        reduction.compressesAcrossNodes = compressesAcrossNodes
        reductions.append(reduction)
        return ReductionBuffer(buffer: reduction.gradients, description: reduction.description)
    }

    public func makeSharedState(count: Int, arrays: Int) -> SharedState? {
        guard size > 1, !everyRankAlone, let state = NodeSharedState.make(world: world, count: count, arrays: arrays) else { return nil }
        states.append(state)
        return SharedState(arrays: state.arrays, ownSlice: state.ownSlice, ranksPerNode: state.ranksPerNode, synchronize: state.synchronize)
    }

    public func makeNodeGradientSum(count: Int, buckets: [Range<Int>]) -> NodeGradientSum? {
        guard size > 1, !everyRankAlone, let sum = NodeGradientSum.make(world: world, count: count, buckets: buckets) else { return nil }
        sum.compressesAcrossNodes = compressesAcrossNodes
        gradientSums.append(sum)
        return sum
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {
        _ = sum(buffer)
    }

    public func allReduceSumCheckingFinite(_ buffer: UnsafeMutableBufferPointer<Float>) -> Bool {
        sum(buffer) ?? (cohort_all_finite(buffer.baseAddress, buffer.count) != 0)
    }

    /// Sums `buffer` over the ranks; for a reduction buffer, whether this rank's slice of the sum is finite.
    private func sum(_ buffer: UnsafeMutableBufferPointer<Float>) -> Bool? {
        guard size > 1, buffer.count > 0 else { return nil }
        if let reduction = reductions.first(where: { $0.gradients.baseAddress == buffer.baseAddress && $0.gradients.count == buffer.count }) {
            return reduction.allReduceSum()
        }
        if compressesAcrossNodes && everyRankAlone {
            _ = cohort_allreduce_bf16(buffer.baseAddress, buffer.count, world)
            return nil
        }
        MPI_Allreduce(cohort_mpi_in_place(), buffer.baseAddress, Int32(buffer.count), cohort_mpi_float(), cohort_mpi_sum(), world)
        return nil
    }

    public var reductionPhaseSeconds: (wait: Double, node: Double, across: Double)? {
        reductions.first?.phaseSeconds ?? gradientSums.first?.phaseSeconds
    }

    public func startSum(_ buffer: UnsafeMutableBufferPointer<Float>) {
        guard size > 1, buffer.count > 0 else { return }
        // A compressed sum runs as a reduce-scatter and an all-gather (`cohort_allreduce_bf16`),
        // which cannot start before its predecessor ends: it is made, in order, at completion.
        var sum = PendingSum(request: cohort_mpi_request_null(), buffer: buffer, compressed: compressesAcrossNodes && everyRankAlone)
        if !sum.compressed {
            MPI_Iallreduce(cohort_mpi_in_place(), buffer.baseAddress, Int32(buffer.count), cohort_mpi_float(), cohort_mpi_sum(),
                           world, &sum.request)
        }
        pending.append(sum)
    }

    public func progressSums() {
        for index in pending.indices where pending[index].request != cohort_mpi_request_null() {
            var done: Int32 = 0
            MPI_Test(&pending[index].request, &done, cohort_mpi_status_ignore())
        }
    }

    public func completeSums() {
        for index in pending.indices {
            if pending[index].compressed {
                _ = cohort_allreduce_bf16(pending[index].buffer.baseAddress, pending[index].buffer.count, world)
            } else {
                MPI_Wait(&pending[index].request, cohort_mpi_status_ignore())
            }
        }
        pending = []
    }

    public func allReduceSum(_ values: [Double]) -> [Double] { allReduce(values, cohort_mpi_sum()) }
    public func allReduceMax(_ values: [Double]) -> [Double] { allReduce(values, cohort_mpi_max()) }

    private func allReduce(_ values: [Double], _ operation: MPI_Op) -> [Double] {
        guard size > 1, !values.isEmpty else { return values }
        var result = values
        result.withUnsafeMutableBufferPointer { buffer in
            _ = MPI_Allreduce(cohort_mpi_in_place(), buffer.baseAddress, Int32(buffer.count), cohort_mpi_double(), operation, world)
        }
        return result
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        guard size > 1, buffer.count > 0 else { return }
        MPI_Bcast(buffer.baseAddress, Int32(buffer.count), cohort_mpi_byte(), Int32(root), world)
    }

    public func gather(_ words: [UInt64], root: Int) -> [[UInt64]] {
        guard size > 1 else { return [words] }
        var received = [UInt64](repeating: 0, count: rank == root ? words.count * size : 0)
        words.withUnsafeBufferPointer { send in
            received.withUnsafeMutableBufferPointer { receive in
                _ = MPI_Gather(send.baseAddress, Int32(words.count), cohort_mpi_uint64(),
                               receive.baseAddress, Int32(words.count), cohort_mpi_uint64(), Int32(root), world)
            }
        }
        guard rank == root else { return [] }
        return (0..<size).map { Array(received[($0 * words.count)..<(($0 + 1) * words.count)]) }
    }

    public func barrier() { MPI_Barrier(world) }

    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }
}

#if canImport(Glibc)
import Glibc
#endif
