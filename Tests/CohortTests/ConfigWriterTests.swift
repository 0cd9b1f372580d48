import Foundation
import XCTest
@testable import Cohort

/// A config built in Swift and a config read from YAML are the same thing: the typed
/// initializers have the YAML defaults, and `yaml` writes every key back so that it reads equal.
final class ConfigWriterTests: XCTestCase {
    /// Each section reads and writes through one table of keys: every key of every table is
    /// documented under its section of configs/README.md, and a section set away from its
    /// defaults key by key reads back equal (a key the writer forgot would not).
    func test_everyKeyOfEverySectionTableIsDocumentedAndReadsBack() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let reference = try String(contentsOf: root.appendingPathComponent("configs/README.md"), encoding: .utf8)
        func documented(_ names: [String], under heading: String) {
            let section = reference.components(separatedBy: "## `\(heading)`").dropFirst().first?.components(separatedBy: "\n## ").first ?? ""
            XCTAssertFalse(section.isEmpty, "configs/README.md has no section \(heading)")
            for name in names { XCTAssertTrue(section.contains("`\(name)`"), "configs/README.md: \(heading) does not document \(name)") }
        }
        documented(DataConfig.keys.map(\.name), under: "data")
        documented(OptimizerConfig.keys.map(\.name), under: "optimizer")
        documented(TrainingConfig.keys.map(\.name), under: "training")
        documented(CheckpointConfig.keys.map(\.name), under: "checkpoint")
        documented(CallbackConfig.keys.map(\.name), under: "callbacks")
        XCTAssertEqual(TrainingConfig().yamlLines.count, TrainingConfig.keys.count - 2, "all but max_steps and threads, unset, are written")
        var training = TrainingConfig(epochs: 2, batchSize: 8, evalBatchSize: 16, maxSteps: 3, logEvery: 1, onNonFinite: .skipStep,
                                      timingBarrier: true, allReduce: .mpi, accumulateSteps: 2, state: .replicated, overlapAllReduce: true,
                                      bucketMegabytes: 2, compress: .bf16, threads: 2, stallTimeout: 9, recompute: .blocks)
        training.keepGlobalBatch = true
        let text = "data: {train: t.h5}\nmodel: {layers: [{type: dense, units: 2}]}\ntraining:\n" + training.yamlLines.joined(separator: "\n")
        XCTAssertEqual(try TrainConfig.parse(text: text, file: "t.yaml").training, training)
    }

    func test_everyShippedConfigReadsBackEqualFromItsYAML() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = root.appendingPathComponent("configs")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThan(files.count, 5)
        for file in files {
            let config = try TrainConfig.load(path: directory.appendingPathComponent(file).path)
            let again = try TrainConfig.parse(text: config.yaml, file: "\(file) (written back)")
            XCTAssertEqual(again, config, file)
            XCTAssertEqual(again.yaml, config.yaml, file)
        }
    }

    func test_typedDefaultsAreTheYAMLDefaults() throws {
        let parsed = try TrainConfig.parse(text: "data: {train: t.h5}\nmodel:\n  layers:\n    - {type: dense, units: 3}\n", file: "small.yaml")
        XCTAssertEqual(TrainConfig(name: "small", data: DataConfig(train: "t.h5"), layers: [.dense(3)]), parsed)
        for kind in [OptimizerConfig.Kind.sgd, .adam, .adamw] {
            let text = "data: {train: t.h5}\nmodel: {layers: [{type: flatten}]}\noptimizer: {type: \(kind.rawValue)}\n"
            XCTAssertEqual(OptimizerConfig(kind: kind), try TrainConfig.parse(text: text, file: "o.yaml").optimizer, kind.rawValue)
        }
    }

    func test_everySettingSurvivesTheWriter() throws {
        var schedule = LearningRateSchedule(kind: .warmupCosine, baseRate: 0.05, warmupSteps: 7, minimumRate: 1e-4)
        schedule.totalSteps = 900
        let config = TrainConfig(
            name: "every \"key\"", seed: 11, runDirectory: "/tmp/a b/run",
            data: DataConfig(train: "train: x.h5", test: "t.h5", features: "f", labels: "l", cache: false, normalize: .standardize,
                             dropRemainder: true, mean: [0.5, 0.25], std: [2, 3], sampling: .sharded, blockRows: 64, shuffleBuffer: 99,
                             validationSplit: 0.25, prefetch: false, augmentation: Augmentation(cropPadding: 2, horizontalFlip: true),
                             checkFinite: false, window: nil),
            layers: [.conv2d(4, kernel: 3, stride: 2, padding: .same, activation: .gelu, initializer: .heNormal, bias: false, name: "stem"),
                     .residual([.conv2d(4, kernel: 3, padding: .same), .batchNorm(momentum: 0.2, epsilon: 1e-3, sync: true)], projection: true),
                     .maxPool(3, stride: 2), .averagePool(2), .dropout(0.3), .activation(.leakyRelu(slope: 0.3)), .globalAveragePool,
                     .dense(10, initializer: .normal)],
            fineTuning: FineTuning(initFrom: .init(checkpoint: "runs/a b/checkpoints", layers: ["stem", "residual_*"], skip: ["dense_1"]),
                                   freeze: ["stem"], frozenBatchNorm: .train),
            loss: .softmaxCrossEntropy(smoothing: 0.1),
            optimizer: OptimizerConfig(kind: .sgd, learningRate: 0.05, momentum: 0.9, nesterov: true, weightDecay: 5e-4,
                                       decayBiasAndNorm: true, clipNorm: 1.5, schedule: schedule),
            training: TrainingConfig(epochs: 3, batchSize: 16, evalBatchSize: 128, maxSteps: 50, logEvery: 5, onNonFinite: .skipStep,
                                     timingBarrier: true, allReduce: .mpi, accumulateSteps: 2, stallTimeout: 30),
            checkpoint: CheckpointConfig(everyEpochs: 2, everySteps: 10, everySeconds: 60, keepLast: 5, keepBest: true, monitor: .validationLoss),
            callbacks: CallbackConfig(earlyStopping: EarlyStopping(monitor: .testLoss, patience: 4, minDelta: 0.01, restoreBestWeights: true),
                                      reduceOnPlateau: ReduceOnPlateau(monitor: .trainLoss, factor: 0.5, patience: 2, minDelta: 0.001,
                                                                       cooldown: 1, minimumRate: 1e-5)),
            tensorBoard: false)
        XCTAssertEqual(try TrainConfig.parse(text: config.text, file: "written.yaml"), config)
        for loss in [Loss.binaryCrossEntropy, .meanSquaredError] {
            var other = config
            other.loss = loss
            XCTAssertEqual(try TrainConfig.parse(text: other.yaml, file: "loss.yaml").loss, loss)
        }
    }

    /// The Swift example (Examples/TrainFashionMNIST) trains on 2 ranks from typed configs, and
    /// its checkpoint, whose config was written by `yaml`, is read back by `cohort evaluate`.
    func test_theSwiftExampleTrainsAndItsCheckpointEvaluates() throws {
        let directory = try temporaryDirectory(self)
        try makeDirectories("\(directory)/data", for: "the test's data")
        try writeSyntheticDataset("\(directory)/data/train.h5", rows: 1024, height: 28, width: 28, classes: 10, seed: 1)
        try writeSyntheticDataset("\(directory)/data/test.h5", rows: 64, height: 28, width: 28, classes: 10, seed: 2)
        let example = URL(fileURLWithPath: cohortExecutable()).deletingLastPathComponent().appendingPathComponent("train-fashion-mnist").path
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: example), "swift build builds the example: \(example)")
        let run = try runCohort(ranks: 2, ["\(directory)/data", "6"], directory: directory, workingDirectory: directory, executable: example)
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.output.contains("stepLimit after 6 steps"), run.output)
        let checkpoint = "\(directory)/runs/fashion-mnist-mlp-swift/checkpoints/checkpoint-00000006.h5"
        let evaluation = try runCohort(ranks: 1, ["evaluate", checkpoint], directory: directory)
        XCTAssertEqual(evaluation.status, 0, evaluation.error)
        XCTAssertTrue(evaluation.output.contains("accuracy"), evaluation.output)
    }
}
