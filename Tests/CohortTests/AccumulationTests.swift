import Foundation
import XCTest
@testable import Cohort

/// `training.accumulate_steps: k`: k micro-batches of b rows per optimizer step, one all-reduce,
/// one update. The loss is divided by every row of the optimizer step, so k × b is one step of
/// k·b (to rounding), at any rank count; schedules and limits count optimizer steps.
final class AccumulationTests: XCTestCase {
    private var directory = ""
    private var train = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        // 203 rows: the last optimizer step of an epoch is partial, and so is its last micro-batch.
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 203, seed: 1)
    }

    private let dropoutLayers = """
        - {type: dense, units: 16, activation: relu}
        - {type: dropout, rate: 0.3}
        - {type: dense, units: 4}
    """
    private let batchNormLayers = """
        - {type: dense, units: 16}
        - {type: batch_norm}
        - {type: relu}
        - {type: dense, units: 4}
    """

    private func run(_ name: String, ranks: Int, batch: Int, accumulate: Int, layers: String, extra: String = "",
                     optimizer: String = "adam", file: String? = nil, arguments: [String] = []) throws -> (checkpoint: String, output: String) {
        let path = "\(directory)/\(name).yaml"
        try smallConfig(train: file ?? train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 2, batchSize: batch,
                        optimizer: optimizer, extra: "  accumulate_steps: \(accumulate)\n\(extra)", layers: layers)
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runCohort(ranks: ranks, ["train", path] + arguments, directory: directory)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        return (try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first), result.output)
    }

    private func difference(_ a: String, _ b: String) throws -> Float {
        maxRelativeDifference(try checkpointParameters(a), try checkpointParameters(b))
    }

    /// The same bits, with SGD and with Adam: micro-batches of 16 rows are whole blocks of every
    /// product (`RowBlocks`), summed block after block as one batch's are; dropout draws its
    /// masks row by row in the same order. The last step of an epoch is partial (203 rows) and
    /// lands in one micro-batch, as in the whole batch.
    func test_microBatchesEqualOneLargeBatchWithDropoutAtOneAndTwoRanks() throws {
        let accumulated = try run("one-k2", ranks: 1, batch: 16, accumulate: 2, layers: dropoutLayers, optimizer: "sgd")
        XCTAssertTrue(accumulated.output.contains("1 rank(s) × batch 16 × 2 accumulation steps = global batch 32; 7 steps per epoch"), accumulated.output)
        let large = try run("one-k1", ranks: 1, batch: 32, accumulate: 1, layers: dropoutLayers, optimizer: "sgd")
        XCTAssertTrue(try checkpointParameters(accumulated.checkpoint) == checkpointParameters(large.checkpoint), "1 rank: 16 × 2 differs from 32")
        for optimizer in ["sgd", "adam"] {
            let twoAccumulated = try run("two-k2-\(optimizer)", ranks: 2, batch: 16, accumulate: 2, layers: dropoutLayers, optimizer: optimizer)
            let twoLarge = try run("two-k1-\(optimizer)", ranks: 2, batch: 32, accumulate: 1, layers: dropoutLayers, optimizer: optimizer)
            XCTAssertTrue(try checkpointParameters(twoAccumulated.checkpoint) == checkpointParameters(twoLarge.checkpoint),
                          "\(optimizer), 2 ranks: 16 × 2 differs from 32")
        }
    }

    /// Batch norm normalizes each micro-batch by its own statistics, as each rank's batch does
    /// without sync: 1 rank × 2 micro-batches of 8 trains as 2 ranks × 8.
    /// (192 rows: no partial step, whose rows 2 ranks and 2 micro-batches would split differently.)
    func test_batchNormUsesEachMicroBatchsStatistics() throws {
        let even = try writeSyntheticDataset("\(directory)/even.h5", rows: 192, seed: 1)
        let accumulated = try run("bn-k2", ranks: 1, batch: 8, accumulate: 2, layers: batchNormLayers, optimizer: "sgd", file: even)
        let twoRanks = try run("bn-two", ranks: 2, batch: 8, accumulate: 1, layers: batchNormLayers, optimizer: "sgd", file: even)
        // The same gradients summed in another association: the micro-batches' blocks one after
        // the other against two ranks' sums added by the all-reduce; 2 epochs of 12 steps, sums
        // of 16 rows, Σ|terms| ≤ 8 (normalized activations |x̂| ≤ 4 times |dL/dy| ≤ 2).
        XCTAssertLessThanOrEqual(maxAbsoluteDifference(try checkpointParameters(accumulated.checkpoint), try checkpointParameters(twoRanks.checkpoint)),
                                 float32Bound(steps: 24, terms: 16, learningRate: 0.01, scale: 8))
        let large = try run("bn-k1", ranks: 1, batch: 16, accumulate: 1, layers: batchNormLayers, optimizer: "sgd", file: even)
        XCTAssertGreaterThan(try difference(accumulated.checkpoint, large.checkpoint), 1e-4, "one batch of 16 has other statistics")
    }

    func test_limitsCountOptimizerStepsAndAResumeIsBitwise() throws {
        let whole = try run("whole", ranks: 2, batch: 4, accumulate: 3, layers: dropoutLayers, extra: "  max_steps: 6")
        XCTAssertTrue(whole.output.contains("stopped after 6 steps"), whole.output)
        XCTAssertTrue(whole.checkpoint.hasSuffix("checkpoint-00000006.h5"))
        _ = try run("part", ranks: 2, batch: 4, accumulate: 3, layers: dropoutLayers, extra: "  max_steps: 4")
        let resumed = try run("part", ranks: 2, batch: 4, accumulate: 3, layers: dropoutLayers, extra: "  max_steps: 6",
                              arguments: ["--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 4"), resumed.output)
        XCTAssertEqual(try checkpointParameters(whole.checkpoint), try checkpointParameters(resumed.checkpoint))
    }
}
