import Foundation
import XCTest
@testable import Cohort

/// `model.init_from` and `model.freeze`: a model starts from another run's weights, trains
/// only its head, and its frozen parameters and batch-norm statistics leave the run unchanged.
final class FineTuningTests: XCTestCase {
    private let backbone = """
        - {type: conv2d, filters: 4, kernel: 3, padding: same, bias: false}
        - {type: batch_norm}
        - {type: relu}
        - {type: global_avg_pool}
    """

    private func write(_ text: String, to path: String) throws -> String {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Weights `init_from` loads draw their random numbers without transforming them: the
    /// parameters initialized fresh (a new head) get the same values as when every weight is drawn.
    func test_skippingTheDrawsOfLoadedWeightsLeavesTheOthersUnchanged() throws {
        let layers: [LayerSpec] = [.family(BertEmbeddingsOptions(vocabulary: 50, dimension: 16, maxLength: 8)),
                                   .family(EncoderBlockOptions(heads: 2)), .family(SequencePoolOptions(mode: .mean)),
                                   .dense(8, activation: .relu, initializer: .glorotUniform), .dense(3, initializer: .normal)]
        let full = try Model(inputShape: [8], layers: layers, maxBatch: 2, seed: 7)
        let loaded = Set(full.parameters.entries.map(\.name).filter { !$0.hasPrefix("dense_") })
        XCTAssertGreaterThan(loaded.count, 5)
        let skipping = try Model(inputShape: [8], layers: layers, maxBatch: 2, seed: 7, willLoad: { name, _ in loaded.contains(name) })
        for entry in full.parameters.entries where !loaded.contains(entry.name) {
            let range = entry.offset..<(entry.offset + entry.count)
            XCTAssertEqual(full.parameters.values[range].map(\.bitPattern), skipping.parameters.values[range].map(\.bitPattern), entry.name)
        }
        let word = try XCTUnwrap(skipping.parameters.entry(named: "bert_embeddings_1/word/weight"))
        XCTAssertTrue(skipping.parameters.values[word.offset..<(word.offset + word.count)].allSatisfy { $0 == 0 }, "not transformed")
    }

    func test_aFrozenBackboneFromAnotherRunStaysAsLoadedWhileTheNewHeadTrains() throws {
        let directory = try temporaryDirectory(self)
        let four = try writeSyntheticDataset("\(directory)/four.h5", rows: 96, classes: 4, seed: 1)
        let two = try writeSyntheticDataset("\(directory)/two.h5", rows: 96, classes: 2, seed: 2)
        let pretrain = try write(smallConfig(train: four, test: nil, runDirectory: "\(directory)/pretrained", epochs: 1,
                                             extra: "  max_steps: 4", layers: backbone + "\n    - {type: dense, units: 4}"),
                                 to: "\(directory)/pretrain.yaml")
        XCTAssertEqual(try runCohort(ranks: 1, ["train", pretrain], directory: directory).status, 0)
        let source = try Checkpoint.read(from: try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/pretrained/checkpoints").first))

        let finetune = try write(smallConfig(train: two, test: nil, runDirectory: "\(directory)/tuned", epochs: 1, extra: "  max_steps: 5",
                                             layers: backbone + """

                                                 - {type: dense, units: 2}
                                               init_from: {checkpoint: \(directory)/pretrained/checkpoints, skip: [dense_1]}
                                               freeze: [conv2d_1, batch_norm_*]
                                             """),
                                 to: "\(directory)/finetune.yaml")
        let run = try runCohort(ranks: 2, ["train", finetune], directory: directory)
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.output.contains("init_from \(directory)/pretrained/checkpoints: loaded 5 tensors: conv2d_1/weight, batch_norm_1/gamma, batch_norm_1/beta, batch_norm_1/running_mean, batch_norm_1/running_var"), run.output)
        XCTAssertTrue(run.output.contains("initialized fresh 2: dense_1/weight, dense_1/bias"), run.output)
        XCTAssertTrue(run.output.contains("frozen: 44 of 54 parameters (3 tensors)"), run.output)
        XCTAssertTrue(run.output.contains("MPI_Allreduce of the trainable parameters (10 floats in 1 span(s))"), run.output)

        let tuned = try Checkpoint.read(from: try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/tuned/checkpoints").first))
        for name in ["parameters/conv2d_1/weight", "parameters/batch_norm_1/gamma", "parameters/batch_norm_1/beta",
                     "buffers/batch_norm_1/running_mean", "buffers/batch_norm_1/running_var"] {
            XCTAssertEqual(tuned.tensors[name]?.values, source.tensors[name]?.values, "\(name) is frozen (bit for bit)")
        }
        XCTAssertEqual(tuned.tensors["optimizer/adam_m/conv2d_1/weight"]?.values.allSatisfy { $0 == 0 }, true, "no optimizer state moves")
        let head = try XCTUnwrap(tuned.tensors["parameters/dense_1/weight"]?.values)
        let initial = try Model(inputShape: [1, 6, 6], layers: try TrainConfig.load(path: finetune).layers, seed: 3)
        XCTAssertNotEqual(head, Array(initial.parameters.values[initial.parameters.entries.first { $0.name == "dense_1/weight" }!.offset...].prefix(head.count)),
                          "the head trains")

        // Misspelt names are refused, naming the key and the model's layers.
        let typo = try write(String(contentsOfFile: finetune, encoding: .utf8).replacingOnce("freeze: [conv2d_1, batch_norm_*]", with: "freeze: [conv2d_9]"),
                             to: "\(directory)/typo.yaml")
        let refused = try runCohort(ranks: 1, ["train", typo, "--set", "run_dir=\(directory)/typo"], directory: directory)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("model.freeze: 'conv2d_9' names no parameter of the model (its layers: batch_norm_1, conv2d_1, dense_1)"), refused.error)
    }

    func test_frozenBatchNormInInferenceModeHasTheGradientOfAnAffineMap() throws {
        // A batch norm on running statistics is y = γ·(x − μ)/σ + β: the finite-difference check holds.
        let model = try Model(inputShape: [2, 3, 3], layers: [.conv2d(2, kernel: 1), .batchNorm(), .activation(.tanh), .flatten, .dense(2)],
                              maxBatch: 2, seed: 4)
        model.freeze(["batch_norm_1/gamma", "batch_norm_1/beta"], batchNormInference: true)
        let x = (0..<36).map { Float($0 % 7) / 3 - 1 }
        let before = Array(model.parameters.buffers)
        _ = model.forward(x, batch: 2, training: true)
        XCTAssertEqual(Array(model.parameters.buffers), before, "running statistics untouched in training")
        let inference = Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: false), count: 4))
        let training = Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: true), count: 4))
        XCTAssertEqual(training, inference, "training normalizes with the running statistics too")
    }
}
