import Foundation
import XCTest
@testable import Cohort

/// How gradients are held and summed is one type per strategy (`GradientSynchronization`),
/// chosen once from the config and the topology: a new strategy is one type and one line in
/// the list the trainer asks, as `CountingSum` shows here, and the step calls it at its fixed points.
final class GradientStrategyTests: XCTestCase {
    /// A strategy of this test's own: the replicated sum, counting the step's calls into it.
    final class CountingSum: GradientSynchronization {
        let run: GradientRun
        private(set) var steps = 0, hooks = 0, finishes = 0, clips = 0
        var description: String { "counting sum" }

        init(run: GradientRun) { self.run = run }
        static func make(_ run: GradientRun) -> CountingSum? { CountingSum(run: run) }

        func beginStep() {
            steps += 1
            run.model.parameters.zeroGradients()
        }
        func backwardHook(lastMicroBatch: Bool) -> ((Int) -> Void)? { { [unowned self] _ in self.hooks += 1 } }
        func finish() -> Bool {
            finishes += 1
            return run.communicator.allReduceSumCheckingFinite(run.model.parameters.gradients)
        }
        func clip(maxNorm: Float) {
            clips += 1
            clipGradientNorm(run.model.parameters.gradients, maxNorm: maxNorm)
        }
    }

    private func trainer(_ directory: String, name: String, extra: String = "", strategies: [any GradientSynchronization.Type]? = nil) throws -> Trainer {
        let train = "\(directory)/train.h5"
        if !FileManager.default.fileExists(atPath: train) { try writeSyntheticDataset(train, rows: 96, seed: 3) }
        let text = smallConfig(train: train, test: nil, runDirectory: "\(directory)/\(name)", epochs: 2, batchSize: 16,
                               extra: "  max_steps: 5\n" + extra)
            .replacingOnce("learning_rate: 0.01", with: "learning_rate: 0.01\n  clip_grad_norm: 0.5")
        let made = try Trainer(config: try TrainConfig.parse(text: text, file: "\(name).yaml"), communicator: SingleProcess())
        made.log = { _ in }
        if let strategies { made.gradientStrategies = strategies }
        return made
    }

    func test_aNewStrategyIsOneTypeAndOneLineAndTrainsTheSameBits() throws {
        let directory = try temporaryDirectory(self)
        let reference = try trainer(directory, name: "replicated")
        XCTAssertEqual(try reference.run(), .stepLimit)
        XCTAssertTrue(reference.synchronization is ReplicatedSum)

        let counted = try trainer(directory, name: "counting", strategies: [CountingSum.self] + GradientStrategies.all)
        XCTAssertEqual(try counted.run(), .stepLimit)
        let counting = try XCTUnwrap(counted.synchronization as? CountingSum)
        XCTAssertEqual(counted.gradientAllReduce, "counting sum")
        XCTAssertEqual([counting.steps, counting.finishes, counting.clips], [5, 5, 5])
        XCTAssertEqual(counting.hooks, 5 * counted.model.stack.layers.count, "one call after each top-level layer's backward")
        XCTAssertEqual(counted.model.parameters.values.map(\.bitPattern), reference.model.parameters.values.map(\.bitPattern))
    }

    /// The first strategy that applies is the run's, in `GradientStrategies.all`'s order.
    func test_theFirstStrategyThatAppliesIsChosen() throws {
        let directory = try temporaryDirectory(self)
        let frozen = try trainer(directory, name: "frozen", extra: "", strategies: nil)
        frozen.synchronizeInitialState()
        XCTAssertTrue(frozen.synchronization is ReplicatedSum, "one process: no shared memory, nothing to overlap")
        let text = smallConfig(train: "\(directory)/train.h5", test: nil, runDirectory: "\(directory)/freeze", epochs: 1, batchSize: 16)
            .replacingOnce("model:", with: "model:\n  freeze: [dense_1/*]")
        let freezing = try Trainer(config: try TrainConfig.parse(text: text, file: "freeze.yaml"), communicator: SingleProcess())
        freezing.synchronizeInitialState()
        let spans = try XCTUnwrap(freezing.synchronization as? FrozenSpansSum)
        XCTAssertTrue(spans.description.hasPrefix("MPI_Allreduce of the trainable parameters"), spans.description)
    }
}
