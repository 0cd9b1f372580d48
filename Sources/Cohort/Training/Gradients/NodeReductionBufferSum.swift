/// `training.all_reduce: auto` where the node's ranks share memory: the gradients live in a
/// buffer the communicator sums fastest (a shared-memory window: the node's ranks add there,
/// then one rank per node all-reduces across nodes). Bitwise the replicated sum's result.
final class NodeReductionBufferSum: GradientSynchronization {
    let run: GradientRun
    let description: String

    private init(run: GradientRun, description: String) { (self.run, self.description) = (run, description) }

    static func make(_ run: GradientRun) -> NodeReductionBufferSum? {
        guard run.training.allReduce == .auto,
              let shared = run.communicator.nodeMemory?.makeReductionBuffer(count: run.model.parameters.count) else { return nil }
        run.model.parameters.placeGradients(in: shared.buffer)
        return NodeReductionBufferSum(run: run, description: shared.description)
    }

    func finish() -> Bool { run.communicator.allReduceSumCheckingFinite(run.model.parameters.gradients) }
}
