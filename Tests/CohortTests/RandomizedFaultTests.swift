import Foundation
import XCTest
@testable import Cohort

/// The randomized part of the reliability catalog for whole jobs: each run of the test draws,
/// from a seed it prints, the order of five faults and for each the rank it strikes and the
/// moment: a rank frozen mid-run (a wait bounded, issue 30 (1)), a checkpoint that outgrows the
/// disk (2), a stop signal before the first step or between steps (3), a rank killed and the job
/// relaunched by `launch/cohort-mpirun --restarts` (4). `COHORT_FAULT_SEED=N` repeats a run.
/// Each must end as documented: the status, one `cohort:` line, every checkpoint left readable
/// and no temporary file.
final class RandomizedFaultTests: XCTestCase {
    private var directory = ""
    private var train = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 600, seed: 1)  // 25 steps an epoch on 3 ranks
    }

    private enum Fault: CaseIterable { case freeze, fullDisk, signalBeforeFirstStep, signalBetweenSteps, killedAndRestarted }

    func test_faultsDrawnFromASeedEndAsDocumented() throws {
        let seed = ProcessInfo.processInfo.environment["COHORT_FAULT_SEED"].flatMap(UInt64.init)
            ?? UInt64(Date().timeIntervalSince1970) % 100_000
        print("randomized faults: seed \(seed) (COHORT_FAULT_SEED=\(seed) repeats this run)")
        var generator = Generator(seed: seed, streams: 0xFA17)
        var faults = Fault.allCases
        for index in stride(from: faults.count - 1, to: 0, by: -1) { faults.swapAt(index, generator.nextIndex(below: index + 1)) }
        for (index, fault) in faults.enumerated() {
            let rank = generator.nextIndex(below: 3)
            let step = 2 + generator.nextIndex(below: 14)
            let signal = generator.nextIndex(below: 2) == 0 ? SIGTERM : SIGUSR1
            let what = "seed \(seed), run \(index): \(fault), rank \(rank), step \(step)"
            print(what)
            try run(fault, rank: rank, step: step, signal: signal, name: "run-\(index)", what: what)
        }
    }

    private func config(_ name: String, maxSteps: Int) throws -> String {
        let path = "\(directory)/\(name).yaml"
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 100_000,
                        extra: "  log_every: 1\n  stall_timeout: 2\n  max_steps: \(maxSteps)\n")
            .replacingOnce("training:", with: "checkpoint: {every_steps: 5, keep_last: 2}\ntraining:")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func run(_ fault: Fault, rank: Int, step: Int, signal: Int32, name: String, what: String) throws {
        // Long enough for a kill or a signal at step 15 to land mid-run.
        let path = try config(name, maxSteps: fault == .killedAndRestarted || fault == .signalBetweenSteps ? 3000 : 40)
        let started = Date()
        var status: Int32?
        var error = ""
        switch fault {
        case .freeze:
            let job = try CohortJob(ranks: 3, ["train", path], environment: ["COHORT_FAULT": "freeze:\(rank):\(step)"], directory: directory)
            status = job.wait(seconds: 40)
            for pid in job.rankProcesses() { kill(pid, SIGKILL) }
            error = job.error
            XCTAssertEqual(status, 1, "\(what): \(error)")
            XCTAssertLessThan(Date().timeIntervalSince(started), 2 + 10 + 3, "\(what): start-up, then the timeout and 10 s")
            XCTAssertTrue(error.contains("not arrived: rank \(rank) (pid "), "\(what): \(error)")
        case .fullDisk:
            // The checkpoint of the first multiple of 5 from `step` on may not grow past half its size.
            let due = (step + 4) / 5 * 5
            let job = try CohortJob(ranks: 3, ["train", path], environment: ["COHORT_FAULT": "file_limit:0:\(due)"], directory: directory)
            status = job.wait(seconds: 40)
            error = job.error
            XCTAssertEqual(status, 1, "\(what): \(error)")
            XCTAssertTrue(error.contains(String(format: "checkpoint-%08d.h5.tmp-", due)) && error.contains("disk full?)"), "\(what): \(error)")
            // The checkpoints before it (every 5 steps, and each epoch's end) are kept.
            let kept = Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").map { ($0 as NSString).lastPathComponent }
            XCTAssertEqual(kept.isEmpty, due == 5, "\(what): \(kept)")
            XCTAssertTrue(kept.allSatisfy { $0 < String(format: "checkpoint-%08d.h5", due) }, "\(what): \(kept)")
        case .signalBeforeFirstStep:
            let job = try CohortJob(ranks: 3, ["train", path], environment: ["COHORT_FAULT": "startup_signal:\(rank):0"], directory: directory)
            status = job.wait(seconds: 40)
            error = job.error
            XCTAssertEqual(status, 76, "\(what): \(error)")
            XCTAssertTrue(error.contains("no step was taken and no checkpoint written"), "\(what): \(error)")
            XCTAssertEqual(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints"), [], what)
        case .signalBetweenSteps:
            let job = try CohortJob(ranks: 3, ["train", path], directory: directory)
            XCTAssertTrue(job.waitForOutput("step \(step)/", seconds: 30), "\(what): \(job.output)")
            let ranks = job.rankProcesses()
            if rank < ranks.count { kill(ranks[rank], signal) }
            status = job.wait(seconds: 40)
            error = job.error
            XCTAssertEqual(status, 75, "\(what): \(error)")
            XCTAssertTrue(job.output.contains("stopped by signal at step "), "\(what): \(job.output)")
            XCTAssertFalse(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").isEmpty, "\(what): the stop's checkpoint")
        case .killedAndRestarted:
            let (launcher, output, errors) = try launch(["--restarts", "1", "-n", "3", "train", path], name: name)
            let read = { (file: String) in (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
            // The ranks are found once running, so that the kill follows the step's line at once.
            let deadline = Date().addingTimeInterval(30)
            var ranks: [pid_t] = []
            while Date() < deadline, ranks.count < 3, launcher.isRunning {
                ranks = rankProcesses(running: path)
                usleep(2_000)
            }
            while Date() < deadline, !read(output).contains("step \(step)/"), launcher.isRunning { usleep(2_000) }
            XCTAssertEqual(ranks.count, 3, "\(what): the ranks' processes")
            if rank < ranks.count { kill(ranks[rank], SIGKILL) }
            let end = Date().addingTimeInterval(60)
            while launcher.isRunning && Date() < end { usleep(20_000) }
            if launcher.isRunning { launcher.terminate() }
            launcher.waitUntilExit()
            status = launcher.terminationStatus
            error = read(errors)
            XCTAssertEqual(status, 0, "\(what): \(read(output)) \(error)")
            XCTAssertTrue(error.contains("restarting with --resume if-any (1 of 1)"), "\(what): \(error)")
            XCTAssertTrue(read(output).contains("stopped after 3000 steps"), "\(what): \(read(output))")
            error = ""  // mpirun's own report of the killed rank, and the relaunched job's lines
        }
        XCTAssertNotNil(status, "\(what): the job hung")
        XCTAssertLessThanOrEqual(error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }.count, 1, "\(what): \(error)")
        for checkpoint in Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints") {
            XCTAssertNoThrow(try Checkpoint.read(from: checkpoint), "\(what): \(checkpoint)")
        }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/runs/\(name)/checkpoints")) ?? []
        XCTAssertEqual(leftovers.filter { $0.contains(".tmp-") }, [], what)
    }

    /// `launch/cohort-mpirun ARGUMENTS` started in the background, with its output files.
    private func launch(_ arguments: [String], name: String) throws -> (Process, String, String) {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let launcher = Process()
        launcher.executableURL = repository.appendingPathComponent("launch/cohort-mpirun")
        launcher.arguments = arguments
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        (environment["COHORT_BIN"], environment["COHORT_PROGRESS"], environment["COHORT_THREADS"]) = (cohortExecutable(), "lines", "1")
        launcher.environment = environment
        let (output, errors) = ("\(directory)/\(name).out", "\(directory)/\(name).err")
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        launcher.standardOutput = FileHandle(forWritingAtPath: output)
        launcher.standardError = FileHandle(forWritingAtPath: errors)
        try launcher.run()
        return (launcher, output, errors)
    }

    /// The cohort processes training `config`, in the order they started.
    private func rankProcesses(running config: String) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(pid_t.init).filter { pid in
            let command = ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").replacingOccurrences(of: "\0", with: " ")
            return command.contains("cohort train \(config)") && !command.contains("cohort-mpirun") && !command.hasPrefix("mpirun")
        }.sorted()
    }
}
