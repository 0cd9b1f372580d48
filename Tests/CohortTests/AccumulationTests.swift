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

    /// SGD for the 1e-6 check: the update is proportional to the gradient, so the only
    /// difference left is the summation order. With Adam over 26 steps rounding grows to ~1e-5
    /// (Adam scales every gradient, even one that is rounding noise, to the learning rate).
    func test_microBatchesEqualOneLargeBatchWithDropoutAtOneAndTwoRanks() throws {
        let accumulated = try run("one-k2", ranks: 1, batch: 8, accumulate: 2, layers: dropoutLayers, optimizer: "sgd")
        XCTAssertTrue(accumulated.output.contains("1 rank(s) × batch 8 × 2 accumulation steps = global batch 16; 13 steps per epoch"), accumulated.output)
        let large = try run("one-k1", ranks: 1, batch: 16, accumulate: 1, layers: dropoutLayers, optimizer: "sgd")
        XCTAssertLessThanOrEqual(try difference(accumulated.checkpoint, large.checkpoint), 1e-6)
        let twoAccumulated = try run("two-k2", ranks: 2, batch: 4, accumulate: 2, layers: dropoutLayers, optimizer: "sgd")
        let twoLarge = try run("two-k1", ranks: 2, batch: 8, accumulate: 1, layers: dropoutLayers, optimizer: "sgd")
        XCTAssertLessThanOrEqual(try difference(twoAccumulated.checkpoint, twoLarge.checkpoint), 1e-6)
        let adamAccumulated = try run("adam-k2", ranks: 2, batch: 4, accumulate: 2, layers: dropoutLayers)
        let adamLarge = try run("adam-k1", ranks: 2, batch: 8, accumulate: 1, layers: dropoutLayers)
        XCTAssertLessThanOrEqual(try difference(adamAccumulated.checkpoint, adamLarge.checkpoint), 1e-5)
    }

    /// Batch norm normalizes each micro-batch by its own statistics, as each rank's batch does
    /// without sync: 1 rank × 2 micro-batches of 8 trains as 2 ranks × 8.
    /// (192 rows: no partial step, whose rows 2 ranks and 2 micro-batches would split differently.)
    func test_batchNormUsesEachMicroBatchsStatistics() throws {
        let even = try writeSyntheticDataset("\(directory)/even.h5", rows: 192, seed: 1)
        let accumulated = try run("bn-k2", ranks: 1, batch: 8, accumulate: 2, layers: batchNormLayers, optimizer: "sgd", file: even)
        let twoRanks = try run("bn-two", ranks: 2, batch: 8, accumulate: 1, layers: batchNormLayers, optimizer: "sgd", file: even)
        // The same gradients summed in another order (two partial sums added by the all-reduce).
        XCTAssertLessThanOrEqual(try difference(accumulated.checkpoint, twoRanks.checkpoint), 1e-5)
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
