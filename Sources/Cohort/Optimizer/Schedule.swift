import Foundation

/// Learning rate as a function of the optimizer step t (0-based: step t uses rate(t)), for a
/// run of T = total steps. Every rank computes it from t alone, so all agree without talking.
///   constant           lr
///   step               lr · γ^⌊t / step_size⌋
///   cosine             lr_min + (lr − lr_min) · (1 + cos(π·t/T)) / 2
///   linear_warmup      lr · t / w for t < w, then lr · max(0, (T − t) / (T − w))
///                      (Hugging Face's get_linear_schedule_with_warmup)
///   warmup_cosine      lr · t / w for t < w, then cosine from lr to lr_min over the remaining T − w
public struct LearningRateSchedule: Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case constant, step, cosine
        case linearWarmup = "linear_warmup"
        case warmupCosine = "warmup_cosine"
    }

    public var kind: Kind
    public var baseRate: Float
    public var warmupSteps: Int
    public var stepSize: Int
    public var gamma: Float
    public var minimumRate: Float
    /// The T of the schedule when it is not the run's own step count (`schedule.total_steps`:
    /// a recipe of 2,000 steps stopped by `max_steps` inside a longer epoch).
    public var totalSteps: Int? = nil

    public init(kind: Kind = .constant, baseRate: Float, warmupSteps: Int = 0, stepSize: Int = 1, gamma: Float = 0.1, minimumRate: Float = 0) {
        (self.kind, self.baseRate, self.warmupSteps, self.stepSize, self.gamma, self.minimumRate) =
            (kind, baseRate, warmupSteps, stepSize, gamma, minimumRate)
    }

    /// A warning when the run ends before the schedule does (its rate never reaching the end of
    /// its curve) or its warm-up outlasts the run, naming both numbers; nil when they fit.
    /// `runSteps` is what the run will take (epochs, or `max_steps` when sooner), `epochSteps`
    /// the T the schedule uses when `total_steps` is not set.
    public func warning(runSteps: Int, epochSteps: Int, keys: String) -> String? {
        guard kind != .constant && kind != .step else { return nil }
        let total = totalSteps ?? epochSteps
        if (kind == .linearWarmup || kind == .warmupCosine) && warmupSteps >= runSteps {
            return "warning: the schedule's warm-up of \(warmupSteps) steps is not over when the run ends after \(runSteps) steps (\(keys))"
        }
        guard runSteps < total else { return nil }
        let last = rate(step: runSteps - 1, totalSteps: total)
        let end = kind == .linearWarmup ? 0 : minimumRate
        return "warning: the schedule runs over \(total) steps (\(totalSteps == nil ? "the epochs' steps" : "schedule.total_steps")) "
            + "but the run ends after \(runSteps) (\(keys)): its last learning rate is \(last), not \(end)"
    }

    public func rate(step t: Int, totalSteps: Int) -> Float {
        let total = Double(max(totalSteps, 1))
        let lr = Double(baseRate)
        let floor = Double(minimumRate)
        func cosine(_ progress: Double) -> Double { floor + (lr - floor) * (1 + cos(Double.pi * min(progress, 1))) / 2 }
        switch kind {
        case .constant:
            return baseRate
        case .step:
            return Float(lr * pow(Double(gamma), Double(t / max(stepSize, 1))))
        case .cosine:
            return Float(cosine(Double(t) / total))
        case .linearWarmup:
            if t < warmupSteps { return Float(lr * Double(t) / Double(max(warmupSteps, 1))) }
            return Float(lr * max(0, (total - Double(t)) / max(1, total - Double(warmupSteps))))
        case .warmupCosine:
            if t < warmupSteps { return Float(lr * Double(t) / Double(max(warmupSteps, 1))) }
            return Float(cosine(Double(t - warmupSteps) / max(1, total - Double(warmupSteps))))
        }
    }
}
