import Foundation
import XCTest
@testable import Cohort

/// Whole training runs of the built `cohort` executable under `mpirun`, on real HDF5 files.
final class MPITrainingTests: XCTestCase {
    private var directory = ""
    private var train = ""
    private var test = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 203, seed: 1)
        test = try writeSyntheticDataset("\(directory)/test.h5", rows: 50, seed: 2)
    }

    private func writeConfig(_ name: String, epochs: Int = 2, batchSize: Int = 8, optimizer: String = "adam", extra: String = "",
                             layers: String? = nil) throws -> String {
        let path = "\(directory)/\(name).yaml"
        try smallConfig(train: train, test: test, runDirectory: "\(directory)/runs/\(name)", epochs: epochs,
                        batchSize: batchSize, optimizer: optimizer, extra: extra, layers: layers)
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func train(ranks: Int, _ arguments: [String], environment: [String: String] = [:],
                       file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runCohort(ranks: ranks, ["train"] + arguments, environment: environment, directory: directory)
        XCTAssertEqual(result.status, 0, "cohort train failed:\n\(result.output)\n\(result.error)", file: file, line: line)
        return result
    }

    private func newestCheckpoint(_ name: String) throws -> String {
        let path = Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first
        return try XCTUnwrap(path, "no checkpoint in runs/\(name)")
    }

    /// 2 ranks × 16 against 1 rank × 32. On whole steps the same bits, with Adam and SGD: a
    /// rank's 16 rows are one block of every product (`RowBlocks`), and the all-reduce adds the
    /// two ranks' sums once, as the one rank adds its two blocks. With 203 rows an epoch ends on
    /// a step of 11 rows, which one rank sums at once and two ranks cut 6 + 5: SGD then stays
    /// within float32's bound for 32 terms a sum over the 14 steps.
    func test_twoRanksMatchOneRankWithDoubleBatch() throws {
        let partial = train
        train = try writeSyntheticDataset("\(directory)/train-256.h5", rows: 256, seed: 1)
        for optimizer in ["adam", "sgd"] {
            let two = try writeConfig("two-\(optimizer)", batchSize: 16, optimizer: optimizer)
            let one = try writeConfig("one-\(optimizer)", batchSize: 32, optimizer: optimizer)
            _ = try train(ranks: 2, [two])
            _ = try train(ranks: 1, [one])
            XCTAssertTrue(try checkpointParameters(try newestCheckpoint("two-\(optimizer)")) == checkpointParameters(try newestCheckpoint("one-\(optimizer)")),
                          "\(optimizer): 2 ranks × 16 differ from 1 rank × 32")
        }
        train = partial
        let two = try writeConfig("two-partial", batchSize: 16, optimizer: "sgd")
        let one = try writeConfig("one-partial", batchSize: 32, optimizer: "sgd")
        _ = try train(ranks: 2, [two])
        _ = try train(ranks: 1, [one])
        let difference = maxAbsoluteDifference(try checkpointParameters(try newestCheckpoint("two-partial")),
                                               try checkpointParameters(try newestCheckpoint("one-partial")))
        // Σ|terms| ≤ 8: standardized pixels (|x| ≤ 4 here) times |dL/dy| ≤ 2 (softmax's, through 16 ReLU units).
        XCTAssertLessThanOrEqual(difference, float32Bound(steps: 14, terms: 32, learningRate: 0.01, scale: 8))
        XCTAssertGreaterThan(difference, 0, "the partial steps are summed in another association")
    }

    /// W2's architecture (two convolutions, pooling, dense) on 6×6 synthetic images.
    private let convolutionLayers = """
        - {type: conv2d, filters: 4, kernel: 3, padding: same, activation: relu}
        - {type: max_pool, size: 2}
        - {type: conv2d, filters: 6, kernel: 3, padding: valid, activation: relu}
        - {type: flatten}
        - {type: dense, units: 8, activation: relu}
        - {type: dense, units: 4}
    """

    /// Bitwise: 16 samples a rank are one convolution chunk and one block of the dense layers'
    /// rows (`RowBlocks`), so the two ranks' partial sums are the one rank's two blocks, added
    /// once by the all-reduce as the one rank adds them (256 rows: no partial step). Adam, which
    /// turns any rounding difference of a near-zero gradient into a step of the learning rate.
    func test_convolutionalNetTwoRanksMatchOneRankWithDoubleBatch() throws {
        train = try writeSyntheticDataset("\(directory)/train-256.h5", rows: 256, seed: 1)
        let two = try writeConfig("cnn-two", batchSize: 16, extra: "  max_steps: 12", layers: convolutionLayers)
        let one = try writeConfig("cnn-one", batchSize: 32, extra: "  max_steps: 12", layers: convolutionLayers)
        _ = try train(ranks: 2, [two])
        _ = try train(ranks: 1, [one])
        XCTAssertTrue(try checkpointParameters(try newestCheckpoint("cnn-two")) == checkpointParameters(try newestCheckpoint("cnn-one")),
                      "2 ranks × 16 differ from 1 rank × 32")
    }

    /// The benchmark switch only adds a barrier: same parameters, and the per-rank timing line
    /// has one figure per rank.
    func test_timingBarrierChangesNothingButTheTimingLine() throws {
        let plain = try writeConfig("plain", epochs: 1)
        let timed = try writeConfig("timed", epochs: 1, extra: "  timing_barrier: true")
        let plainRun = try train(ranks: 2, [plain])
        let timedRun = try train(ranks: 2, [timed])
        XCTAssertEqual(try checkpointParameters(try newestCheckpoint("plain")), try checkpointParameters(try newestCheckpoint("timed")))
        XCTAssertTrue(plainRun.output.contains("(including the wait for the slowest rank)"), plainRun.output)
        let line = try XCTUnwrap(timedRun.output.split(separator: "\n").first { $0.hasPrefix("per step by rank") }, timedRun.output)
        let compute = try XCTUnwrap(line.split(separator: ";").first).split(separator: ",")
        XCTAssertEqual(compute.count, 2, String(line))
        XCTAssertTrue(line.contains("after a barrier that waited"), String(line))
    }

    func test_syncBatchNormTwoRanksMatchOneRankWithDoubleBatch() throws {
        let layers = """
            - {type: conv2d, filters: 4, kernel: 3, padding: same, bias: false}
            - {type: batch_norm, sync: true}
            - {type: relu}
            - {type: global_avg_pool}
            - {type: dense, units: 4}
        """
        let two = try writeConfig("bn-two", batchSize: 8, optimizer: "sgd", extra: "  max_steps: 9", layers: layers)
        let one = try writeConfig("bn-one", batchSize: 16, optimizer: "sgd", extra: "  max_steps: 9", layers: layers)
        _ = try train(ranks: 2, [two])
        _ = try train(ranks: 1, [one])
        let (twoRanks, oneRank) = (try newestCheckpoint("bn-two"), try newestCheckpoint("bn-one"))
        // Sums of 16 terms (rows, and the statistics' per-rank parts), 9 steps; Σ|terms| ≤ 8:
        // normalized activations (|x̂| ≤ 4 in a batch of 16) times |dL/dy| ≤ 2.
        XCTAssertLessThanOrEqual(maxAbsoluteDifference(try checkpointParameters(twoRanks), try checkpointParameters(oneRank)),
                                 float32Bound(steps: 9, terms: 16, learningRate: 0.01, scale: 8))
        // The running statistics are those of the global batch too.
        let stats = { (path: String) throws -> [Float] in try Checkpoint.read(from: path).tensors["buffers/batch_norm_1/running_var"]!.values }
        let (a, b) = (try stats(twoRanks), try stats(oneRank))
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5 * max(abs(y), 1)) }

        // Without sync each rank normalizes by its own half batch: the runs must differ,
        // which shows the test above can fail.
        let local = layers.replacingOnce("sync: true", with: "sync: false")
        let localTwo = try writeConfig("bn-local", batchSize: 8, optimizer: "sgd", extra: "  max_steps: 9", layers: local)
        _ = try train(ranks: 2, [localTwo])
        XCTAssertGreaterThan(maxRelativeDifference(try checkpointParameters(try newestCheckpoint("bn-local")),
                                                   try checkpointParameters(oneRank)), 1e-4)
    }

    func test_sharedMemoryAllReduceMatchesMPIAllreduce() throws {
        // Two ranks: a sum of two floats is exact in any order, so the parameters are bitwise equal.
        // Three: both sum in some order; replicas agree (CRC before each checkpoint) and stay close.
        for ranks in [2, 3] {
            let layers = ranks == 2 ? convolutionLayers : nil
            let optimizer = ranks == 2 ? "adam" : "sgd"
            let shared = try writeConfig("shared-\(ranks)", batchSize: 5, optimizer: optimizer, extra: "  all_reduce: auto", layers: layers)
            let mpi = try writeConfig("mpi-\(ranks)", batchSize: 5, optimizer: optimizer, extra: "  all_reduce: mpi", layers: layers)
            let sharedRun = try train(ranks: ranks, [shared])
            let mpiRun = try train(ranks: ranks, [mpi])
            XCTAssertTrue(sharedRun.output.contains("gradient all-reduce: node shared memory, \(ranks) ranks per node"), sharedRun.output)
            XCTAssertTrue(mpiRun.output.contains("gradient all-reduce: MPI_Allreduce"), mpiRun.output)
            let a = try checkpointParameters(try newestCheckpoint("shared-\(ranks)"))
            let b = try checkpointParameters(try newestCheckpoint("mpi-\(ranks)"))
            if ranks == 2 {
                XCTAssertTrue(a == b, "2 ranks: shared-memory all-reduce differs from MPI_Allreduce")
            } else {
                // 2 epochs of 14 steps (203 rows, 15 a step); Σ|terms| ≤ 8 as in the test above.
                XCTAssertLessThanOrEqual(maxAbsoluteDifference(a, b), float32Bound(steps: 28, terms: 15, learningRate: 0.01, scale: 8), "3 ranks")
            }
        }
    }

    func test_checkMPIFindsBothAllReducesExact() throws {
        let result = try runCohort(ranks: 3, ["check-mpi", "--repeats", "2", "--floats", "77"], directory: directory)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        XCTAssertTrue(result.output.contains("all-reduce sums exact on every rank: MPI_Allreduce, cohort all-reduce (node shared memory, 3 ranks per node)"),
                      result.output)
        XCTAssertTrue(result.output.split(separator: "\n").contains { $0.hasPrefix("cohort all-reduce") && $0.contains(" 308 bytes:") }, result.output)
    }

    func test_threeRanksTrainAndAgree() throws {
        // Replicas are compared (CRC of the parameters) before every checkpoint; a mismatch fails the run.
        let config = try writeConfig("three", batchSize: 5)
        let result = try train(ranks: 3, [config])
        XCTAssertTrue(result.output.contains("3 rank(s) × batch 5 = global batch 15"), result.output)
        XCTAssertTrue(result.output.contains("epoch 2/2"), result.output)
    }

    func test_eachRankReadsOnlyItsShardAndEveryRowOncePerEpoch() throws {
        let config = try writeConfig("shard", epochs: 1, batchSize: 8)
        let traces = "\(directory)/traces"
        try FileManager.default.createDirectory(atPath: traces, withIntermediateDirectories: true)
        _ = try train(ranks: 2, [config, "--set", "data.cache=false"], environment: ["COHORT_TRACE_READS": traces])
        let sampler = (0..<2).map { GlobalSampler(rows: 203, worldSize: 2, rank: $0, batchPerRank: 8, seed: 3, dropRemainder: false) }
        let order = sampler[0].order(epoch: 0)
        var union: [Int] = []
        for rank in 0..<2 {
            let text = try String(contentsOfFile: "\(traces)/rank-\(rank).txt", encoding: .utf8)
            let read = text.split(separator: "\n").compactMap { Int($0) }
            let expected = (0..<sampler[rank].stepsPerEpoch).flatMap { sampler[rank].batch(step: $0, order: order).mine }
            XCTAssertEqual(read.sorted(), expected.sorted(), "rank \(rank) read rows the sampler did not assign it")
            union += read
        }
        XCTAssertEqual(union.sorted(), Array(0..<203), "every training row exactly once per epoch across ranks")
    }

    func test_shardedModeReadsOnlyOwnBlocksWithBoundedBuffer() throws {
        let config = try writeConfig("sharded", epochs: 1, batchSize: 8)
        let traces = "\(directory)/sharded-traces"
        try FileManager.default.createDirectory(atPath: traces, withIntermediateDirectories: true)
        let result = try train(ranks: 2, [config, "--set", "data.sampling=sharded", "--set", "data.block_rows=16",
                                          "--set", "data.shuffle_buffer=40"], environment: ["COHORT_TRACE_READS": traces])
        XCTAssertTrue(result.output.contains("sharded sampling"), result.output)
        let peak = try XCTUnwrap(result.output.range(of: #"shuffle buffer peak (\d+) rows"#, options: .regularExpression).map { result.output[$0] })
        XCTAssertLessThanOrEqual(Int(peak.split(separator: " ")[3]) ?? 999, 40, String(peak))
        var union: [Int] = []
        for rank in 0..<2 {
            let sampler = ShardedSampler(rows: 203, worldSize: 2, rank: rank, batchPerRank: 8, blockRows: 16, bufferRows: 40, seed: 3, dropRemainder: false)
            let read = try String(contentsOfFile: "\(traces)/rank-\(rank).txt", encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
            let own = sampler.blocks(epoch: 0, rank: rank).flatMap { Array(sampler.block($0)) }
            XCTAssertEqual(read.sorted(), own.sorted(), "rank \(rank) reads exactly its blocks, once")
            union += read
        }
        XCTAssertEqual(union.sorted(), Array(0..<203))
    }

    func test_validationSplitHoldsOutTheLastRowsAndAugmentationTrains() throws {
        let config = try writeConfig("validation", epochs: 2, batchSize: 8)
        let traces = "\(directory)/validation-traces"
        try FileManager.default.createDirectory(atPath: traces, withIntermediateDirectories: true)
        let result = try train(ranks: 2, [config, "--set", "data.validation_split=0.2", "--set", "data.cache=false",
                                          "--set", "data.augment={crop_padding: 1, horizontal_flip: true}"],
                               environment: ["COHORT_TRACE_READS": traces])
        // 203 rows: the last 41 are validation rows, never trained on.
        XCTAssertTrue(result.output.contains("162 training rows, 41 validation rows"), result.output)
        XCTAssertTrue(result.output.contains("validation accuracy"), result.output)
        for rank in 0..<2 {
            let read = try String(contentsOfFile: "\(traces)/rank-\(rank).txt", encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
            XCTAssertTrue(read.allSatisfy { $0 < 162 }, "rank \(rank) trained on a validation row")
        }
        let csv = try String(contentsOfFile: "\(directory)/runs/validation/metrics.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 3)
    }

    func test_resumeFromEpochCheckpointMatchesUninterruptedRun() throws {
        let full = try writeConfig("full", epochs: 3)
        _ = try train(ranks: 2, [full])
        let stopped = try writeConfig("stopped", epochs: 3)
        _ = try train(ranks: 2, [stopped, "--set", "training.epochs=1"])
        let resumed = try train(ranks: 2, [stopped, "--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 2, step 0"), resumed.output)
        XCTAssertFalse(resumed.output.contains("epoch 1/3"), "epoch 1 ran again:\n\(resumed.output)")
        XCTAssertEqual(try checkpointParameters(try newestCheckpoint("full")), try checkpointParameters(try newestCheckpoint("stopped")))
    }

    func test_resumeMidEpochMatchesUninterruptedRun() throws {
        let full = try writeConfig("full-mid", epochs: 2)
        _ = try train(ranks: 2, [full])
        let stopped = try writeConfig("mid", epochs: 2)
        _ = try train(ranks: 2, [stopped, "--set", "training.max_steps=17"])  // 13 steps per epoch: stops in epoch 2
        let checkpoint = try Checkpoint.read(from: try newestCheckpoint("mid"))
        XCTAssertEqual(checkpoint.position, Checkpoint.Position(epoch: 1, stepInEpoch: 4, globalStep: 17, samplesSeen: 203 + 4 * 16))
        let resumed = try train(ranks: 2, [stopped, "--resume", try newestCheckpoint("mid")])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 2, step 4"), resumed.output)
        XCTAssertEqual(try checkpointParameters(try newestCheckpoint("full-mid")), try checkpointParameters(try newestCheckpoint("mid")))
    }

    func test_checkpointHasDocumentedLayout() throws {
        let config = try writeConfig("layout", epochs: 1)
        _ = try train(ranks: 2, [config])
        let file = try HDF5File.open(try newestCheckpoint("layout"))
        XCTAssertEqual(try file.dataset("parameters/dense_1/weight").shape, [36, 16])
        XCTAssertEqual(try file.dataset("parameters/dense_2/bias").shape, [4])
        XCTAssertEqual(try file.dataset("optimizer/adam_v/dense_1/weight").shape, [36, 16])
        XCTAssertEqual(try file.stringAttribute("format"), "cohort-checkpoint")
        XCTAssertTrue(try file.stringAttribute("config").contains("run_dir"))
        XCTAssertEqual(try file.numberAttribute("epoch", as: Int64.self), [1])
    }

    // MARK: Bad input ends the job with one clear line, never a crash or a hang

    private func assertFails(ranks: Int = 2, _ arguments: [String], mentions fragments: [String],
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try runCohort(ranks: ranks, arguments, directory: directory)
        XCTAssertNotEqual(result.status, 0, "expected failure:\n\(result.output)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(result.error.contains(fragment), "stderr lacks '\(fragment)':\n\(result.error)", file: file, line: line)
        }
        XCTAssertFalse(result.error.contains("Fatal error"), result.error, file: file, line: line)
        let reports = result.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }
        XCTAssertEqual(reports.count, 1, "one report, not one per rank:\n\(result.error)", file: file, line: line)
    }

    func test_missingDatasetFileIsReportedOnce() throws {
        let config = try writeConfig("missing")
        try assertFails(["train", config, "--set", "data.train=\(directory)/nope.h5"], mentions: ["nope.h5: no such file"])
    }

    func test_malformedConfigIsReported() throws {
        let path = "\(directory)/broken.yaml"
        try "data: [train\nmodel: {".write(toFile: path, atomically: true, encoding: .utf8)
        try assertFails(["train", path], mentions: ["broken.yaml", "malformed YAML"])
    }

    func test_unknownLayerIsReported() throws {
        let config = try writeConfig("layer")
        let text = try String(contentsOfFile: config, encoding: .utf8).replacingOnce("type: dense\n      units: 4", with: "type: conv9\n      units: 4")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        try assertFails(["train", config], mentions: ["model.layers[1].type", "conv9"])
    }

    func test_labelOutsideClassRangeIsReported() throws {
        let file = try HDF5File.create("\(directory)/badlabels.h5")
        try file.write("images", [UInt8](repeating: 1, count: 64 * 36), shape: [64, 6, 6, 1])
        try file.write("labels", (0..<64).map { Int64($0 % 4 == 3 ? 9 : $0 % 4) }, shape: [64])
        try file.setAttribute("num_classes", [Int64(4)])
        file.close()
        let config = try writeConfig("labels")
        try assertFails(["train", config, "--set", "data.train=\(directory)/badlabels.h5"],
                        mentions: ["badlabels.h5", "label 9, outside [0, 4)"])
    }

    func test_checkpointForAnotherModelIsRefusedWithNamesAndShapes() throws {
        let config = try writeConfig("small-model", epochs: 1)
        _ = try train(ranks: 1, [config])
        let wider = try writeConfig("wider", epochs: 1)
        let text = try String(contentsOfFile: wider, encoding: .utf8).replacingOnce("units: 16", with: "units: 32")
        try text.write(toFile: wider, atomically: true, encoding: .utf8)
        try assertFails(["train", wider, "--resume", try newestCheckpoint("small-model")],
                        mentions: ["does not fit this model", "dense_1/weight: checkpoint [36, 16], model [36, 32]"])
    }
}
