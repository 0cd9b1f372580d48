import Foundation

/// Where a rank's steps spent their time, for the run's closing lines and the benchmarks.
public struct StepTimings: Sendable {
    /// Forward, loss and backward of this rank's slice (seconds over the run).
    public internal(set) var compute = 0.0
    /// The clip and the optimizer's update.
    public internal(set) var update = 0.0
    /// The gradient sum after backward; it includes waiting for slower ranks unless
    /// `training.timing_barrier` puts that wait in `barrier`.
    public internal(set) var allReduce = 0.0
    public internal(set) var allReduceCalls = 0
    /// Each step's gradient sum, in seconds, when `training.timing_barrier` is on.
    public internal(set) var allReduceTimes: [Double] = []
    public internal(set) var barrier = 0.0
    /// Seconds from process start to the start of the first step (the set-up before it).
    public internal(set) var firstStepStartedAt: Double?
    /// Seconds from process start to the first step's gradient sum.
    public internal(set) var firstStepAt: Double?

    /// Adds the seconds `body` takes to the figure at `keyPath`.
    mutating func time<T>(_ keyPath: WritableKeyPath<StepTimings, Double>, _ body: () throws -> T) rethrows -> T {
        let started = monotonicNanoseconds()
        defer { self[keyPath: keyPath] += seconds(since: started) }
        return try body()
    }
}

/// How much memory the ranks hold (collectives: every rank calls them).
public enum MemoryUse {
    /// Peak resident memory of every rank, in bytes.
    public static func peakResident(_ communicator: Communicator) -> [Double] {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        var all = [Double](repeating: 0, count: communicator.size)
        all[communicator.rank] = Double(usage.ru_maxrss) * 1024
        return communicator.allReduceSum(all)
    }

    /// Memory per node (PSS: shared pages counted once) of `regions` (the model state:
    /// parameters, gradients, optimizer state) and of the whole processes, in bytes.
    public static func perNode(holding regions: [UnsafeRawBufferPointer], _ communicator: Communicator) -> (modelState: Double, processes: Double)? {
        let mine = [ProportionalMemory.resident(holding: regions) ?? .nan, ProportionalMemory.process() ?? .nan,
                    1 / Double(communicator.ranksOnNode)]
        let sums = communicator.allReduceSum(mine)
        guard sums[0].isFinite, sums[1].isFinite else { return nil }
        return (sums[0] / sums[2], sums[1] / sums[2])
    }
}
