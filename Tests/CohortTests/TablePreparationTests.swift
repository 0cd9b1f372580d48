import Foundation
import XCTest
@testable import Cohort

/// `cohort prepare csv` and the tabular path: columns, one-hot categories, classes or float
/// targets, the seeded split, per-column statistics, bad rows named by line, and a regression
/// run on 2 ranks that reports RMSE and R².
final class TablePreparationTests: XCTestCase {
    func test_aCSVTableBecomesTrainAndValidationFiles() throws {
        let directory = try temporaryDirectory(self)
        var lines = ["size,\"colour\",weight,kind"]
        for row in 0..<40 { lines.append("\(row),\(row % 3 == 0 ? "\"red, dark\"" : "blue"),\(Double(row) * 0.5 + 1),\(row % 2 == 0 ? "cat" : "dog")") }
        try lines.joined(separator: "\n").write(toFile: "\(directory)/t.csv", atomically: true, encoding: .utf8)
        let prepared = try runCohort(ranks: 1, ["prepare", "csv", "--input", "\(directory)/t.csv", "--label", "kind",
                                                "--categorical", "colour", "--validation", "0.25", "--out", "\(directory)/t"],
                                     directory: directory)
        XCTAssertEqual(prepared.status, 0, prepared.error)
        let train = try HDF5File.open("\(directory)/t/train.h5")
        XCTAssertEqual(try train.stringsAttribute("columns"), ["size", "colour=blue", "colour=red, dark", "weight"])
        XCTAssertEqual(try train.stringsAttribute("class_names"), ["cat", "dog"])
        let data = try LabeledData(path: "\(directory)/t/train.h5", featuresName: "features", labelsName: "labels", normalization: .standardize, cache: true)
        XCTAssertEqual(data.rows, 30)
        XCTAssertEqual(data.sampleShape, [4])
        XCTAssertEqual(try LabeledData(path: "\(directory)/t/val.h5", featuresName: "features", labelsName: "labels", normalization: .none, cache: true).rows, 10)
        // Standardized per column with the training rows' statistics: each column has mean 0.
        var x = [Float](repeating: 0, count: 30 * 4), y = [Int32](repeating: 0, count: 30)
        try data.load(rows: Array(0..<30)[...], x: &x, y: &y)
        for column in 0..<4 {
            XCTAssertEqual((0..<30).reduce(0.0) { $0 + Double(x[$1 * 4 + column]) } / 30, 0, accuracy: 1e-5, "column \(column)")
        }

        try (lines + ["41,blue,heavy,cat"]).joined(separator: "\n").write(toFile: "\(directory)/bad.csv", atomically: true, encoding: .utf8)
        let bad = try runCohort(ranks: 1, ["prepare", "csv", "--input", "\(directory)/bad.csv", "--label", "kind",
                                           "--categorical", "colour", "--out", "\(directory)/bad"], directory: directory)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.error.contains("bad.csv: line 42: column 'weight' holds 'heavy', not a number"), bad.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(directory)/bad/train.h5"))
    }

    func test_aRegressionTableTrainsOnTwoRanksAndReportsRSquared() throws {
        let directory = try temporaryDirectory(self)
        var lines = ["a,b,target"]
        for row in 0..<200 {
            let (a, b) = (Double(row % 17) / 17, Double(row % 11) / 11)
            lines.append("\(a),\(b),\(3 * a - 2 * b + 10)")
        }
        try lines.joined(separator: "\n").write(toFile: "\(directory)/r.csv", atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["prepare", "csv", "--input", "\(directory)/r.csv", "--label", "target", "--regression",
                                                "--out", "\(directory)/r"], directory: directory).status, 0)
        try """
        name: r
        run_dir: \(directory)/run
        data: {train: \(directory)/r/train.h5, test: \(directory)/r/val.h5, features: features, normalize: standardize}
        model:
          layers:
            - {type: dense, units: 1}
        loss: mean_squared_error
        optimizer: {type: adam, learning_rate: 0.05}
        training: {epochs: 60, batch_size: 8}
        """.write(toFile: "\(directory)/r.yaml", atomically: true, encoding: .utf8)
        let run = try runCohort(ranks: 2, ["train", "\(directory)/r.yaml"], directory: directory)
        XCTAssertEqual(run.status, 0, run.error)
        let line = try XCTUnwrap(run.output.split(separator: "\n").first { $0.hasPrefix("test file: RMSE") })
        let rSquared = try XCTUnwrap(Double(line.components(separatedBy: "R² ")[1].split(separator: " ")[0]))
        XCTAssertGreaterThan(rSquared, 0.99, "a linear target is fitted: \(line)")

        // R² by its definition, from the predictions of the final checkpoint.
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        XCTAssertEqual(try runCohort(ranks: 1, ["predict", checkpoint, "--data", "\(directory)/r/val.h5", "--out", "\(directory)/p.h5"],
                                     directory: directory).status, 0)
        let predicted: [Float] = try HDF5File.open("\(directory)/p.h5").read("predictions").values
        let targets: [Float] = try HDF5File.open("\(directory)/r/val.h5").read("labels").values
        let mean = targets.reduce(0, +) / Float(targets.count)
        let residual = zip(predicted, targets).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        let total = targets.reduce(0.0) { $0 + Double(($1 - mean) * ($1 - mean)) }
        let evaluated = try runCohort(ranks: 2, ["evaluate", checkpoint], directory: directory)
        XCTAssertTrue(evaluated.output.contains(String(format: "R² %.4f", 1 - residual / total)), evaluated.output)
    }
}
