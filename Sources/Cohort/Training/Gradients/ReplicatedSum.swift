/// Every rank holds its own gradient buffer, summed in place by one `MPI_Allreduce`: what
/// applies when nothing faster does.
final class ReplicatedSum: GradientSynchronization {
    let run: GradientRun
    var description: String { "MPI_Allreduce" }

    init(run: GradientRun) { self.run = run }
    static func make(_ run: GradientRun) -> ReplicatedSum? { ReplicatedSum(run: run) }

    func finish() -> Bool { run.communicator.allReduceSumCheckingFinite(run.model.parameters.gradients) }
}
