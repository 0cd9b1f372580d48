import Foundation
import XCTest
@testable import Cohort

/// Cases of the reliability catalog: what a hostile input or an unlucky run must not do.
final class ReliabilityTests: XCTestCase {
    private var directory = ""
    private var train = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 64, seed: 1)
    }

    private func config(_ name: String, maxSteps: Int) throws -> String {
        let path = "\(directory)/\(name).yaml"
        try smallConfig(train: train, test: train, runDirectory: "\(directory)/runs/\(name)", epochs: 3, extra: "  max_steps: \(maxSteps)")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func checkpoint(_ name: String) throws -> String {
        try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first)
    }

    func test_aDuplicateKeyIsRefusedWithBothLines() {
        let text = "data: {train: t.h5}\nmodel:\n  layers: [{type: dense, units: 2}]\noptimizer:\n  learning_rate: 0.1\n  learning_rate: 0.2\n"
        XCTAssertThrowsError(try TrainConfig.parse(text: text, file: "twice.yaml")) {
            XCTAssertEqual("\($0)", "twice.yaml:6: optimizer.learning_rate is given twice (first on line 5)")
        }
    }

    func test_outputsThatNameAnInputAreRefusedAndTheInputSurvives() throws {
        let path = try config("outputs", maxSteps: 2)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", path], directory: directory).status, 0)
        let saved = try checkpoint("outputs")
        let before = try Data(contentsOf: URL(fileURLWithPath: saved))
        for arguments in [["predict", saved, "--data", train, "--out", saved], ["predict", saved, "--data", train, "--out", train],
                          ["evaluate", saved, "--json", saved]] {
            let result = try runCohort(ranks: 1, arguments, directory: directory)
            XCTAssertEqual(result.status, 1, result.output + result.error)
            XCTAssertTrue(result.error.contains("is the input"), result.error)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: saved)), before, "the checkpoint is untouched")
        XCTAssertNoThrow(try Checkpoint.read(from: saved))
        let predicted = "\(directory)/predictions.h5"
        XCTAssertEqual(try runCohort(ranks: 1, ["predict", saved, "--data", train, "--out", predicted], directory: directory).status, 0)
        XCTAssertEqual(try HDF5File.open(predicted).dataset("predictions").shape, [64])
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: directory).contains { $0.contains(".tmp-") })
    }

    func test_aRunResumedAtItsStepLimitTakesNoStep() throws {
        let path = try config("limit", maxSteps: 3)
        XCTAssertEqual(try runCohort(ranks: 2, ["train", path], directory: directory).status, 0)
        let first = try checkpoint("limit")
        let again = try runCohort(ranks: 2, ["train", path, "--resume", "auto"], directory: directory)
        XCTAssertEqual(again.status, 0, again.error)
        XCTAssertTrue(again.output.contains("nothing to do: 3 steps already taken (training.max_steps 3)"), again.output)
        XCTAssertEqual(try checkpoint("limit"), first, "no new checkpoint")
    }

    func test_staleTemporaryCheckpointsOfDeadWritersAreRemoved() throws {
        let path = try config("stale", maxSteps: 1)
        let checkpoints = "\(directory)/runs/stale/checkpoints"
        try FileManager.default.createDirectory(atPath: checkpoints, withIntermediateDirectories: true)
        var dead: Int32 = 4_000_000
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        let stale = "\(checkpoints)/.checkpoint-00000007.h5.tmp-\(dead)"
        let live = "\(checkpoints)/.checkpoint-00000008.h5.tmp-\(getpid())"
        for file in [stale, live] { _ = FileManager.default.createFile(atPath: file, contents: Data(repeating: 7, count: 4096)) }
        let result = try runCohort(ranks: 1, ["train", path], directory: directory)
        XCTAssertEqual(result.status, 0, result.error)
        XCTAssertTrue(result.output.contains("removed \(stale), left by a writer that was killed"), result.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live), "a live writer's file is kept")
    }
}

extension ReliabilityTests {
    /// Before the first step nothing is written: its own status (76, not 75's "checkpoint
    /// written") and one line on stderr, whichever rank the signal reached.
    func test_aSignalDuringStartUpEndsEveryRankWith76AndNoStep() throws {
        let path = try config("startup", maxSteps: 3)
        let result = try runCohort(ranks: 2, ["train", path], environment: ["COHORT_FAULT": "startup_signal:1:0"], directory: directory)
        XCTAssertEqual(result.status, 76, result.output + result.error)
        let lines = result.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }
        XCTAssertEqual(lines, ["cohort: stopped by a signal during start-up: no step was taken and no checkpoint written (exit 76: run the same command again)"],
                       result.error)
        XCTAssertEqual(Trainer.checkpoints(in: "\(directory)/runs/startup/checkpoints"), [])
    }

    func test_aSecondJobOnTheSameRunDirectoryIsRefusedNamingTheFirst() throws {
        let path = try config("locked", maxSteps: 2)
        var lock: RunDirectoryLock? = try RunDirectoryLock(directory: "\(directory)/runs/locked")
        let result = try runCohort(ranks: 2, ["train", path], directory: directory)
        XCTAssertEqual(result.status, 1, result.output + result.error)
        XCTAssertTrue(result.error.contains("another job is using this run directory (host "), result.error)
        XCTAssertTrue(result.error.contains("pid \(getpid()))"), result.error)
        XCTAssertNotNil(lock)
        lock = nil
        XCTAssertEqual(try runCohort(ranks: 1, ["train", path], directory: directory).status, 0, "free once the first job ends")
    }

    func test_anUnwritableCheckpointDirectoryIsFoundBeforeTheFirstStep() throws {
        let path = try config("unwritable", maxSteps: 2)
        try FileManager.default.createDirectory(atPath: "\(directory)/runs/unwritable", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(directory)/runs/unwritable/checkpoints", contents: Data())
        let result = try runCohort(ranks: 1, ["train", path], directory: directory)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.error.contains("runs/unwritable/checkpoints: is a file, not a directory for checkpoints"), result.error)
        XCTAssertFalse(result.output.contains("epoch 1/"), result.output)
    }

    /// A run directory or an output directory under a file: our one line, not Foundation's error text.
    func test_directoriesThatCannotBeMadeAreNamedInOneLine() throws {
        _ = FileManager.default.createFile(atPath: "\(directory)/plain", contents: Data())
        let train = try runCohort(ranks: 1, ["train", try config("blocked", maxSteps: 1), "--set", "run_dir=\(directory)/plain/run"],
                                  directory: directory)
        XCTAssertEqual(train.status, 1)
        XCTAssertTrue(train.error.contains("cohort: \(directory)/plain: is a file, not a directory (needed for the run)"), train.error)
        let prepare = try runCohort(ranks: 1, ["prepare", "text", "--input", try config("text", maxSteps: 1), "--out", "\(directory)/plain/tokens"],
                                    directory: directory)
        XCTAssertEqual(prepare.status, 1)
        XCTAssertTrue(prepare.error.contains("cohort: \(directory)/plain: is a file, not a directory (needed for the prepared token files)"), prepare.error)
        XCTAssertFalse((train.error + prepare.error).contains("NSCocoaErrorDomain"))
    }
}

extension ReliabilityTests {
    /// One bit flipped in a dataset's stored extent (28 → 28 + 2⁴⁶ rows of pixels, its maximum
    /// dimensions intact): every command refuses the file with one line instead of trying to
    /// allocate 3.9 EB.
    func test_aDamagedDatasetExtentIsRefusedBeforeAnythingIsSized() throws {
        let path = try writeSyntheticDataset("\(directory)/flipped.h5", rows: 2000, height: 28, width: 28, seed: 4)
        // As another tool would write it: without Cohort's checksum trailer (which would refuse
        // any flipped bit before HDF5 reads the file), so that the extent check itself is tested.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path)).dropLast(FileIntegrity.trailerSize)
        var dims = Data()
        for value in [UInt64(2000), 28, 28, 1] { withUnsafeBytes(of: value.littleEndian) { dims.append(contentsOf: $0) } }
        let extent = try XCTUnwrap(bytes.range(of: dims), "the dataspace's dimensions")
        bytes[extent.lowerBound + 8 + 5] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: path))
        let config = "\(directory)/flipped.yaml"
        try smallConfig(train: path, test: nil, runDirectory: "\(directory)/runs/flipped", epochs: 1)
            .write(toFile: config, atomically: true, encoding: .utf8)
        for arguments in [["inspect", path], ["train", config]] {
            let result = try runCohort(ranks: 1, arguments, directory: directory)
            XCTAssertEqual(result.status, 1, result.output + result.error)
            XCTAssertTrue(result.error.contains("dataset 'images' claims 70368744177692 along axis 1, beyond its maximum 28; the file is damaged"), result.error)
            XCTAssertFalse(result.error.contains("Fatal error"), result.error)
        }
    }
}

extension ReliabilityTests {
    /// A checkpoint records what its training file held: a mid-epoch resume on other data is
    /// refused naming both; at an epoch boundary the change is said and training goes on.
    func test_aMidEpochResumeOnOtherDataIsRefusedNamingBoth() throws {
        let path = try config("data", maxSteps: 5)  // 64 rows / 8 = 8 steps an epoch: stops mid-epoch
        XCTAssertEqual(try runCohort(ranks: 1, ["train", path], directory: directory).status, 0)
        let saved = try Checkpoint.read(from: try checkpoint("data"))
        XCTAssertEqual(saved.dataFingerprint?.hasPrefix("64 rows of [1, 6, 6], 4 classes, sample CRC "), true, "\(saved.dataFingerprint ?? "none")")
        try writeSyntheticDataset(train, rows: 40, seed: 9)  // the training file replaced
        let refused = try runCohort(ranks: 1, ["train", path, "--set", "training.max_steps=8", "--resume", "auto"], directory: directory)
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.error.contains("stopped mid-epoch on training data of 64 rows"), refused.error)
        XCTAssertTrue(refused.error.contains("holds 40 rows of [1, 6, 6]"), refused.error)

        let boundary = try config("boundary", maxSteps: 100)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", boundary, "--set", "training.epochs=1"], directory: directory).status, 0)
        try writeSyntheticDataset(train, rows: 64, seed: 10)
        let continued = try runCohort(ranks: 1, ["train", boundary, "--set", "training.epochs=2", "--resume", "auto"], directory: directory)
        XCTAssertEqual(continued.status, 0, continued.error)
        XCTAssertTrue(continued.output.contains("training data changed since"), continued.output)
    }
}

extension ReliabilityTests {
    func test_configsThatExpandWithoutBoundAreDirectoriesOrPipesAreHandled() throws {
        // 468 bytes of nested aliases stand for 9⁹ values: refused at once.
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        for level in 1..<9 { lines.append("a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ", ") + "]") }
        XCTAssertThrowsError(try TrainConfig.parse(text: lines.joined(separator: "\n"), file: "bomb.yaml")) {
            XCTAssertEqual("\($0)", "bomb.yaml: the document expands to more than 100,000 values (nested YAML aliases?); a config is far smaller")
        }
        XCTAssertThrowsError(try TrainConfig.load(path: directory)) {
            XCTAssertEqual("\($0)", "\(directory): is a directory, not a config file")
        }
        // A config given through a pipe (bash's <(…)) is read like a file.
        let pipe = Pipe()
        pipe.fileHandleForWriting.write(Data(smallConfig(train: train, test: nil, runDirectory: "\(directory)/piped").utf8))
        try pipe.fileHandleForWriting.close()
        let config = try TrainConfig.load(path: "/dev/fd/\(pipe.fileHandleForReading.fileDescriptor)")
        XCTAssertEqual(config.data.train, train)
    }
}

extension ReliabilityTests {
    /// Buffers are counted before they are allocated: a model or an evaluation batch beyond what
    /// the process may use (80 % of the smaller of memory and `ulimit -v`) is refused with the
    /// bytes, in microseconds, with nothing allocated.
    func test_aModelOrBatchBeyondMemoryIsRefusedBeforeAllocation() {
        XCTAssertThrowsError(try Model(inputShape: [784], layers: [.dense(3_000_000), .dense(10)], maxBatch: 64)) {
            XCTAssertTrue("\($0)".hasPrefix("the model needs "), "\($0)")
            XCTAssertTrue("\($0)".contains("parameters with their gradients and optimizer state 38.16 GB"), "\($0)")
        }
        XCTAssertThrowsError(try Model(inputShape: [784], layers: [.dense(256, activation: .relu), .dense(10)], maxBatch: 40_000_000)) {
            XCTAssertTrue("\($0)".contains("layer buffers for batches of 40000000 rows"), "\($0)")
        }
        // Each model is counted by its own builder: a refusal leaves nothing behind for the next.
        XCTAssertNoThrow(try Model(inputShape: [784], layers: [.dense(256, activation: .relu), .dense(10)], maxBatch: 64))
    }
}

extension ReliabilityTests {
    /// A rank frozen by SIGSTOP: the other rank's watchdog names it and the job ends non-zero
    /// within the timeout and a few seconds, instead of spinning in the all-reduce for ever.
    func test_aStoppedRankEndsTheJobNamingIt() throws {
        let path = "\(directory)/stall.yaml"
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/stall", epochs: 100000,
                        extra: "  stall_timeout: 2\n  log_every: 1")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let job = try CohortJob(ranks: 2, ["train", path], environment: ["COHORT_PROGRESS": "lines"], directory: directory)
        XCTAssertTrue(job.waitForOutput("epoch 2/100000 step 3/", seconds: 60), job.output + job.error)
        let ranks = job.rankProcesses()
        XCTAssertEqual(ranks.count, 2)
        // The rank of the process stopped, from its environment.
        let stopped = try XCTUnwrap(ranks.last)
        let environment = (try? String(contentsOfFile: "/proc/\(stopped)/environ", encoding: .utf8)) ?? ""
        let rank = try XCTUnwrap(environment.split(separator: "\0").first { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }?.split(separator: "=").last)
        let started = Date()
        kill(stopped, SIGSTOP)
        let status = job.wait(seconds: 30)
        kill(stopped, SIGCONT)
        XCTAssertNotNil(status, "the job ended by itself")
        XCTAssertNotEqual(status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(started), 2 + 10)
        XCTAssertTrue(job.error.contains("cohort: stall: step "), job.error)
        XCTAssertTrue(job.error.contains("not arrived: rank \(rank) (pid "), job.error)
    }
}

extension ReliabilityTests {
    /// A bad value from the command line is blamed on the --set that gave it, not on line 1 of the file.
    func test_aBadSetValueIsBlamedOnTheSet() throws {
        let text = smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/set")
        XCTAssertThrowsError(try TrainConfig.parse(text: text, file: "c.yaml", overrides: ["training.epochs=abc"])) {
            XCTAssertEqual("\($0)", "--set training.epochs: expected an integer, found 'abc'")
        }
        XCTAssertThrowsError(try TrainConfig.parse(text: text, file: "c.yaml", overrides: ["training.epochz=3"])) {
            XCTAssertEqual("\($0)", "--set training.epochz: unknown key 'training.epochz'")
        }
        XCTAssertThrowsError(try TrainConfig.parse(text: text + "\n  log_every: -1\n", file: "c.yaml")) {
            XCTAssertTrue("\($0)".hasPrefix("c.yaml:"), "an error in the file keeps its line: \($0)")
        }
    }
}

extension ReliabilityTests {
    /// SIGTERM to the launcher (what SLURM or a user sends) stops every rank at the next step
    /// with a checkpoint, and the launcher's status is 75, as a requeueing script expects.
    func test_sigtermToTheLauncherEndsWith75AndACheckpoint() throws {
        let path = "\(directory)/launched.yaml"
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/launched", epochs: 100000, extra: "  log_every: 1")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let launcher = Process()
        launcher.executableURL = repository.appendingPathComponent("launch/cohort-mpirun")
        launcher.arguments = ["-n", "2", "train", path]
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        environment["COHORT_BIN"] = cohortExecutable()
        environment["COHORT_PROGRESS"] = "lines"
        launcher.environment = environment
        let output = "\(directory)/launched.out"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        launcher.standardOutput = FileHandle(forWritingAtPath: output)
        launcher.standardError = FileHandle(forWritingAtPath: output)
        try launcher.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("epoch 2/100000 step") { usleep(20_000) }
        kill(launcher.processIdentifier, SIGTERM)
        launcher.waitUntilExit()
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        XCTAssertEqual(launcher.terminationStatus, 75, text)
        XCTAssertTrue(text.contains("stopped by signal at step"), text)
        XCTAssertFalse(Trainer.checkpoints(in: "\(directory)/runs/launched/checkpoints").isEmpty)
    }
}

extension ReliabilityTests {
    /// A rank frozen as it starts the update of step 4: after the step's agreement, before the
    /// node's barrier that follows the update, where the waiting ranks used to spin outside the
    /// watchdog's reach (issue 30: a SIGSTOP of rank 0 hung the default layout). In each
    /// synchronization layout, with the first, a middle and the last of 3 ranks in turn, the
    /// others name it with its pid and host in one line, and the job ends with status 1 within
    /// the timeout and 10 s, the checkpoints already written intact.
    func test_aRankFrozenInTheUpdateIsNamedInEveryLayout() throws {
        let layouts: [(name: String, keys: String)] = [
            ("model state and gradient sum once per node", ""),
            ("replicated state, node-shared all-reduce", "  state: replicated\n"),
            ("replicated state, MPI_Allreduce", "  state: replicated\n  all_reduce: mpi\n"),
            ("overlapped all-reduce", "  state: replicated\n  overlap_all_reduce: true\n"),
            ("accumulated micro-batches", "  accumulate_steps: 2\n"),
        ]
        for (index, layout) in layouts.enumerated() {
            let rank = [0, 2, 1][index % 3]
            let name = "frozen-\(index)"
            let path = "\(directory)/\(name).yaml"
            try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 100000,
                            extra: "  stall_timeout: 2\n" + layout.keys)
                .write(toFile: path, atomically: true, encoding: .utf8)
            let started = Date()
            let job = try CohortJob(ranks: 3, ["train", path], environment: ["COHORT_FAULT": "freeze:\(rank):4"], directory: directory)
            let status = job.wait(seconds: 40)
            for pid in job.rankProcesses() { kill(pid, SIGKILL) }
            XCTAssertNotNil(status, "\(layout.name): the job hung")
            XCTAssertEqual(status, 1, "\(layout.name): \(job.error)")
            XCTAssertLessThan(Date().timeIntervalSince(started), 2 + 10 + 3, "\(layout.name): start-up, then the timeout and 10 s")
            // Step 4 where the update ends in the node's barrier; step 5's all-reduce otherwise.
            XCTAssertTrue(job.error.contains("cohort: stall: step 4 did not complete") || job.error.contains("cohort: stall: step 5 did not complete"),
                          "\(layout.name): \(job.error)")
            XCTAssertTrue(job.error.contains("not arrived: rank \(rank) (pid "), "\(layout.name), rank \(rank): \(job.error)")
            XCTAssertEqual(job.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }.count, 1, job.error)
            // The checkpoints written before the stall (the first epoch's) are intact, and nothing is half-written.
            for checkpoint in Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints") {
                XCTAssertNoThrow(try Checkpoint.read(from: checkpoint), "\(layout.name): \(checkpoint)")
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(directory)/runs/\(name)/checkpoints").filter { $0.contains(".tmp-") }
            XCTAssertEqual(leftovers, [], layout.name)
        }
    }
}

extension ReliabilityTests {
    /// The waits before the first step (the broadcast of rank 0's weights, the node's shared
    /// windows, the agreement on a stop signal during start-up) are watched as a step's are: the
    /// first and the last of 3 ranks frozen as the initial synchronization begins are named.
    func test_aRankFrozenBeforeTheFirstStepIsNamed() throws {
        for rank in [0, 2] {
            let name = "frozen-startup-\(rank)"
            let path = "\(directory)/\(name).yaml"
            try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 3, extra: "  stall_timeout: 2\n")
                .write(toFile: path, atomically: true, encoding: .utf8)
            let started = Date()
            let job = try CohortJob(ranks: 3, ["train", path], environment: ["COHORT_FAULT": "freeze_startup:\(rank):0"], directory: directory)
            let status = job.wait(seconds: 40)
            for pid in job.rankProcesses() { kill(pid, SIGKILL) }
            XCTAssertNotNil(status, "rank \(rank): the job hung")
            XCTAssertEqual(status, 1, "rank \(rank): \(job.error)")
            XCTAssertLessThan(Date().timeIntervalSince(started), 2 + 10 + 3, "rank \(rank): start-up, then the timeout and 10 s")
            XCTAssertTrue(job.error.contains("cohort: stall: start-up (the initial synchronization) did not complete within 2 s"), job.error)
            XCTAssertTrue(job.error.contains("not arrived: rank \(rank) (pid "), "rank \(rank): \(job.error)")
            XCTAssertEqual(job.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }.count, 1, job.error)
        }
    }
}

extension ReliabilityTests {
    /// A checkpoint that cannot be written ends the run in one line with status 1: no crash (the
    /// HDF5 library's clean-up at exit used to fault on the file it could not close), the
    /// temporary file removed, the newest valid checkpoint kept: a write failing midway (the
    /// file-size limit, EFBIG). A full file system: `FaultToleranceTests.test_fullDisk…`.
    func test_aCheckpointThatCannotBeWrittenEndsInOneLineKeepingTheNewest() throws {
        func check(_ name: String, runDirectory: String, environment: [String: String], expect: String) throws {
            let path = "\(directory)/\(name).yaml"
            try smallConfig(train: train, test: nil, runDirectory: runDirectory, epochs: 10, extra: "  max_steps: 20")
                .replacingOnce("training:", with: "checkpoint: {every_steps: 10}\ntraining:")
                .write(toFile: path, atomically: true, encoding: .utf8)
            let result = try runCohort(ranks: 2, ["train", path], environment: environment, directory: directory)
            XCTAssertEqual(result.status, 1, name + result.output + result.error)
            let lines = result.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }
            XCTAssertEqual(lines.count, 1, result.error)
            XCTAssertTrue(lines.first?.contains(expect) == true, result.error)
            XCTAssertFalse(result.error.contains("crashed"), result.error)
            let files = (try? FileManager.default.contentsOfDirectory(atPath: "\(runDirectory)/checkpoints")) ?? []
            XCTAssertEqual(files.filter { $0.contains(".tmp-") }, [], "\(name): the temporary file is removed")
            for checkpoint in Trainer.checkpoints(in: "\(runDirectory)/checkpoints") { XCTAssertNoThrow(try Checkpoint.read(from: checkpoint)) }
        }
        try check("limited", runDirectory: "\(directory)/runs/limited", environment: ["COHORT_FAULT": "file_limit:0:20"],
                  expect: "checkpoint-00000020.h5.tmp-")
        let kept = Trainer.checkpoints(in: "\(directory)/runs/limited/checkpoints").map { URL(fileURLWithPath: $0).lastPathComponent }
        XCTAssertEqual(kept.first, "checkpoint-00000016.h5", "the newest written before: the 4th epoch's end (4 steps of 16 rows)")
        XCTAssertFalse(kept.contains("checkpoint-00000020.h5"))

    }
}

extension ReliabilityTests {
    /// `launch/cohort-mpirun --restarts N`: a rank killed mid-run ends that job; the launcher
    /// says why, runs it again with --resume if-any, and the run finishes with the very
    /// parameters of one that was never interrupted (a resume is bitwise).
    func test_theLauncherRestartsAFailedJobWhichEndsAsIfUninterrupted() throws {
        let path = "\(directory)/restarted.yaml"
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/restarted", epochs: 400, extra: "  log_every: 1")
            .replacingOnce("training:", with: "checkpoint: {every_steps: 10, keep_last: 2}\ntraining:")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let launcher = Process()
        launcher.executableURL = repository.appendingPathComponent("launch/cohort-mpirun")
        launcher.arguments = ["--restarts", "2", "-n", "2", "train", path]
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        environment["COHORT_BIN"] = cohortExecutable()
        environment["COHORT_PROGRESS"] = "lines"
        launcher.environment = environment
        let (output, errors) = ("\(directory)/restarted.out", "\(directory)/restarted.err")
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        launcher.standardOutput = FileHandle(forWritingAtPath: output)
        launcher.standardError = FileHandle(forWritingAtPath: errors)
        try launcher.run()
        let read = { (file: String) in (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !read(output).contains("epoch 30/400 step") { usleep(10_000) }
        // A rank of the job: the newest cohort process running this config.
        let pgrep = Process()
        pgrep.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        pgrep.arguments = ["-n", "-f", "cohort train \(path)"]
        let pipe = Pipe()
        pgrep.standardOutput = pipe
        try pgrep.run()
        pgrep.waitUntilExit()
        let rank = try XCTUnwrap(pid_t(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(rank, SIGKILL)
        launcher.waitUntilExit()
        XCTAssertEqual(launcher.terminationStatus, 0, read(output) + read(errors))
        XCTAssertTrue(read(errors).contains("restarting with --resume if-any (1 of 2)"), read(errors))
        XCTAssertTrue(read(output).contains("resumed at epoch "), read(output))

        let whole = "\(directory)/whole.yaml"
        try read(path).replacingOnce("runs/restarted", with: "runs/whole").write(toFile: whole, atomically: true, encoding: .utf8)
        let uninterrupted = try runCohort(ranks: 2, ["train", whole], directory: directory)
        XCTAssertEqual(uninterrupted.status, 0, uninterrupted.error)
        let final = { (name: String) in try checkpointParameters(try XCTUnwrap(Trainer.checkpoints(in: "\(self.directory)/runs/\(name)/checkpoints").first)) }
        XCTAssertTrue(try final("restarted") == final("whole"), "the restarted run ends elsewhere than the uninterrupted one")
    }
}
