import Foundation
import XCTest
@testable import Cohort

/// The training loop driven in this process, on a single-process communicator: step limits,
/// checkpoints and callbacks without mpirun.
final class TrainerTests: XCTestCase {
    private func trainer(_ directory: String, extra: String, resume: String? = nil) throws -> (Trainer, [String]) {
        let train = "\(directory)/train.h5"
        if !FileManager.default.fileExists(atPath: train) { try writeSyntheticDataset(train, rows: 96, seed: 3) }
        let text = smallConfig(train: train, test: train, runDirectory: "\(directory)/run", epochs: 4, batchSize: 16, extra: extra)
        let config = try TrainConfig.parse(text: text, file: "in-process.yaml")
        let made = try Trainer(config: config, communicator: SingleProcess(), resume: resume)
        var lines: [String] = []
        made.log = { lines.append($0) }
        made.synchronizeInitialState()
        return (made, lines)
    }

    func test_aStepLimitStopsMidEpochWithACheckpointAndAResumeFinishesTheRun() throws {
        let directory = try temporaryDirectory(self)
        let (first, _) = try trainer(directory, extra: "  max_steps: 9")
        XCTAssertEqual(try first.run(), .stepLimit)
        XCTAssertEqual(first.position.globalStep, 9)
        XCTAssertEqual(first.position.stepInEpoch, 3, "96 rows / 16 = 6 steps an epoch")
        let saved = try XCTUnwrap(Trainer.checkpoints(in: first.checkpointDirectory).first)
        XCTAssertTrue(saved.hasSuffix("checkpoint-00000009.h5"))
        let (second, _) = try trainer(directory, extra: "", resume: "auto")
        XCTAssertEqual(second.position.globalStep, 9)
        XCTAssertEqual(try second.run(), .completed)
        XCTAssertEqual(second.position.globalStep, 24)
        XCTAssertEqual(second.history.count, 4, "the resumed run reports every epoch, the first two restored")
    }

    func test_earlyStoppingEndsTheRunAtTheCallbacksEpoch() throws {
        let directory = try temporaryDirectory(self)
        // A learning rate of 0 never improves the loss: patience 1 stops after epoch 2.
        let extra = "callbacks: {early_stopping: {monitor: train_loss, patience: 1}}\n"
        let text = smallConfig(train: try writeSyntheticDataset("\(directory)/train.h5", rows: 96, seed: 3), test: nil,
                               runDirectory: "\(directory)/run", epochs: 5, batchSize: 16, extra: "")
            .replacingOnce("learning_rate: 0.01", with: "learning_rate: 0") + extra
        let config = try TrainConfig.parse(text: text, file: "early.yaml")
        let trainer = try Trainer(config: config, communicator: SingleProcess())
        var lines: [String] = []
        trainer.log = { lines.append($0) }
        XCTAssertEqual(try trainer.run(), .earlyStopped)
        XCTAssertEqual(trainer.history.count, 2, lines.joined(separator: "\n"))
        XCTAssertTrue(lines.contains { $0.hasPrefix("early_stopping: train_loss has not improved for 1 epochs") }, lines.joined(separator: "\n"))
        XCTAssertNotNil(Trainer.checkpoints(in: trainer.checkpointDirectory).first, "the last epoch is checkpointed")
    }

    /// What launch/slurm.sbatch passes every time: a fresh start, then a resume once there is a checkpoint.
    func test_resumeIfAnyStartsAfreshOrResumes() throws {
        let directory = try temporaryDirectory(self)
        let (fresh, _) = try trainer(directory, extra: "  max_steps: 3", resume: "if-any")
        XCTAssertEqual(fresh.position.globalStep, 0)
        XCTAssertEqual(try fresh.run(), .stepLimit)
        let (resumed, _) = try trainer(directory, extra: "  max_steps: 5", resume: "if-any")
        XCTAssertEqual(resumed.position.globalStep, 3)
        XCTAssertEqual(try resumed.run(), .stepLimit)
        XCTAssertEqual(resumed.position.globalStep, 5)
    }
}
