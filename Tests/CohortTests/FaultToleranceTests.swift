import Foundation
import XCTest
@testable import Cohort

/// Exact resume and failure handling of whole `cohort train` jobs under mpirun.
final class FaultToleranceTests: XCTestCase {
    private var directory = ""
    private var train = ""

    /// Dropout, augmentation and Adam with a warm-up schedule: every piece of state a resume must restore.
    private let layers = """
        - {type: dense, units: 24, activation: relu}
        - {type: dropout, rate: 0.3}
        - {type: dense, units: 4}
    """
    private let optimizerExtra = """
    checkpoint:
      keep_last: 10
    """

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 203, seed: 1)
        _ = try writeSyntheticDataset("\(directory)/test.h5", rows: 50, seed: 2)
    }

    private func config(_ name: String, epochs: Int = 3, logEvery: Int = 0) throws -> String {
        let path = "\(directory)/\(name).yaml"
        var text = smallConfig(train: train, test: "\(directory)/test.h5", runDirectory: "\(directory)/runs/\(name)", epochs: epochs,
                               batchSize: 8, extra: optimizerExtra, layers: layers)
        text = text.replacingOnce("  learning_rate: 0.01", with: "  learning_rate: 0.01\n  schedule: {type: warmup_cosine, warmup_steps: 10}")
        text = text.replacingOnce("  train: \(train)", with: "  train: \(train)\n  augment: {crop_padding: 1, horizontal_flip: true}")
        if logEvery > 0 { text = text.replacingOnce("  eval_batch_size: 64", with: "  eval_batch_size: 64\n  log_every: \(logEvery)") }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func checkpoints(_ name: String) -> [String] { Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints") }

    private func finalParameters(_ name: String) throws -> [String: [Float]] {
        try checkpointParameters(try XCTUnwrap(checkpoints(name).first, "no checkpoint for \(name)"))
    }

    private func run(ranks: Int, _ arguments: [String], environment: [String: String] = [:],
                     file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runCohort(ranks: ranks, ["train"] + arguments, environment: environment, directory: directory)
        XCTAssertEqual(result.status, 0, "\(result.output)\n\(result.error)", file: file, line: line)
        return result
    }

    func test_resumeIsBitwiseIdenticalWithDropoutAugmentationAndWarmupAtOneAndTwoRanks() throws {
        for ranks in [1, 2] {
            let full = try config("full-\(ranks)")
            _ = try run(ranks: ranks, [full])
            let reference = try finalParameters("full-\(ranks)")

            // Stopped at an epoch boundary (the last step of epoch 1), resumed to the end.
            let stepsPerEpoch = (203 + 8 * ranks - 1) / (8 * ranks)
            let epoch = try config("epoch-\(ranks)")
            _ = try run(ranks: ranks, [epoch, "--set", "training.max_steps=\(stepsPerEpoch)"])
            _ = try run(ranks: ranks, [epoch, "--resume", "auto"])
            XCTAssertTrue(try finalParameters("epoch-\(ranks)") == reference, "\(ranks) rank(s), stopped after epoch 1")

            // Stopped mid-epoch (step 19 of 13-per-epoch at 2 ranks, 26 at 1), resumed twice.
            let middle = try config("middle-\(ranks)")
            _ = try run(ranks: ranks, [middle, "--set", "training.max_steps=19"])
            _ = try run(ranks: ranks, [middle, "--resume", "auto", "--set", "training.max_steps=33"])
            _ = try run(ranks: ranks, [middle, "--resume", "auto"])
            XCTAssertTrue(try finalParameters("middle-\(ranks)") == reference, "\(ranks) rank(s), stopped mid-epoch")
        }
    }

    func test_sigtermToOneRankCheckpointsEveryRankAndResumesExactly() throws {
        // Long enough (400 epochs of 13 steps) that the signal lands while the job runs.
        let full = try config("reference", epochs: 400)
        _ = try run(ranks: 2, [full, "--quiet"])
        let stopped = try config("sigterm", epochs: 400, logEvery: 1)
        // Slow the job down so the signal lands mid-run: a large evaluation after each epoch is not
        // needed; the steps are printed one by one and the signal follows step 20.
        let job = try CohortJob(ranks: 2, ["train", stopped], directory: directory)
        XCTAssertTrue(job.waitForOutput("epoch 2/400 step 7/", seconds: 60), job.output + job.error)
        let ranks = job.rankProcesses()
        XCTAssertEqual(ranks.count, 2, "rank processes of mpirun")
        kill(try XCTUnwrap(ranks.last), SIGTERM)
        let status = job.wait(seconds: 30)
        XCTAssertEqual(status, 75, "documented exit status after a stop signal\n\(job.output)\n\(job.error)")
        XCTAssertTrue(job.output.contains("stopped by signal"), job.output)
        let saved = try Checkpoint.read(from: try XCTUnwrap(checkpoints("sigterm").first))
        XCTAssertGreaterThan(saved.position.stepInEpoch, 0, "a mid-epoch checkpoint")
        _ = try run(ranks: 2, [stopped, "--resume", "auto", "--quiet"])
        XCTAssertTrue(try finalParameters("sigterm") == finalParameters("reference"), "resumed after SIGTERM differs")
    }

    func test_killDuringCheckpointWriteLeavesThePreviousOneUsable() throws {
        let name = "killed"
        let path = try config(name, epochs: 3)
        // Epoch checkpoints at steps 13 and 26; rank 0 is killed while writing step 26's.
        let result = try runCohort(ranks: 2, ["train", path], environment: ["COHORT_FAULT": "kill_checkpoint:0:26"], directory: directory)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertEqual(checkpoints(name).map { URL(fileURLWithPath: $0).lastPathComponent }, ["checkpoint-00000013.h5"])
        guard !checkpoints(name).isEmpty else { return }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(directory)/runs/\(name)/checkpoints").filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers.count, 1, "the half-written file is left under a temporary name, never as a checkpoint")
        XCTAssertNoThrow(try Checkpoint.read(from: checkpoints(name)[0]))
        let resumed = try run(ranks: 2, [path, "--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 2, step 0"), resumed.output)
    }

    func test_damagedNewestCheckpointFallsBackToThePreviousOne() throws {
        let name = "damaged"
        let path = try config(name, epochs: 2)
        _ = try run(ranks: 2, [path])
        let newest = try XCTUnwrap(checkpoints(name).first)
        // Flip bytes inside the stored weights (silent corruption: HDF5 itself still opens the file).
        let offset = try XCTUnwrap(try HDF5File.open(newest).dataset("parameters/dense_1/weight").fileOffset)
        var bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: newest)))
        for index in offset..<(offset + 16) { bytes[index] ^= 0x5A }
        _ = FileManager.default.createFile(atPath: newest, contents: Data(bytes))
        let resumed = try run(ranks: 2, [path, "--resume", "auto", "--set", "training.epochs=3"])
        XCTAssertTrue(resumed.output.contains("skipping \(newest)"), resumed.output)
        XCTAssertTrue(resumed.output.contains("resumed at epoch 2, step 0"), resumed.output)

        // Truncated: refused too.
        let truncated = try XCTUnwrap(checkpoints(name).first)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: truncated))
        _ = FileManager.default.createFile(atPath: truncated, contents: data.prefix(data.count / 3))
        let refused = try runCohort(ranks: 2, ["train", path, "--resume", truncated], directory: directory)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains(truncated), refused.error)
    }

    func test_fullDiskIsAnErrorThatKeepsEarlierCheckpoints() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root to mount a small tmpfs") }
        let disk = "\(directory)/small-disk"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mount = try runProcess(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", disk])
        guard mount == 0 else { throw XCTSkip("cannot mount a tmpfs here") }
        defer { _ = try? runProcess(["umount", disk]) }
        let path = try config("full", epochs: 2)
        _ = try run(ranks: 2, [path, "--set", "run_dir=\(disk)/run", "--set", "training.epochs=1", "--set", "tensorboard=false"])
        let first = try XCTUnwrap(Trainer.checkpoints(in: "\(disk)/run/checkpoints").first)
        // Fill the disk, then ask for the next checkpoint.
        _ = try runProcess(["dd", "if=/dev/zero", "of=\(disk)/filler", "bs=4k"])
        let result = try runCohort(ranks: 2, ["train", path, "--set", "run_dir=\(disk)/run", "--set", "tensorboard=false", "--resume", "auto"],
                                   directory: directory)
        XCTAssertEqual(result.status, 1, result.output)
        // One line (the run's first write that finds no room: its config.yaml), and no crash.
        XCTAssertEqual(result.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }.count, 1, result.error)
        XCTAssertFalse(result.error.contains("crashed"), result.error)
        XCTAssertEqual(Trainer.checkpoints(in: "\(disk)/run/checkpoints"), [first])
        XCTAssertNoThrow(try Checkpoint.read(from: first))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(disk)/run/checkpoints").filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "the failed temporary file is removed")
    }

    private func runProcess(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    func test_aFailingRankEndsTheJobQuicklyNamingTheRank() throws {
        let path = try config("fault")
        let started = Date()
        let job = try CohortJob(ranks: 2, ["train", path], environment: ["COHORT_FAULT": "error:1:5"], directory: directory)
        let status = job.wait(seconds: 30)
        XCTAssertNotNil(status, "the job hung")
        XCTAssertNotEqual(status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30)
        XCTAssertTrue(job.error.contains("cohort: rank 1: injected fault at step 5"), job.error)
    }

    /// A damaged gzip chunk that one rank's loader thread meets mid-epoch (a file another tool
    /// wrote: no Cohort checksum, so nothing finds it before the read): the batch arrives as
    /// zeros carrying the failure, every rank learns of it in the step's agreement, and the rank
    /// that read it prints the one line, naming the file, the dataset and the row.
    func test_aDamagedChunkReadByOneRankEndsTheJobWithOneLineNamingTheRows() throws {
        let path = "\(directory)/gzip.h5"
        try SyntheticImages.write(to: path, rows: 512, height: 6, width: 6, channels: 1, classes: 4, seed: 5, chunkRows: 16, gzipLevel: 6)
        let chunk = try XCTUnwrap(try HDF5File.open(path).dataset("images").chunkLocation(row: 400))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes = bytes.prefix(bytes.count - FileIntegrity.trailerSize)  // as another tool writes it
        for index in 0..<8 { bytes[chunk.offset + chunk.size / 2 + index] ^= 0xFF }
        try bytes.write(to: URL(fileURLWithPath: path))
        for sampling in ["global", "sharded"] {
            let text = smallConfig(train: path, test: nil, runDirectory: "\(directory)/runs/damaged-\(sampling)", epochs: 3)
            let config = "\(directory)/damaged-\(sampling).yaml"
            try text.replacingOnce("  train: \(path)", with: "  train: \(path)\n  cache: false\n  sampling: \(sampling)\n  block_rows: 16")
                .write(toFile: config, atomically: true, encoding: .utf8)
            let job = try runCohort(ranks: 2, ["train", config], directory: directory)
            XCTAssertEqual(job.status, 1, job.output + job.error)
            let lines = job.error.split(separator: "\n").filter { !$0.hasPrefix("-") && !$0.isEmpty }
            let cohortLines = lines.filter { $0.hasPrefix("cohort") }
            XCTAssertEqual(cohortLines.count, 1, "\(sampling): \(job.error)")
            XCTAssertTrue(cohortLines.first?.contains("\(path): cannot read ") == true && cohortLines.first?.contains(" of dataset 'images' (damaged") == true,
                          "\(sampling): \(job.error)")
            let named = cohortLines.first.flatMap { line in (400..<416).first { line.contains("row \($0) ") } } != nil
            XCTAssertTrue(named || job.error.contains("rows 400..<416 "), "\(sampling): the damaged chunk's rows\n\(job.error)")
            XCTAssertFalse(job.error.contains("MPI_ABORT") || job.error.contains("ORTE_ERROR_LOG"), "\(sampling): \(job.error)")
        }
    }

    func test_sigkillOfOneRankEndsTheWholeJob() throws {
        let path = try config("sigkill", epochs: 5000, logEvery: 1)
        let job = try CohortJob(ranks: 2, ["train", path], directory: directory)
        XCTAssertTrue(job.waitForOutput("step 3/", seconds: 60), job.output + job.error)
        let ranks = job.rankProcesses()
        kill(try XCTUnwrap(ranks.last), SIGKILL)
        let status = job.wait(seconds: 30)
        XCTAssertNotNil(status, "mpirun did not end after a rank was killed")
        XCTAssertNotEqual(status, 0)
        usleep(1_000_000)
        for pid in ranks {
            // Gone, or a zombie about to be reaped: never a live rank.
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: " ")[2]
            XCTAssertTrue(state == nil || state == "Z", "rank process \(pid) left behind in state \(state ?? "")")
        }
    }

    /// The first step's products are checked against float64 on every rank: a library that
    /// computes a wrong element ends the run in one line naming the rank, the kernels and the
    /// call, before any checkpoint; a correct one passes, and `check-blas --verify` checks the
    /// same calls element by element.
    func test_wrongBLASResultsEndTheRunNamingTheCall() throws {
        let path = try config("blas")
        let wrong = try runCohort(ranks: 2, ["train", path], environment: ["COHORT_FAULT": "wrong_blas:1:1"], directory: directory)
        XCTAssertEqual(wrong.status, 1)
        let lines = wrong.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }
        XCTAssertEqual(lines.count, 1, wrong.error)
        XCTAssertTrue(lines.first?.contains("cohort: rank 1: OpenBLAS ") == true && lines.first?.contains(" kernels on ") == true
                      && lines.first?.contains("computes C[0, 0] = ") == true && lines.first?.contains("sgemm(") == true, wrong.error)
        XCTAssertTrue(checkpoints("blas").isEmpty, "no checkpoint written")

        let verified = try runCohort(ranks: 1, ["check-blas", "--verify", path], directory: directory)
        XCTAssertEqual(verified.status, 0, verified.output + verified.error)
        XCTAssertTrue(verified.output.contains("distinct SGEMM calls in a step of batch"), verified.output)
        XCTAssertTrue(verified.output.contains("every element of every call within float32 rounding of float64"), verified.output)
        XCTAssertFalse(verified.output.contains("WRONG"), verified.output)
    }

    func test_nonFiniteGradientStopsWithTheStepOrIsSkipped() throws {
        let path = try config("nan")
        let stopped = try runCohort(ranks: 2, ["train", path], environment: ["COHORT_FAULT": "nan:1:4"], directory: directory)
        XCTAssertEqual(stopped.status, 1)
        XCTAssertTrue(stopped.error.contains("step 4: non-finite gradient"), stopped.error)
        XCTAssertTrue(checkpoints("nan").isEmpty, "no checkpoint written")

        let skipped = try run(ranks: 2, [path, "--set", "training.on_nonfinite=skip_step"], environment: ["COHORT_FAULT": "nan:1:4"])
        XCTAssertTrue(skipped.output.contains("step 4: non-finite gradient; update skipped"), skipped.output)
        let parameters = try finalParameters("nan")
        XCTAssertTrue(parameters.values.allSatisfy { $0.allSatisfy(\.isFinite) })
    }

    func test_timedCheckpointsAreDecidedByRankZeroAndBestIsKept() throws {
        let path = try config("timed", epochs: 3)
        _ = try run(ranks: 2, [path, "--set", "checkpoint.every_seconds=0.000001", "--set", "checkpoint.keep_last=100",
                               "--set", "checkpoint.keep_best=true", "--set", "checkpoint.monitor=train_loss"])
        // Rank 0's clock is always past the interval: a checkpoint after every one of the 39 steps.
        XCTAssertEqual(checkpoints("timed").count, 39)
        let best = try Checkpoint.read(from: "\(directory)/runs/timed/checkpoints/best.h5")
        let losses = try XCTUnwrap(try Checkpoint.read(from: try XCTUnwrap(checkpoints("timed").first)).metrics["train_loss"])
        XCTAssertEqual(best.position.epoch, losses.firstIndex(of: losses.min()!)! + 1, "best.h5 is the epoch with the lowest train loss")
    }

    func test_resumeOnAnotherRankCountContinuesFromTheSameSamples() throws {
        let path = try config("reshape", epochs: 2)
        _ = try run(ranks: 2, [path, "--set", "training.max_steps=4"])      // 4 steps × 16 = 64 samples
        let resumed = try run(ranks: 1, [path, "--resume", "auto"])          // 1 rank × 8: step 8 of 26
        XCTAssertTrue(resumed.output.contains("global batch changes from 16 (2 × 8) to 8 (1 × 8)"), resumed.output)
        XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 8"), resumed.output)
    }
}
