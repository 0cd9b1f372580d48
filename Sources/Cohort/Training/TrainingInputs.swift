import Foundation

/// What a run reads, opened before the model is built: the training file (the rows of it that
/// train, the rest held out by `validation_split`), the test file, the normalization the two
/// share, and the loader of this rank's batches.
struct TrainingInputs {
    let train: any SampleSource
    let test: (any SampleSource)?
    /// What the training file holds (rows, shape, a CRC of some rows), recorded in checkpoints.
    let fingerprint: String
    /// Per-channel mean and std of `normalize: standardize`, from the config or the training file.
    let normalization: (mean: [Double], std: [Double])?
    let trainingRows: Int
    let loader: BatchLoader

    init(_ data: DataConfig, training: TrainingConfig, seed: UInt64, communicator: Communicator) throws {
        train = try openSamples(path: data.train, config: data, phase: .random, seed: seed, cache: data.cache && data.sampling == .global)
        fingerprint = try train.fingerprint()
        // The training file's normalization is the model's: fixed here, stored in every
        // checkpoint, and used for the test file too (never the test file's own statistics).
        normalization = (train as? LabeledData)?.standardization
        var testData = data
        if let normalization { (testData.mean, testData.std) = (normalization.mean, normalization.std) }
        let classes = train.classes
        test = try data.test.map {
            try openSamples(path: $0, config: testData, phase: .zero, seed: seed, cache: data.cache, expectedClasses: classes)
        }
        if let test, test.sampleShape != train.sampleShape {
            throw CohortError("\(test.path): samples have shape \(test.sampleShape) but \(train.path) has \(train.sampleShape)")
        }
        // validation_split holds out the last rows of the file, before any shuffling.
        trainingRows = train.rows - Int((Double(train.rows) * data.validationSplit).rounded())
        let rowsPerStep = training.rowsPerStep
        guard trainingRows >= communicator.size * rowsPerStep else {
            throw CohortError("\(train.path): \(trainingRows) training rows are fewer than one global batch (\(communicator.size) ranks × \(rowsPerStep))")
        }
        let plan = try BatchLoader.Plan(data, file: train, rows: trainingRows, ranks: communicator.size, rank: communicator.rank,
                                        batchPerRank: rowsPerStep, seed: seed)
        let augmenter = data.augmentation.isEnabled
            ? Augmenter(augmentation: data.augmentation, shape: train.sampleShape, seed: seed, rank: communicator.rank) : nil
        loader = BatchLoader(data: train, plan: plan, batchSize: rowsPerStep, augmenter: augmenter, prefetch: data.prefetch)
    }
}
