import CCohort
import Foundation

/// Stop signals (SIGTERM, SIGUSR1) become a request the loop honours at the next step boundary.
/// SIGTERM/SIGUSR1 set a flag that the ranks agree on at step boundaries (and after start-up).
public func installStopSignalHandlers() { cohort_install_stop_signals() }
public func stopRequested() -> Bool { cohort_stop_requested() != 0 }

/// Test-only fault injection, switched on by COHORT_FAULT=KIND:RANK:STEP, so the tests can show
/// that failures end the job instead of hanging it:
///   error:R:S       rank R throws an I/O-like error before the all-reduce of step S (1-based)
///   nan:R:S         rank R's gradient gets a NaN at step S
///   kill_checkpoint:0:S  rank 0 is SIGKILLed halfway through writing the checkpoint of step S
///   startup_signal:R:0   rank R sends itself SIGTERM while the trainer is being set up
///   wrong_blas:R:1  rank R's check of its BLAS kernels sees one element of a product off
///   file_limit:0:S  rank 0's files may not grow past half the checkpoint of step S (RLIMIT_FSIZE):
///                   its write fails midway with EFBIG, as on a full disk or an exhausted quota
///   freeze:R:S      rank R stops itself (SIGSTOP) as it starts the update of step S, after the
///                   step's agreement and before the node's barrier that follows the update
///   freeze_startup:R:0  rank R stops itself (SIGSTOP) as the initial synchronization begins
///   lost:R:S        rank R dies (SIGKILL) before the all-reduce of step S, as on a node lost;
///                   a relaunch that resumes before step S with a rank R loses it again
struct FaultInjection {
    enum Kind: String {
        case error, nan, killCheckpoint = "kill_checkpoint", startupSignal = "startup_signal", wrongBLAS = "wrong_blas", freeze,
             fileLimit = "file_limit", lost, freezeStartup = "freeze_startup"
    }
    let kind: Kind
    let rank: Int
    let step: Int
    private(set) var armed = true

    static func fromEnvironment() -> FaultInjection? {
        guard let text = ProcessInfo.processInfo.environment["COHORT_FAULT"] else { return nil }
        let parts = text.split(separator: ":").map(String.init)
        guard parts.count == 3, let kind = Kind(rawValue: parts[0]), let rank = Int(parts[1]), let step = Int(parts[2]) else {
            return nil
        }
        return FaultInjection(kind: kind, rank: rank, step: step)
    }

    /// Called with the 0-based number of steps already taken.
    func inject(at stepsTaken: Int, rank: Int, gradients: UnsafeMutableBufferPointer<Float>) throws {
        guard rank == self.rank, stepsTaken + 1 == step else { return }
        switch kind {
        case .error: throw CohortError("injected fault at step \(step) (COHORT_FAULT)")
        case .nan: if gradients.count > 0 { gradients[0] = .nan }
        case .lost: kill(getpid(), SIGKILL)
        case .killCheckpoint, .startupSignal, .wrongBLAS, .freeze, .fileLimit, .freezeStartup: break
        }
    }

    /// Raises SIGTERM in the middle of set-up, on the chosen rank.
    func signalDuringStartup(rank: Int) {
        if kind == .startupSignal && rank == self.rank { raise(SIGTERM) }
    }

    /// Limits the size of the files this process writes from the checkpoint of the chosen step on.
    func limitFileSize(before stepsTaken: Int, bytes: Int) {
        guard kind == .fileLimit, stepsTaken == step else { return }
        var limit = rlimit(rlim_cur: rlim_t(bytes), rlim_max: rlim_t.max)
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit)
    }

    /// Stops this process as a frozen node would, at the update of the chosen step.
    func freezeDuringUpdate(at stepsTaken: Int, rank: Int) {
        if kind == .freeze && rank == self.rank && stepsTaken + 1 == step { raise(SIGSTOP) }
    }

    /// Stops this process as a frozen node would, before the first collective of the run.
    func freezeDuringStartup(rank: Int) {
        if kind == .freezeStartup && rank == self.rank { raise(SIGSTOP) }
    }

    /// Whether this rank's kernel check is to see a wrong product.
    func corruptsKernelCheck(rank: Int) -> Bool { kind == .wrongBLAS && rank == self.rank }

    /// Whether rank 0 dies while writing the checkpoint taken after `stepsTaken` steps.
    func crashesDuringCheckpoint(after stepsTaken: Int) -> Bool { kind == .killCheckpoint && stepsTaken == step }
}
