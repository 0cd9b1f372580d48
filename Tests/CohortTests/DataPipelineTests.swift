import Foundation
import XCTest
@testable import Cohort

/// The loader on a file whose single feature is the row's own index, so every batch says which
/// rows it holds.
final class DataPipelineTests: XCTestCase {
    private var directory = ""
    private var path = ""
    private let rows = 1000

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        path = "\(directory)/ids.h5"
        let file = try HDF5File.create(path)
        try file.write("features", (0..<rows).map { Float($0) }, shape: [rows, 1], chunkRows: 64)
        try file.write("labels", (0..<rows).map { Int64($0 % 3) }, shape: [rows])
        file.close()
    }

    private func data() throws -> LabeledData {
        try LabeledData(path: path, featuresName: "features", labelsName: "labels", normalization: .none, cache: false)
    }

    /// Every batch's rows for one rank and epoch, as the loader delivers them.
    private func epochRows(_ loader: BatchLoader, epoch: Int, from step: Int = 0) throws -> [[Int]] {
        loader.beginEpoch(epoch, from: step)
        defer { loader.endEpoch() }
        var batches: [[Int]] = []
        for _ in step..<loader.stepsPerEpoch(epoch) {
            let batch = try loader.next()
            batches.append((0..<batch.count).map { Int(batch.x[$0]) })
            loader.release(batch)
        }
        return batches
    }

    private func sharded(rank: Int, ranks: Int, buffer: Int = 200, batch: Int = 16) -> ShardedSampler {
        ShardedSampler(rows: rows, worldSize: ranks, rank: rank, batchPerRank: batch, blockRows: 64, bufferRows: buffer, seed: 5, dropRemainder: false)
    }

    func test_shardedEveryRowOncePerEpochAcrossRanksReadingOnlyOwnBlocks() throws {
        for ranks in [1, 2, 3] {
            var all: [Int] = []
            var steps: Set<Int> = []
            for rank in 0..<ranks {
                let sampler = sharded(rank: rank, ranks: ranks)
                let loader = BatchLoader(data: try data(), plan: .sharded(sampler), batchSize: 16, augmenter: nil, prefetch: true)
                loader.readLog = []
                let batches = try epochRows(loader, epoch: 2)
                steps.insert(batches.count)
                all += batches.flatMap { $0 }
                let ownBlocks = Set(sampler.blocks(epoch: 2, rank: rank).flatMap { Array(sampler.block($0)) })
                XCTAssertEqual(Set(loader.readLog ?? []), ownBlocks, "rank \(rank) of \(ranks) read rows outside its blocks")
                XCTAssertEqual(loader.readLog?.count, ownBlocks.count, "each block read once")
                XCTAssertLessThanOrEqual(loader.peakBufferRows, 200, "memory bounded by the shuffle buffer")
            }
            XCTAssertEqual(all.sorted(), Array(0..<rows), "\(ranks) ranks")
            XCTAssertEqual(steps.count, 1, "every rank takes the same number of steps")
        }
    }

    func test_shardedOrderRepeatsOnRerunAndChangesWithTheEpoch() throws {
        let loader = BatchLoader(data: try data(), plan: .sharded(sharded(rank: 1, ranks: 2)), batchSize: 16, augmenter: nil, prefetch: true)
        let first = try epochRows(loader, epoch: 0)
        XCTAssertEqual(try epochRows(loader, epoch: 0), first)
        XCTAssertNotEqual(try epochRows(loader, epoch: 1), first)
        // Resuming mid-epoch replays the buffer and continues with exactly the same batches.
        XCTAssertEqual(try epochRows(loader, epoch: 0, from: 7), Array(first[7...]))
    }

    func test_shardedBufferIsBoundedWhateverTheFileSize() throws {
        let loader = BatchLoader(data: try data(), plan: .sharded(sharded(rank: 0, ranks: 1, buffer: 100)), batchSize: 16, augmenter: nil, prefetch: false)
        _ = try epochRows(loader, epoch: 0)
        XCTAssertLessThanOrEqual(loader.peakBufferRows, 100)
        XCTAssertGreaterThan(loader.peakBufferRows, 63)
        XCTAssertEqual(loader.bufferBytes, 100 * 1 * 4)
    }

    func test_globalModeDeliversTheSamplersBatchesInOrder() throws {
        let sampler = GlobalSampler(rows: rows, worldSize: 2, rank: 1, batchPerRank: 16, seed: 9, dropRemainder: false)
        let loader = BatchLoader(data: try data(), plan: .global(sampler), batchSize: 16, augmenter: nil, prefetch: true)
        let order = sampler.order(epoch: 3)
        let expected = (0..<sampler.stepsPerEpoch).map { Array(sampler.batch(step: $0, order: order).mine) }
        XCTAssertEqual(try epochRows(loader, epoch: 3), expected)
        XCTAssertEqual(try epochRows(loader, epoch: 3, from: 10), Array(expected[10...]))
    }

    func test_prefetchThreadErrorsSurfaceWithFileAndRow() throws {
        let bad = "\(directory)/nan.h5"
        let file = try HDF5File.create(bad)
        var values = (0..<rows).map { Float($0) }
        values[617] = .nan
        try file.write("features", values, shape: [rows, 1], chunkRows: 64)
        try file.write("labels", (0..<rows).map { Int64($0 % 3) }, shape: [rows])
        file.close()
        let data = try LabeledData(path: bad, featuresName: "features", labelsName: "labels", normalization: .none, cache: false, checkFinite: false)
        let sampler = GlobalSampler(rows: rows, worldSize: 1, rank: 0, batchPerRank: 50, seed: 1, dropRemainder: false)
        let loader = BatchLoader(data: data, plan: .global(sampler), batchSize: 50, augmenter: nil, prefetch: true)
        loader.beginEpoch(0, from: 0)
        var message = ""
        do {
            for _ in 0..<sampler.stepsPerEpoch {
                let batch = try loader.next()
                loader.release(batch)
            }
        } catch {
            message = "\(error)"
        }
        loader.endEpoch()
        XCTAssertTrue(message.contains("nan.h5") && message.contains("row 617"), message)
        // And the check before training catches it when it is on (the default).
        XCTAssertThrowsError(try LabeledData(path: bad, featuresName: "features", labelsName: "labels", normalization: .none, cache: false)) {
            XCTAssertTrue("\($0)".contains("row 617"), "\($0)")
        }
    }

    func test_augmentationIsReproducibleAndChangesWithTheEpoch() {
        let augmenter = Augmenter(augmentation: Augmentation(cropPadding: 2, horizontalFlip: true), shape: [1, 6, 6], seed: 3, rank: 0)
        let original = (0..<(4 * 36)).map { Float($0 % 36 + 1) }
        func augmented(epoch: Int, step: Int, rank: Int = 0) -> [Float] {
            var x = original
            Augmenter(augmentation: augmenter.augmentation, shape: [1, 6, 6], seed: 3, rank: rank)
                .apply(&x, batch: 4, epoch: epoch, step: step)
            return x
        }
        XCTAssertEqual(augmented(epoch: 1, step: 2), augmented(epoch: 1, step: 2))
        XCTAssertNotEqual(augmented(epoch: 1, step: 2), augmented(epoch: 2, step: 2))
        XCTAssertNotEqual(augmented(epoch: 1, step: 2), augmented(epoch: 1, step: 2, rank: 1))
        XCTAssertNotEqual(augmented(epoch: 1, step: 2), original)
        // A pure flip (no crop) mirrors each row.
        var flipped: [Float] = (0..<36).map { Float($0) }
        var generator = 0
        repeat {
            flipped = (0..<36).map { Float($0) }
            Augmenter(augmentation: Augmentation(horizontalFlip: true), shape: [1, 6, 6], seed: 3, rank: 0).apply(&flipped, batch: 1, epoch: 0, step: generator)
            generator += 1
        } while flipped[0] == 0 && generator < 50
        XCTAssertEqual(Array(flipped[0..<6]), [5, 4, 3, 2, 1, 0])
    }
}

/// Float targets: regression with mean squared error, across ranks.
final class RegressionTests: XCTestCase {
    /// y = A·x + b for x in [−1, 1]⁴, two targets per row.
    private func writeRegression(_ path: String, rows: Int, seed: UInt64, nanAt: Int? = nil) throws {
        var generator = Generator(seed: seed)
        var x: [Float] = []
        var y: [Float] = []
        for _ in 0..<rows {
            let row = (0..<4).map { _ in generator.nextUnitFloat() * 2 - 1 }
            x += row
            y += [0.5 * row[0] - row[1] + 0.25, row[2] * 0.8 + row[3] * 0.3 - 0.1]
        }
        if let nanAt { y[nanAt * 2] = .nan }
        let file = try HDF5File.create(path)
        try file.write("features", x, shape: [rows, 4])
        try file.write("targets", y, shape: [rows, 2])
        file.close()
    }

    func test_floatTargetsTrainWithMeanSquaredErrorAndRanksAgree() throws {
        let directory = try temporaryDirectory(self)
        try writeRegression("\(directory)/train.h5", rows: 256, seed: 1)
        try writeRegression("\(directory)/test.h5", rows: 64, seed: 2)
        func config(_ name: String, batch: Int) throws -> String {
            let path = "\(directory)/\(name).yaml"
            try """
            seed: 1
            run_dir: \(directory)/runs/\(name)
            data: {train: \(directory)/train.h5, test: \(directory)/test.h5, features: features, labels: targets, normalize: none}
            model:
              layers: [{type: dense, units: 16, activation: tanh}, {type: dense, units: 2}]
            loss: mean_squared_error
            optimizer: {type: adam, learning_rate: 0.02}
            training: {epochs: 30, batch_size: \(batch)}
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let two = try runCohort(ranks: 2, ["train", try config("two", batch: 16), "--quiet"], directory: directory)
        let one = try runCohort(ranks: 1, ["train", try config("one", batch: 32), "--quiet"], directory: directory)
        XCTAssertEqual(two.status, 0, two.error)
        XCTAssertEqual(one.status, 0, one.error)
        XCTAssertFalse(two.output.contains("accuracy"), "regression reports losses only:\n\(two.output)")
        let losses = two.output.split(separator: "\n").compactMap { line -> Double? in
            guard let range = line.range(of: #"test loss ([\d.]+)"#, options: .regularExpression) else { return nil }
            return Double(line[range].split(separator: " ")[2])
        }
        XCTAssertEqual(losses.count, 30)
        XCTAssertLessThan(losses.last!, losses.first! * 0.2, "the linear map is learned: \(losses)")
        let a = try checkpointParameters(try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/two/checkpoints").first))
        let b = try checkpointParameters(try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/one/checkpoints").first))
        XCTAssertLessThanOrEqual(maxRelativeDifference(a, b), 1e-4, "2 ranks × 16 against 1 rank × 32 after 240 steps")
    }

    func test_nonFiniteTargetsAndWrongLossAreRefused() throws {
        let directory = try temporaryDirectory(self)
        try writeRegression("\(directory)/nan.h5", rows: 10, seed: 1, nanAt: 7)
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/nan.h5", featuresName: "features", labelsName: "targets",
                                             normalization: .none, cache: true)) {
            XCTAssertTrue("\($0)".contains("row 7 holds a NaN or infinite target"), "\($0)")
        }
        try writeRegression("\(directory)/ok.h5", rows: 64, seed: 1)
        let path = "\(directory)/c.yaml"
        try """
        data: {train: \(directory)/ok.h5, features: features, labels: targets, normalize: none}
        run_dir: \(directory)/run
        model: {layers: [{type: dense, units: 2}]}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runCohort(ranks: 1, ["train", path], directory: directory)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.error.contains("use loss: mean_squared_error"), result.error)
    }
}
