import Foundation
import XCTest
@testable import Cohort

/// A model carries the normalization it was trained with: evaluation and prediction use the
/// statistics stored in the checkpoint, never those of the file they read.
final class InferenceTests: XCTestCase {
    func test_predictionsOfRowsDoNotDependOnTheFileTheyAreIn() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 128, seed: 1)
        let test = try writeSyntheticDataset("\(directory)/test.h5", rows: 60, seed: 2)
        // The first 20 test rows in a file of their own: its mean/std attributes are its own.
        var subset = try ImageSet.read(from: test)
        let rowSize = subset.height * subset.width * subset.channels
        subset.images = Array(subset.images.prefix(20 * rowSize))
        subset.labels = Array(subset.labels.prefix(20))
        try subset.write(to: "\(directory)/first20.h5")
        let own = try HDF5File.open("\(directory)/first20.h5").numberAttribute("mean", as: Double.self)
        let trained = try HDF5File.open(train).numberAttribute("mean", as: Double.self)
        XCTAssertNotEqual(own, trained, "the subset's own statistics differ from the training file's")

        let config = "\(directory)/standardized.yaml"
        try smallConfig(train: train, test: test, runDirectory: "\(directory)/run", epochs: 1, extra: "  max_steps: 4")
            .replacingOnce("  train: \(train)", with: "  train: \(train)\n  normalize: standardize")
            .write(toFile: config, atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", config], directory: directory).status, 0)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        XCTAssertEqual(try Checkpoint.read(from: checkpoint).normalization?.mean.map { Float($0) }, trained.map { Float($0) })

        for (file, out) in [(test, "whole.h5"), ("\(directory)/first20.h5", "part.h5")] {
            let result = try runCohort(ranks: 1, ["predict", checkpoint, "--data", file, "--out", "\(directory)/\(out)"], directory: directory)
            XCTAssertEqual(result.status, 0, result.error)
        }
        let whole: [Float] = try HDF5File.open("\(directory)/whole.h5").read("probabilities").values
        let part: [Float] = try HDF5File.open("\(directory)/part.h5").read("probabilities").values
        XCTAssertEqual(part.count, 20 * 4)
        for (a, b) in zip(part, whole.prefix(part.count)) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func test_evaluateWritesAReportOnlyWhereAsked() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 64, seed: 1)
        let config = "\(directory)/plain.yaml"
        try smallConfig(train: train, test: train, runDirectory: "\(directory)/run", epochs: 1).write(toFile: config, atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", config], directory: directory).status, 0)
        let report = "\(directory)/run/report.json"
        let before = try Data(contentsOf: URL(fileURLWithPath: report))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: report))
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        XCTAssertEqual(try runCohort(ranks: 1, ["evaluate", checkpoint], directory: directory).status, 0)
        XCTAssertEqual(try String(contentsOfFile: report, encoding: .utf8), "{}", "the run's report is not overwritten")
        XCTAssertEqual(try runCohort(ranks: 1, ["evaluate", checkpoint, "--json", "\(directory)/mine.json"], directory: directory).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/mine.json")).count, before.count)
    }
}

extension InferenceTests {
    /// A run stopped inside an epoch leaves a metrics row for its steps; its checkpoint is
    /// evaluated from another directory through the absolute data paths it recorded.
    func test_aRunStoppedMidEpochLeavesARowAndItsCheckpointWorksFromAnywhere() throws {
        let directory = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: "\(directory)/work/data", withIntermediateDirectories: true)
        try writeSyntheticDataset("\(directory)/work/data/train.h5", rows: 64, seed: 1)
        let config = "\(directory)/work/relative.yaml"
        try smallConfig(train: "data/train.h5", test: "data/train.h5", runDirectory: "run", epochs: 2, extra: "  max_steps: 5")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let trained = try runCohort(ranks: 1, ["train", "relative.yaml"], directory: directory, workingDirectory: "\(directory)/work")
        XCTAssertEqual(trained.status, 0, trained.error)
        let rows = try String(contentsOfFile: "\(directory)/work/run/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.count, 2, "\(rows)")
        XCTAssertTrue(rows[1].hasPrefix("1,5,"), "epoch 1 after 5 steps: \(rows)")
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/work/run/checkpoints").first)
        // Self-contained: what the model reads, how, what it was trained with, and the data's names.
        let stored = try Checkpoint.read(from: checkpoint)
        XCTAssertEqual(stored.inputShape, [1, 6, 6])
        XCTAssertEqual(stored.inputLayout, "CHW")
        XCTAssertEqual(stored.loss, "softmax_cross_entropy")
        XCTAssertEqual(stored.classNames?.count, 4)
        XCTAssertEqual(stored.inputScale.map { Float($0) }, 1 / 255, "uint8 pixels")
        for line in ["\ninput_shape=1,6,6\n", "\ninput_layout=CHW\n", "\ninput_scale=", "\nloss=softmax_cross_entropy"] {
            XCTAssertTrue(stored.attributeText().contains(line), "\(line) in the checksum")
        }
        let elsewhere = try runCohort(ranks: 1, ["evaluate", checkpoint], directory: directory, workingDirectory: directory)
        XCTAssertEqual(elsewhere.status, 0, elsewhere.error)
        XCTAssertTrue(elsewhere.output.contains("accuracy"), elsewhere.output)
    }
}
