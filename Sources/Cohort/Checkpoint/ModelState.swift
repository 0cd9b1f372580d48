import Foundation

/// Putting a checkpoint's weights into a model, for resuming, evaluating and predicting.
extension Checkpoint {
    /// Copies parameters and buffers into `model` after checking that every name and shape
    /// matches; a mismatch lists every differing parameter with both shapes.
    public func restoreModel(_ model: Model, source: String) throws {
        let parameters = model.parameters
        var problems: [String] = []
        let expected = Set(parameters.entries.map { CheckpointSchema.parameter($0.name) })
        for entry in parameters.entries {
            guard let tensor = tensors[CheckpointSchema.parameter(entry.name)] else {
                problems.append("\(entry.name) \(entry.shape) missing from the checkpoint")
                continue
            }
            if tensor.shape != entry.shape { problems.append("\(entry.name): checkpoint \(tensor.shape), model \(entry.shape)") }
        }
        for name in tensors.keys where name.hasPrefix(CheckpointSchema.parametersPrefix) && !expected.contains(name) {
            problems.append("\(name.dropFirst(CheckpointSchema.parametersPrefix.count)) \(tensors[name]!.shape) is not in this model")
        }
        guard problems.isEmpty else {
            throw CohortError("\(source): the checkpoint does not fit this model: \(problems.sorted().joined(separator: "; "))")
        }
        for entry in parameters.entries {
            tensors[CheckpointSchema.parameter(entry.name)]!.values.withUnsafeBufferPointer {
                parameters.values(of: entry).update(from: $0.baseAddress!, count: entry.count)
            }
        }
        for entry in parameters.bufferEntries {
            guard let state = tensors[CheckpointSchema.buffer(entry.name)], state.shape == entry.shape else {
                throw CohortError("\(source): no \(entry.name) \(entry.shape) in the checkpoint")
            }
            state.values.withUnsafeBufferPointer { parameters.buffer(of: entry).update(from: $0.baseAddress!, count: entry.count) }
        }
    }
}

extension Checkpoint {
    /// A language model's vocabulary, when the checkpoint carries it (written since format 2).
    public func vocabulary(source: String) throws -> Vocabulary? {
        guard let tokenizer, let classNames else { return nil }
        return try Vocabulary(entries: classNames, tokenizer: tokenizer, source: source, merges: merges ?? [])
    }

    /// The per-channel mean and std the model was trained with (`normalize: standardize`).
    public var normalization: (mean: [Double], std: [Double])? {
        guard let mean = tensors[CheckpointSchema.normalizationMean]?.values, let std = tensors[CheckpointSchema.normalizationStd]?.values else { return nil }
        return (mean.map(Double.init), std.map(Double.init))
    }
}

/// A trained model rebuilt from a checkpoint alone: its config comes from the file.
public struct TrainedModel {
    public let config: TrainConfig
    public let model: Model
    public let data: any SampleSource
    /// What the model was trained for (`TrainingTask`), read from the data and the config's loss.
    public let task: TrainingTask

    /// Opens `dataPath` (or the config's test file), builds the checkpoint's model for its samples
    /// and loads the weights.
    public static func load(checkpoint path: String, data dataPath: String?, maxBatch: Int,
                            communicator: Communicator) throws -> TrainedModel {
        let checkpoint = try Checkpoint.read(from: path)
        let config = try TrainConfig.parse(text: checkpoint.config, file: "\(path) (stored config)")
        guard var file = dataPath ?? config.data.test else {
            throw CohortError("\(path): its config names no test file; give one with --data")
        }
        // A relative path of the stored config is relative to where training ran: from another
        // directory, the absolute path the checkpoint recorded finds the same file.
        if dataPath == nil, !FileManager.default.fileExists(atPath: file),
           let recorded = checkpoint.dataFiles?.first(where: { $0.hasPrefix("test=") })?.dropFirst("test=".count) {
            file = String(recorded)
        }
        // The normalization the model was trained with, never the data file's own statistics.
        var dataConfig = config.data
        if let stored = checkpoint.normalization { (dataConfig.mean, dataConfig.std) = (stored.mean, stored.std) }
        let data = try openSamples(path: file, config: dataConfig, phase: .zero, seed: config.seed, cache: config.data.cache)
        let model = try Model(inputShape: data.sampleShape, layers: config.layers, maxBatch: maxBatch, seed: config.seed,
                              communicator: communicator)
        try checkpoint.restoreModel(model, source: path)
        let task = try TrainingTask(data: data, loss: config.loss, model: model)
        try task.checkTokens(of: model, file: data.path)
        try task.checkOutput(model.outputShape, file: file, model: "the checkpoint's model")
        return TrainedModel(config: config, model: model, data: data, task: task)
    }
}

/// Probabilities [N × K] and predicted labels for every row of a trained model's data.
public func predict(_ trained: TrainedModel, batchSize: Int) throws -> (probabilities: [Float], labels: [Int64], classes: Int) {
    let data = trained.data
    if case .languageModel = trained.task {
        throw CohortError("\(data.path): predict writes class probabilities per row; for a language model use cohort evaluate or cohort generate")
    }
    let loss = trained.config.loss
    let width = trained.model.outputShape.reduce(1, *)
    // Regression: the outputs themselves, under the name probabilities' place takes.
    let regression: Bool = if case .regression = trained.task { true } else { false }
    let classes = regression ? width : (loss == .binaryCrossEntropy ? 2 : width)
    let batch = max(1, min(batchSize, trained.model.maxBatch))
    let x = UnsafeMutablePointer<Float>.allocate(capacity: batch * data.sampleSize)
    let y = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
    defer {
        x.deallocate()
        y.deallocate()
    }
    var probabilities: [Float] = []
    var labels: [Int64] = []
    probabilities.reserveCapacity(data.rows * classes)
    var start = 0
    while start < data.rows {
        let end = min(start + batch, data.rows)
        try data.load(rows: Array(start..<end)[...], epoch: 0, x: x, y: y)
        let outputs = trained.model.forward(x, batch: end - start, training: false)
        for row in 0..<(end - start) {
            if regression {
                probabilities += (0..<width).map { outputs[row * width + $0] }
                labels.append(0)
                continue
            }
            probabilities += loss.probabilities(outputs + row * width, width: width, classes: classes)
            labels.append(Int64(loss.predictedClass(outputs + row * width, width: width)))
        }
        start = end
    }
    return (probabilities, labels, classes)
}
