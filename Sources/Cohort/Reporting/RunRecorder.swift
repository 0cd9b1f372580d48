import Foundation

/// Everything a run leaves in its run directory, written by rank 0:
///   config.yaml        the resolved config (after --set)
///   metrics.csv        one row per epoch
///   events.out.tfevents.*   TensorBoard scalars (per logged step and per epoch)
///   report.json        the final classification report
///   checkpoints/       (written by the trainer)
public final class RunRecorder {
    public let directory: String
    private let events: EventWriter?
    private let csvPath: String

    public static let csvHeader = "epoch,global_step,train_loss,train_accuracy,validation_loss,validation_accuracy,test_loss,test_accuracy,learning_rate,samples_per_second,seconds"

    public init(directory: String, configText: String, tensorBoard: Bool) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: "\(directory)/config.yaml", contents: Data(configText.utf8)) else {
            throw CohortError("\(directory)/config.yaml: cannot write (is the run directory writable?)")
        }
        csvPath = "\(directory)/metrics.csv"
        if !FileManager.default.fileExists(atPath: csvPath) {
            _ = FileManager.default.createFile(atPath: csvPath, contents: Data((RunRecorder.csvHeader + "\n").utf8))
        }
        events = tensorBoard ? try EventWriter(directory: directory) : nil
    }

    public func step(_ step: Int, loss: Double, learningRate: Double, samplesPerSecond: Double) {
        events?.scalar("train/loss", loss, step: step)
        events?.scalar("train/learning_rate", learningRate, step: step)
        events?.scalar("train/samples_per_second", samplesPerSecond, step: step)
    }

    public func epoch(_ report: EpochReport, globalStep: Int, learningRate: Double) {
        events?.scalar("epoch/train_loss", report.trainLoss, step: globalStep)
        events?.scalar("epoch/train_accuracy", report.trainAccuracy, step: globalStep)
        if let loss = report.validationLoss { events?.scalar("epoch/validation_loss", loss, step: globalStep) }
        if let accuracy = report.validationAccuracy { events?.scalar("epoch/validation_accuracy", accuracy, step: globalStep) }
        if let loss = report.testLoss { events?.scalar("epoch/test_loss", loss, step: globalStep) }
        if let accuracy = report.testAccuracy { events?.scalar("epoch/test_accuracy", accuracy, step: globalStep) }
        events?.scalar("epoch/learning_rate", learningRate, step: globalStep)
        events?.scalar("epoch/samples_per_second", report.samplesPerSecond, step: globalStep)
        events?.flush()
        func number(_ value: Double?) -> String { value.map { String(format: "%.6g", $0) } ?? "" }
        let row = [String(report.epoch), String(globalStep), number(report.trainLoss), number(report.trainAccuracy),
                   number(report.validationLoss), number(report.validationAccuracy), number(report.testLoss), number(report.testAccuracy), number(learningRate),
                   number(report.samplesPerSecond), number(report.seconds)].joined(separator: ",")
        if let handle = FileHandle(forWritingAtPath: csvPath) {
            handle.seekToEndOfFile()
            handle.write(Data((row + "\n").utf8))
            try? handle.close()
        }
    }

    public func writeReport(_ report: ClassificationReport) throws {
        let path = "\(directory)/report.json"
        guard FileManager.default.createFile(atPath: path, contents: Data(report.json().utf8)) else {
            throw CohortError("\(path): cannot write the report")
        }
    }
}
