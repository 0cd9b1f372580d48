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

extension EpochReport {
    /// The epoch's line on rank 0: losses and accuracies (a regression's losses only; a
    /// language model's validation as loss, perplexity and accuracy), the rate and seconds, the
    /// loader's wait and, with sharded sampling, the shuffle buffer's peak.
    public func line(epochs: Int, task: TrainingTask, shuffleBuffer: (rows: Int, bytes: Int)? = nil) -> String {
        func figures(_ name: String, _ loss: Double?, _ accuracy: Double?) -> String {
            guard let loss else { return "" }
            let accuracyText = accuracy.flatMap { $0.isNaN ? nil : "  \(name) accuracy " + String(format: "%.4f", $0) } ?? ""
            return "  \(name) loss " + String(format: "%.4f", loss) + accuracyText
        }
        var line = String(format: "epoch %d/%d", epoch, epochs) + figures("train", trainLoss, trainAccuracy)
        if case .languageModel = task, let testLoss {
            line += "  validation " + languageModelFigures(loss: testLoss, accuracy: testAccuracy ?? .nan)
            line += String(format: "  tokens/s %.0f  (%.1f s)", samplesPerSecond, seconds)
            return line
        }
        line += figures("validation", validationLoss, validationAccuracy) + figures("test", testLoss, testAccuracy)
        line += String(format: "  samples/s %.0f  (%.1f s", samplesPerSecond, seconds)
        if let loaderWait { line += String(format: ", loader wait %.1f%%", loaderWait * 100) }
        if let shuffleBuffer {
            line += String(format: ", shuffle buffer peak %d rows, %.1f MB", shuffleBuffer.rows, Double(shuffleBuffer.bytes) / 1e6)
        }
        return line + ")"
    }
}
