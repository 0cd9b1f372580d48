import Foundation

/// One epoch's figures, as every rank agrees on them.
public struct EpochReport: Sendable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double?
    public var testAccuracy: Double?
    public var validationLoss: Double? = nil
    public var validationAccuracy: Double? = nil
    public var samplesPerSecond: Double
    public var seconds: Double
    /// Share of the epoch's training time spent waiting for data (this rank's loader).
    public var loaderWait: Double? = nil
}
