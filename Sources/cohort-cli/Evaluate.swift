import ArgumentParser
import Cohort
import Foundation

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a checkpoint: per-class precision, recall, F1, support, averages, accuracy, confusion matrix.",
        discussion: """
        The model and its data settings come from the config stored in the checkpoint. Under mpirun the
        rows are split across ranks and the counts all-reduced, so the report is exact; started
        without a launcher it runs as one process and does not start MPI. Rank 0 prints
        the table, and writes it as JSON only where --json says (a run's own report.json is never overwritten).
        Data are normalized as the model was trained (the statistics stored in the checkpoint), whatever
        the evaluated file's own attributes say.
        """
    )

    @Argument(help: "A checkpoint file written by cohort train.")
    var checkpoint: String

    @Option(help: "HDF5 file to evaluate (default: the config's test file).")
    var data: String?

    @Option(help: "Write the report as JSON to this file (default: no file).")
    var json: String?

    @Option(help: "Rows per forward pass.")
    var batchSize: Int = 500

    func run() throws {
        LayerThreads.use(LayerThreads.boundCores())
        let communicator = MPICommunicator.orSingleProcess()
        let outcome: Result<(ClassificationReport, String?), CohortError>
        do {
            if let json { try refuseOutput(json, namingAnyOf: [checkpoint] + (data.map { [$0] } ?? [])) }
            let trained = try TrainedModel.load(checkpoint: checkpoint, data: data, maxBatch: batchSize, communicator: communicator)
            let result = try Cohort.evaluate(model: trained.model, data: trained.data, task: trained.task, loss: trained.config.loss,
                                             communicator: communicator, batchSize: batchSize)
            if case .languageModel = trained.task {
                // Every non-overlapping window of the file, split across ranks; a report file only where --json says.
                if communicator.isRoot {
                    let tokens = result.rows * trained.data.targetsPerRow
                    printLine("\(trained.data.path): \(result.rows) windows, \(tokens) target tokens")
                    printLine(languageModelFigures(loss: result.loss, accuracy: result.accuracy))
                    if let json {
                        let text = String(format: "{\"loss\": %.6f, \"perplexity\": %.6f, \"bits_per_char\": %.6f, \"accuracy\": %.6f, \"tokens\": %d}\n",
                                          result.loss, exp(result.loss), result.loss / log(2.0), result.accuracy, tokens)
                        guard FileManager.default.createFile(atPath: json, contents: Data(text.utf8)) else {
                            throw CohortError("\(json): cannot write the report")
                        }
                        printLine("saved \(json)")
                    }
                }
                communicator.finalize()
                return
            }
            if let line = result.regressionLine {
                if communicator.isRoot {
                    printLine("\(trained.data.path): " + line)
                    if let json {
                        let text = String(format: "{\"mse\": %.6f, \"rmse\": %.6f, \"r2\": %.6f, \"rows\": %d}\n",
                                          result.loss, result.rootMeanSquaredError ?? .nan, result.rSquared ?? .nan, result.rows)
                        guard FileManager.default.createFile(atPath: json, contents: Data(text.utf8)) else {
                            throw CohortError("\(json): cannot write the report")
                        }
                        printLine("saved \(json)")
                    }
                }
                communicator.finalize()
                return
            }
            outcome = .success((result.report(classNames: trained.data.classNames), json))
        } catch let error as CohortError {
            outcome = .failure(error)
        }
        // A failure here is the same on every rank (same files): rank 0 reports it.
        switch outcome {
        case .failure(let error):
            if communicator.isRoot { printError("cohort: \(error.message)") }
            communicator.finalize()
            throw ExitCode(1)
        case .success(let (report, path)):
            if communicator.isRoot {
                printLine(report.table())
                if let loss = report.loss { printLine(String(format: "loss %.4f", loss)) }
                if let path {
                    let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
                    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                    if FileManager.default.createFile(atPath: path, contents: Data(report.json().utf8)) {
                        printLine("saved \(path)")
                    } else {
                        printError("cohort: \(path): cannot write the report")
                    }
                }
            }
            communicator.finalize()
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write class probabilities and predicted labels for every row of a file, as HDF5.",
        discussion: """
        Output datasets: probabilities float32 [N, K] (softmax; for a binary model [1 − p, p]) and
        predictions int64 [N]; for a regression model, predictions float32 [N, T]. Attributes
        class_names, checkpoint, source. Runs in one process.
        """
    )

    @Argument(help: "A checkpoint file written by cohort train.")
    var checkpoint: String

    @Option(help: "HDF5 file with the rows to predict (Cohort's layout; labels are read but not needed for the output).")
    var data: String

    @Option(help: "Output HDF5 file.")
    var out: String

    @Option(help: "Rows per forward pass.")
    var batchSize: Int = 500

    func run() throws {
        LayerThreads.use(LayerThreads.boundCores())
        reportingErrors {
            try refuseOutput(out, namingAnyOf: [checkpoint, data])
            let trained = try TrainedModel.load(checkpoint: checkpoint, data: data, maxBatch: batchSize, communicator: SingleProcess())
            let predictions = try Cohort.predict(trained, batchSize: batchSize)
            try writeHDF5(out) { file in
                if case .regression = trained.task {
                    try file.write("predictions", predictions.probabilities, shape: [trained.data.rows, predictions.classes])
                } else {
                    try file.write("probabilities", predictions.probabilities, shape: [trained.data.rows, predictions.classes])
                    try file.write("predictions", predictions.labels, shape: [trained.data.rows])
                }
                try file.setAttribute("class_names", trained.data.classNames)
                try file.setAttribute("checkpoint", checkpoint)
                try file.setAttribute("source", data)
            }
            printLine("wrote \(out): \(trained.data.rows) rows, \(predictions.classes) classes")
        }
    }
}

/// An output path that names one of the command's inputs (the same file, by any path) is
/// refused before anything is read or written.
func refuseOutput(_ output: String, namingAnyOf inputs: [String]) throws {
    var outputStatus = stat()
    guard stat(output, &outputStatus) == 0 else { return }
    for input in inputs {
        var inputStatus = stat()
        if stat(input, &inputStatus) == 0, inputStatus.st_dev == outputStatus.st_dev, inputStatus.st_ino == outputStatus.st_ino {
            throw CohortError("\(output): is the input \(input); choose another output path")
        }
    }
}

/// Writes an HDF5 output under a temporary name, seals it and renames it into place: a failed
/// write leaves nothing half-done and nothing else touched.
func writeHDF5(_ out: String, _ body: (HDF5File) throws -> Void) throws {
    let temporary = URL(fileURLWithPath: out).deletingLastPathComponent().appendingPathComponent(".\(URL(fileURLWithPath: out).lastPathComponent).tmp-\(getpid())").path
    do {
        let file = try HDF5File.create(temporary)
        try body(file)
        try file.flush()
        file.close()
        try FileIntegrity.seal(temporary)
    } catch {
        unlink(temporary)
        throw error
    }
    guard rename(temporary, out) == 0 else {
        unlink(temporary)
        throw CohortError("\(out): cannot move the new file into place: \(String(cString: strerror(errno)))")
    }
}
