import Foundation

/// Everything a run leaves in its run directory, written by rank 0:
///   config.yaml        the resolved config (after --set)
///   metrics.csv        one row per epoch
///   events.out.tfevents.*   TensorBoard scalars (per logged step and per epoch)
///   report.json        the final classification report (a language model: loss, perplexity,
///                      bits per token and next-token accuracy of the validation file)
///   checkpoints/       (written by the trainer)
public final class RunRecorder {
    public let directory: String
    private let events: EventWriter?
    private let csvPath: String
    /// A language model's rows and scalars name tokens, perplexity and bits instead of samples.
    private let languageModel: Bool

    public static let csvHeader = "epoch,global_step,train_loss,train_accuracy,validation_loss,validation_accuracy,test_loss,test_accuracy,learning_rate,samples_per_second,seconds"

    /// metrics.csv of a language model; the test file is its validation split.
    public static let languageModelCSVHeader = "epoch,global_step,train_loss,train_accuracy,validation_loss,validation_perplexity,validation_bits_per_token,validation_accuracy,learning_rate,tokens_per_second,seconds"

    public init(directory: String, configText: String, tensorBoard: Bool, task: TrainingTask? = nil) throws {
        self.directory = directory
        if case .languageModel = task { languageModel = true } else { languageModel = false }
        try makeDirectories(directory, for: "the run")
        guard FileManager.default.createFile(atPath: "\(directory)/config.yaml", contents: Data(configText.utf8)) else {
            throw CohortError("\(directory)/config.yaml: cannot write (is the run directory writable?)")
        }
        csvPath = "\(directory)/metrics.csv"
        if !FileManager.default.fileExists(atPath: csvPath) {
            let header = languageModel ? RunRecorder.languageModelCSVHeader : RunRecorder.csvHeader
            _ = FileManager.default.createFile(atPath: csvPath, contents: Data((header + "\n").utf8))
        }
        events = tensorBoard ? try EventWriter(directory: directory) : nil
    }

    public func step(_ step: Int, loss: Double, learningRate: Double, samplesPerSecond: Double) {
        events?.scalar("train/loss", loss, step: step)
        events?.scalar("train/learning_rate", learningRate, step: step)
        events?.scalar(languageModel ? "train/tokens_per_second" : "train/samples_per_second", samplesPerSecond, step: step)
    }

    public func epoch(_ report: EpochReport, globalStep: Int, learningRate: Double) {
        events?.scalar("epoch/train_loss", report.trainLoss, step: globalStep)
        events?.scalar("epoch/train_accuracy", report.trainAccuracy, step: globalStep)
        if let loss = report.validationLoss { events?.scalar("epoch/validation_loss", loss, step: globalStep) }
        if let accuracy = report.validationAccuracy { events?.scalar("epoch/validation_accuracy", accuracy, step: globalStep) }
        if let loss = report.testLoss { events?.scalar("epoch/test_loss", loss, step: globalStep) }
        if let accuracy = report.testAccuracy { events?.scalar("epoch/test_accuracy", accuracy, step: globalStep) }
        events?.scalar("epoch/learning_rate", learningRate, step: globalStep)
        func number(_ value: Double?) -> String { value.map { String(format: "%.6g", $0) } ?? "" }
        let row: String
        if languageModel {
            let perplexity = report.testLoss.map { exp($0) }
            let bits = report.testLoss.map { $0 / log(2.0) }
            if let perplexity { events?.scalar("epoch/validation_perplexity", perplexity, step: globalStep) }
            if let bits { events?.scalar("epoch/validation_bits_per_token", bits, step: globalStep) }
            events?.scalar("epoch/tokens_per_second", report.samplesPerSecond, step: globalStep)
            row = [String(report.epoch), String(globalStep), number(report.trainLoss), number(report.trainAccuracy), number(report.testLoss),
                   number(perplexity), number(bits), number(report.testAccuracy), number(learningRate), number(report.samplesPerSecond),
                   number(report.seconds)].joined(separator: ",")
        } else {
            events?.scalar("epoch/samples_per_second", report.samplesPerSecond, step: globalStep)
            row = [String(report.epoch), String(globalStep), number(report.trainLoss), number(report.trainAccuracy),
                   number(report.validationLoss), number(report.validationAccuracy), number(report.testLoss), number(report.testAccuracy), number(learningRate),
                   number(report.samplesPerSecond), number(report.seconds)].joined(separator: ",")
        }
        events?.flush()
        if let handle = FileHandle(forWritingAtPath: csvPath) {
            handle.seekToEndOfFile()
            handle.write(Data((row + "\n").utf8))
            try? handle.close()
        }
    }

    /// report.json of a language model: the figures of its last evaluation of the validation file.
    public func writeLanguageModelReport(loss: Double, accuracy: Double, tokens: Int, globalStep: Int) throws {
        let path = "\(directory)/report.json"
        let text = String(format: "{\"global_step\": %d, \"validation_loss\": %.6f, \"perplexity\": %.6f, \"bits_per_token\": %.6f, \"accuracy\": %.6f, \"tokens\": %d}\n",
                          globalStep, loss, exp(loss), loss / log(2.0), accuracy, tokens)
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw CohortError("\(path): cannot write the report")
        }
    }

    public func writeReport(_ report: ClassificationReport) throws {
        let path = "\(directory)/report.json"
        guard FileManager.default.createFile(atPath: path, contents: Data(report.json().utf8)) else {
            throw CohortError("\(path): cannot write the report")
        }
    }
}
