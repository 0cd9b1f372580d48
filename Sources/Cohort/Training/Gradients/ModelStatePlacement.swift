/// Where the parameters and the optimizer's state live: in every rank (`ReplicatedState`) or
/// once per node, each rank updating its own slice (`NodeSharedModelState`,
/// `training.state: node_shared`). Chosen once, beside the gradient strategy, in
/// `Trainer.synchronizeInitialState`; the trainer asks it which slice this rank writes and
/// publishes the node's writes through it.
protocol ModelStatePlacement: AnyObject {
    /// The indices of the flat buffers this rank writes (nil: all of them).
    var ownSlice: Range<Int>? { get }
    /// Makes every rank's writes visible to the node's other ranks (after the update, a restore).
    func publish()
    /// For the run's first line, or nil.
    var description: String? { get }
}

/// Every rank holds all of the model state.
final class ReplicatedState: ModelStatePlacement {
    var ownSlice: Range<Int>? { nil }
    func publish() {}
    var description: String? { nil }
}

/// The parameters and the optimizer's state once per node, in memory the node's ranks share;
/// each rank updates its own slice, then the node's ranks meet before any reads them again.
final class NodeSharedModelState: ModelStatePlacement {
    let shared: SharedState

    private init(shared: SharedState) { self.shared = shared }

    /// The node-shared placement for this run, or nil (another state, one process). Collective.
    static func make(_ run: GradientRun, optimizer: Optimizer) -> NodeSharedModelState? {
        let parameters = run.model.parameters
        guard run.training.state == .nodeShared,
              let shared = run.communicator.nodeMemory?.makeSharedState(count: parameters.count, arrays: 1 + optimizer.slots.count) else {
            return nil
        }
        parameters.placeValues(in: shared.arrays[0], copying: shared.ownSlice)
        optimizer.share(Array(shared.arrays.dropFirst()), updating: shared.ownSlice)
        shared.synchronize()
        return NodeSharedModelState(shared: shared)
    }

    var ownSlice: Range<Int>? { shared.ownSlice }
    func publish() { shared.synchronize() }
    var description: String? { "model state once per node (\(shared.ranksPerNode) ranks, each updating a slice)" }
}
