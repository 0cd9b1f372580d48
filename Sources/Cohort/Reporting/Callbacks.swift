import Foundation

/// The epoch-end callbacks Keras users expect, as plain state machines over a metric sequence
/// (so tests can script them), whose state is part of the checkpoint.

/// Early stopping: stop when `monitor` has not improved by more than `minDelta` for `patience`
/// epochs; optionally restore the weights of the best epoch.
public struct EarlyStopping: Equatable, Sendable {
    public var monitor: Metric
    public var patience: Int
    public var minDelta: Double
    public var restoreBestWeights: Bool
    public private(set) var best: Double?
    public private(set) var bestEpoch = 0
    public private(set) var wait = 0

    public init(monitor: Metric, patience: Int, minDelta: Double = 0, restoreBestWeights: Bool = false) {
        (self.monitor, self.patience, self.minDelta, self.restoreBestWeights) = (monitor, patience, minDelta, restoreBestWeights)
    }

    /// Feeds one epoch's value; returns whether training should stop now.
    public mutating func update(_ value: Double, epoch: Int) -> (stop: Bool, improved: Bool) {
        if isImprovement(value, over: best, by: minDelta, lowerIsBetter: monitor.lowerIsBetter) {
            best = value
            bestEpoch = epoch
            wait = 0
            return (false, true)
        }
        wait += 1
        return (wait >= patience, false)
    }

    var state: [Double] { [best ?? .nan, Double(bestEpoch), Double(wait)] }
    mutating func restore(_ words: [Double]) {
        guard words.count == 3 else { return }
        best = words[0].isNaN ? nil : words[0]
        bestEpoch = Int(words[1])
        wait = Int(words[2])
    }
}

/// Reduce the learning rate on a plateau: after `patience` epochs without improvement of
/// `monitor`, multiply the rate by `factor` (not below `minimumRate`), then wait `cooldown` epochs.
public struct ReduceOnPlateau: Equatable, Sendable {
    public var monitor: Metric
    public var factor: Double
    public var patience: Int
    public var minDelta: Double
    public var cooldown: Int
    public var minimumRate: Double
    /// The multiplier applied on top of the schedule.
    public private(set) var scale: Double = 1
    public private(set) var best: Double?
    public private(set) var wait = 0
    public private(set) var cooldownLeft = 0

    public init(monitor: Metric, factor: Double, patience: Int, minDelta: Double = 0, cooldown: Int = 0, minimumRate: Double = 0) {
        (self.monitor, self.factor, self.patience, self.minDelta, self.cooldown, self.minimumRate) =
            (monitor, factor, patience, minDelta, cooldown, minimumRate)
    }

    /// Feeds one epoch's value; returns the new scale when it changed.
    public mutating func update(_ value: Double, baseRate: Double) -> Double? {
        if cooldownLeft > 0 { cooldownLeft -= 1 }
        if isImprovement(value, over: best, by: minDelta, lowerIsBetter: monitor.lowerIsBetter) {
            best = value
            wait = 0
            return nil
        }
        if cooldownLeft > 0 { return nil }
        wait += 1
        guard wait >= patience else { return nil }
        let floor = baseRate > 0 ? minimumRate / baseRate : 0
        let reduced = max(scale * factor, floor)
        wait = 0
        cooldownLeft = cooldown
        guard reduced < scale else { return nil }
        scale = reduced
        return scale
    }

    var state: [Double] { [scale, best ?? .nan, Double(wait), Double(cooldownLeft)] }
    mutating func restore(_ words: [Double]) {
        guard words.count == 4 else { return }
        scale = words[0]
        best = words[1].isNaN ? nil : words[1]
        wait = Int(words[2])
        cooldownLeft = Int(words[3])
    }
}

func isImprovement(_ value: Double, over best: Double?, by minDelta: Double, lowerIsBetter: Bool) -> Bool {
    guard value.isFinite else { return false }
    guard let best else { return true }
    return lowerIsBetter ? value < best - minDelta : value > best + minDelta
}

/// A per-epoch figure callbacks and best-checkpoint tracking can watch.
public enum Metric: String, Sendable, CaseIterable {
    case testAccuracy = "test_accuracy"
    case testLoss = "test_loss"
    case trainAccuracy = "train_accuracy"
    case trainLoss = "train_loss"
    case validationAccuracy = "validation_accuracy"
    case validationLoss = "validation_loss"

    public var lowerIsBetter: Bool { self == .testLoss || self == .trainLoss || self == .validationLoss }

    public func value(in report: EpochReport) -> Double? {
        switch self {
        case .testAccuracy: return report.testAccuracy
        case .testLoss: return report.testLoss
        case .trainAccuracy: return report.trainAccuracy
        case .trainLoss: return report.trainLoss
        case .validationAccuracy: return report.validationAccuracy
        case .validationLoss: return report.validationLoss
        }
    }
}

/// The run's callbacks together, fed one epoch's report at a time: every rank runs them on the
/// same figures, so every rank decides the same; rank 0 says what they did.
public struct EpochCallbacks: Sendable {
    public internal(set) var earlyStopping: EarlyStopping?
    public internal(set) var plateau: ReduceOnPlateau?
    /// The parameters of the best epoch so far, kept when early stopping restores them.
    public internal(set) var bestWeights: [Float]?
    /// The plateau's multiplier on the schedule's learning rate.
    public var learningRateScale: Double { plateau?.scale ?? 1 }

    public init(earlyStopping: EarlyStopping?, plateau: ReduceOnPlateau?) {
        (self.earlyStopping, self.plateau) = (earlyStopping, plateau)
    }

    /// What the callbacks decide after an epoch: whether to stop, the weights to put back
    /// (early stopping's best), and the lines saying so.
    public struct Decision {
        public var stop = false
        public var restore: [Float]?
        public var lines: [String] = []
    }

    /// Feeds `report`; `parameters` are this epoch's weights, kept when they are the best.
    public mutating func epochEnded(_ report: EpochReport, parameters: UnsafeBufferPointer<Float>, baseRate: Double) -> Decision {
        var decision = Decision()
        if var callback = plateau, let value = callback.monitor.value(in: report) {
            if let scale = callback.update(value, baseRate: baseRate) {
                decision.lines.append("reduce_lr_on_plateau: \(callback.monitor.rawValue) has not improved for \(callback.patience) epochs; "
                                      + "learning rate × " + String(format: "%.3g", scale))
            }
            plateau = callback
        }
        guard var callback = earlyStopping, let value = callback.monitor.value(in: report) else { return decision }
        let (stop, improved) = callback.update(value, epoch: report.epoch)
        earlyStopping = callback
        if improved && callback.restoreBestWeights { bestWeights = Array(parameters) }
        guard stop else { return decision }
        decision.stop = true
        decision.lines.append("early_stopping: \(callback.monitor.rawValue) has not improved for \(callback.patience) epochs; "
                              + "best \(String(format: "%.4f", callback.best ?? .nan)) at epoch \(callback.bestEpoch)")
        if callback.restoreBestWeights, let bestWeights {
            decision.restore = bestWeights
            decision.lines.append("early_stopping: restored the weights of epoch \(callback.bestEpoch)")
        }
        return decision
    }
}
