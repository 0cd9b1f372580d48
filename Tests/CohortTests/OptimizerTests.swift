import XCTest
@testable import Cohort

/// Each optimizer against values worked by hand from its published update rule.
final class OptimizerTests: XCTestCase {
    private func run(_ optimizer: Optimizer, theta: [Float], gradients: [[Float]], learningRate: Float) -> [Float] {
        var parameters = theta
        for gradient in gradients {
            parameters.withUnsafeMutableBufferPointer { p in
                gradient.withUnsafeBufferPointer { g in optimizer.step(parameters: p, gradients: g, learningRate: learningRate) }
            }
        }
        return parameters
    }

    func test_adamFirstStepsMatchTheKingmaBaRule() {
        // Step 1: m = 0.1·g, v = 0.001·g², m̂ = g, v̂ = g², θ −= lr·g/(|g| + ε) ≈ lr·sign(g).
        // Step 2 with g2 = 0.5 for θ0 = 1, g1 = 2:
        //   m = 0.9·0.2 + 0.1·0.5 = 0.23, v = 0.999·0.004 + 0.001·0.25 = 0.004246
        //   m̂ = 0.23/0.19 = 1.210526, v̂ = 0.004246/0.001999 = 2.124062
        //   θ = (1 − 0.1) − 0.1·1.210526/(1.457416 + 1e-8) = 0.816939
        let adam = Adam(count: 1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, decay: DecayRanges(mask: [1]))
        let after = run(adam, theta: [1], gradients: [[2], [0.5]], learningRate: 0.1)
        XCTAssertEqual(after[0], 0.816939, accuracy: 1e-5)
        XCTAssertEqual(adam.stepCount, 2)
    }

    func test_adamWeightDecayIsAddedToTheGradientAndSkipsMaskedEntries() {
        // g' = g + λθ = 0 + 0.5·2 = 1 for the decayed entry; the masked entry sees g = 0 and stays.
        let adam = Adam(count: 2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.5, decay: DecayRanges(mask: [1, 0]))
        let after = run(adam, theta: [2, 2], gradients: [[0, 0]], learningRate: 0.1)
        XCTAssertEqual(after[0], 1.9, accuracy: 1e-6)
        XCTAssertEqual(after[1], 2, accuracy: 0)
    }

    func test_adamWOverAVectorIsTheDecayThenTheAdamStepElementByElement() {
        // The kernel decays and steps in one pass; here the two passes of the definition, in
        // Float, element by element, over 37 entries (vector loop and remainder) with a mask
        // that skips every third entry, for three steps. Equal to the bit.
        let count = 37, (beta1, beta2, epsilon, lambda, lr): (Float, Float, Float, Float, Float) = (0.9, 0.999, 1e-8, 0.1, 0.01)
        let mask: [Float] = (0..<count).map { (i: Int) -> Float in i % 3 == 0 ? 0 : 1 }
        let adamw = Adam(count: count, beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: lambda, decay: DecayRanges(mask: mask), decoupled: true)
        let gradients: [[Float]] = (1...3).map { (t: Int) -> [Float] in
            (0..<count).map { (i: Int) -> Float in Float((i * 7 + t * 3) % 11) - 5 }
        }
        let start: [Float] = (0..<count).map { (i: Int) -> Float in Float(i) * 0.25 - 4 }
        var theta = start
        var (m, v) = ([Float](repeating: 0, count: count), [Float](repeating: 0, count: count))
        for (step, g) in gradients.enumerated() {
            let t = Float(step + 1)
            let (c1, c2) = (1 - powf(beta1, t), 1 - powf(beta2, t))
            let (stepSize, epsilonHat) = (lr * c2.squareRoot() / c1, epsilon * c2.squareRoot())
            for i in 0..<count {
                theta[i] -= lr * lambda * mask[i] * theta[i]
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                theta[i] -= stepSize * m[i] / (v[i].squareRoot() + epsilonHat)
            }
        }
        let after = run(adamw, theta: start, gradients: gradients, learningRate: lr)
        XCTAssertEqual(after, theta)
        XCTAssertEqual(Array(adamw.slots[0].buffer), m)
        XCTAssertEqual(Array(adamw.slots[1].buffer), v)
    }

    func test_sgdMomentumFollowsPyTorchsRule() {
        // v1 = g1 = 1 → θ = 1 − 0.1·1 = 0.9; v2 = 0.9·1 + 2 = 2.9 → θ = 0.9 − 0.29 = 0.61
        let sgd = SGD(count: 1, momentum: 0.9, nesterov: false, weightDecay: 0, decay: DecayRanges(mask: [1]))
        XCTAssertEqual(run(sgd, theta: [1], gradients: [[1], [2]], learningRate: 0.1)[0], 0.61, accuracy: 1e-6)
    }

    func test_sgdNesterovLooksAhead() {
        // v1 = 1, step g + μv = 1 + 0.9 = 1.9 → θ = 1 − 0.19 = 0.81
        // v2 = 0.9 + 2 = 2.9, step 2 + 0.9·2.9 = 4.61 → θ = 0.81 − 0.461 = 0.349
        let sgd = SGD(count: 1, momentum: 0.9, nesterov: true, weightDecay: 0, decay: DecayRanges(mask: [1]))
        XCTAssertEqual(run(sgd, theta: [1], gradients: [[1], [2]], learningRate: 0.1)[0], 0.349, accuracy: 1e-6)
    }

    func test_plainSGD() {
        let sgd = SGD(count: 2, momentum: 0, nesterov: false, weightDecay: 0, decay: DecayRanges(mask: [1, 1]))
        XCTAssertEqual(run(sgd, theta: [1, -1], gradients: [[1, 2]], learningRate: 0.5), [0.5, -2])
    }
}

/// Weight decay is kept as ranges of whole tensors, not as a mask of one float per parameter.
final class DecayRangesTests: XCTestCase {
    func test_rangesMergeAndCutASpanIntoPiecesThatCoverIt() {
        let decay = DecayRanges([8..<10, 2..<5, 5..<6, 12..<12])
        XCTAssertEqual(decay.ranges, [2..<6, 8..<10], "sorted, neighbours merged, empty ranges dropped")
        XCTAssertEqual(DecayRanges(mask: [0, 1, 1, 0, 1]).ranges, [1..<3, 4..<5])
        var pieces: [(Range<Int>, Float)] = []
        decay.forEachPiece(of: 3..<12) { pieces.append(($0, $1)) }
        XCTAssertEqual(pieces.map(\.0), [3..<6, 6..<8, 8..<10, 10..<12])
        XCTAssertEqual(pieces.map(\.1), [1, 0, 1, 0])
        pieces = []
        decay.forEachPiece(of: 9..<9) { pieces.append(($0, $1)) }
        XCTAssertTrue(pieces.isEmpty)
        decay.forEachPiece(of: 0..<2) { pieces.append(($0, $1)) }
        XCTAssertEqual(pieces.map(\.0), [0..<2])
        XCTAssertEqual(pieces.map(\.1), [0])
    }

    /// A model's optimizer decays its weights and leaves biases and layer-norm scales alone.
    func test_theOptimizerDecaysWeightsOnly() throws {
        let model = try Model(inputShape: [4], layers: [.dense(3), .family(LayerNormOptions()), .dense(2)])
        let config = OptimizerConfig(kind: .sgd, learningRate: 0.5, weightDecay: 0.1)
        let sgd = makeOptimizer(config, parameters: model.parameters)
        let parameters = model.parameters
        let before = Array(parameters.values)
        let zero = [Float](repeating: 0, count: parameters.count)
        zero.withUnsafeBufferPointer { sgd.step(parameters: parameters.values, gradients: $0, learningRate: 0.5) }
        for entry in parameters.entries {
            for index in entry.offset..<(entry.offset + entry.count) where before[index] != 0 {
                XCTAssertEqual(parameters.values[index] != before[index], entry.decays, "\(entry.name)[\(index - entry.offset)]")
            }
        }
        XCTAssertEqual(parameters.entries.filter(\.decays).map(\.name), ["dense_1/weight", "dense_2/weight"])
    }
}

/// Node-shared optimizer state: two optimizers that each update half of shared arrays (the
/// slices two ranks own) compute what one optimizer updating all of it computes, bit for bit.
final class SharedOptimizerStateTests: XCTestCase {
    func test_slicesOfSharedStateUpdateAsTheWhole() {
        let count = 37
        let mask = (0..<count).map { Float($0 % 3 == 0 ? 0 : 1) }
        let make = { Adam(count: count, beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0.1, decay: DecayRanges(mask: mask), decoupled: true) }
        let whole = make()
        var wholeParameters = (0..<count).map { Float($0) * 0.1 - 1 }
        var sharedParameters = wholeParameters
        let storage = (0..<2).map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: count) }
        defer { storage.forEach { $0.deallocate() } }
        let halves = [make(), make()]
        halves[0].share(storage, updating: 0..<16)
        halves[1].share(storage, updating: 16..<count)
        for step in 1...3 {
            let gradients = (0..<count).map { Float(($0 * 7 + step * 3) % 11) - 5 }
            gradients.withUnsafeBufferPointer { g in
                wholeParameters.withUnsafeMutableBufferPointer { whole.step(parameters: $0, gradients: g, learningRate: 0.01) }
                sharedParameters.withUnsafeMutableBufferPointer { p in halves.forEach { $0.step(parameters: p, gradients: g, learningRate: 0.01) } }
            }
        }
        XCTAssertEqual(wholeParameters.map(\.bitPattern), sharedParameters.map(\.bitPattern))
        XCTAssertEqual(Array(whole.slots[0].buffer).map(\.bitPattern), Array(storage[0]).map(\.bitPattern))
        XCTAssertEqual(Array(whole.slots[1].buffer).map(\.bitPattern), Array(storage[1]).map(\.bitPattern))
        XCTAssertEqual(halves[1].slots[1].buffer.baseAddress, storage[1].baseAddress)
    }

    /// A run that ends before its schedule (W6's 2,000-step cosine on a corpus of 1,510 steps)
    /// or inside its warm-up is told so with both numbers; one that fits is not.
    func test_aScheduleTheRunCannotFinishIsNamed() {
        var cosine = LearningRateSchedule(kind: .warmupCosine, baseRate: 1e-3, warmupSteps: 100, minimumRate: 1e-4)
        cosine.totalSteps = 2000
        let warning = cosine.warning(runSteps: 1510, epochSteps: 1510, keys: "training.epochs 1")
        XCTAssertTrue(warning?.contains("runs over 2000 steps (schedule.total_steps) but the run ends after 1510 (training.epochs 1)") == true, warning ?? "nil")
        XCTAssertTrue(warning?.hasSuffix("not 0.0001") == true, warning ?? "nil")
        XCTAssertNil(cosine.warning(runSteps: 2000, epochSteps: 2500, keys: ""))
        XCTAssertTrue(cosine.warning(runSteps: 80, epochSteps: 80, keys: "k")?.contains("warm-up of 100 steps is not over when the run ends after 80 steps") == true)
        let implied = LearningRateSchedule(kind: .cosine, baseRate: 1e-3)
        XCTAssertTrue(implied.warning(runSteps: 50, epochSteps: 200, keys: "training.max_steps 50")?.contains("runs over 200 steps (the epochs' steps)") == true)
        XCTAssertNil(implied.warning(runSteps: 200, epochSteps: 200, keys: ""))
        XCTAssertNil(LearningRateSchedule(kind: .constant, baseRate: 1).warning(runSteps: 1, epochSteps: 9, keys: ""))
    }
}
