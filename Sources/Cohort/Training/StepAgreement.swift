/// What every rank agreed on at the end of a step, in one small all-reduce: a stop signal seen
/// by any rank, rank 0's clock for timed checkpoints, a non-finite loss, a non-finite gradient
/// sum in the part a rank checked, a wrong kernel, unreadable rows.
struct StepAgreement {
    /// A stop signal reached some rank: checkpoint and end.
    var stop: Bool
    /// Rank 0's clock says a timed checkpoint is due.
    var checkpointDue: Bool
    /// The step's gradients are finite everywhere (or `on_nonfinite: stop` did not apply): update.
    var updates: Bool

    /// What one rank saw in its step.
    struct Observations {
        var stopRequested: Bool
        var checkpointDue: Bool
        var loss: Double
        var finiteGradients: Bool
        var kernelFailure: String?
        var readFailure: String?
    }

    /// Agrees over the ranks; throws the agreed failure (said once, by the rank that saw it).
    /// `step` is the step's number from 1, for the lines.
    static func reach(_ seen: Observations, communicator: Communicator, onNonFinite: NonFinitePolicy, step: Int,
                      log: (String) -> Void) throws -> StepAgreement {
        let rank = Double(communicator.rank)
        let flags = communicator.allReduceMax([seen.stopRequested ? 1 : 0, seen.checkpointDue ? 1 : 0,
                                               seen.loss.isFinite ? -1 : rank, seen.finiteGradients ? 0 : 1,
                                               seen.kernelFailure == nil ? -1 : rank, seen.readFailure == nil ? -1 : rank])
        if flags[5] >= 0 {
            // Rows a rank could not read (its batch held zeros): that rank says which, once.
            throw AgreedFailure("rank \(Int(flags[5])): \(seen.readFailure ?? "")", reporter: Int(flags[5]) == communicator.rank)
        }
        if flags[4] >= 0 {
            throw AgreedFailure(seen.kernelFailure ?? "", reporter: seen.kernelFailure != nil && Int(flags[4]) == communicator.rank)
        }
        var agreement = StepAgreement(stop: flags[0] > 0, checkpointDue: flags[1] > 0, updates: true)
        guard flags[2] >= 0 || flags[3] != 0 else { return agreement }
        let what = flags[2] >= 0 ? "loss on rank \(Int(flags[2]))" : "gradient"
        switch onNonFinite {
        case .stop:
            throw AgreedFailure("step \(step): non-finite \(what); stopping (training.on_nonfinite: stop; skip_step skips such steps)",
                                reporter: communicator.isRoot)
        case .skipStep:
            if communicator.isRoot { log("step \(step): non-finite \(what); update skipped (training.on_nonfinite: skip_step)") }
            agreement.updates = false
            return agreement
        }
    }
}
