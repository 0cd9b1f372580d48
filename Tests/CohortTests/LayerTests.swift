import XCTest
@testable import Cohort

final class LayerTests: XCTestCase {
    func test_heNormalInitializationIsTheScalarFormulaWithinAnUlp() {
        // The vector kernel (libmvec's log and cos) against nextGaussian() · std, value by value,
        // over more values than one block and a partial block.
        let count = 10_000, fanIn = 75
        var vectorGenerator = Generator(seed: 11, streams: 2)
        var scalarGenerator = vectorGenerator
        var values = [Float](repeating: .nan, count: count)
        values.withUnsafeMutableBufferPointer {
            initializeWeights($0.baseAddress!, count: count, fanIn: fanIn, fanOut: 10, .heNormal, &vectorGenerator)
        }
        let std = (2 / Float(fanIn)).squareRoot()
        var differing = 0
        for value in values {
            let expected = scalarGenerator.nextGaussian() * std
            XCTAssertLessThanOrEqual(abs(value - expected), expected.ulp, "\(value) vs \(expected)")
            if value != expected { differing += 1 }
        }
        XCTAssertLessThan(differing, count / 100, "more than 1 % of the values differ from the scalar formula")
        XCTAssertEqual(vectorGenerator, scalarGenerator, "the stream advanced differently")
    }

    func test_conv2dForwardEqualsNaiveDirectConvolution() throws {
        // The last two cases have 41×41 outputs, so each sample is its own chunk of the batch, and
        // 20×20, so chunks of 4 samples, interleaved in the GEMM's columns, and a last chunk of 1.
        for (padding, stride, kernel, height, width, batch) in [(Padding.valid, 1, 3, 7, 6, 2), (.same, 1, 5, 7, 6, 2), (.same, 2, 3, 7, 6, 2),
                                                                (.valid, 2, 2, 7, 6, 2), (.same, 1, 3, 41, 41, 3), (.same, 1, 3, 20, 20, 9)] {
            let (channels, filters) = (2, 3)
            let model = try Model(inputShape: [channels, height, width],
                                  layers: [.conv2d(filters, kernel: kernel, stride: stride, padding: padding)], maxBatch: batch, seed: 4)
            let conv = try XCTUnwrap(model.layers.first as? Conv2D)
            var generator = Generator(seed: 8)
            let bias = model.parameters.values(of: try XCTUnwrap(conv.bias))
            for k in 0..<filters { bias[k] = Float(k) * 0.5 - 0.3 }
            let x = (0..<(batch * channels * height * width)).map { _ in generator.nextGaussian() }
            let y = model.forward(x, batch: batch, training: false)
            let w = model.parameters.values(of: conv.weight)
            let (outputHeight, outputWidth) = (conv.outputShape[1], conv.outputShape[2])
            let padTop = padding == .same ? max((outputHeight - 1) * stride + kernel - height, 0) / 2 : 0
            let padLeft = padding == .same ? max((outputWidth - 1) * stride + kernel - width, 0) / 2 : 0
            for b in 0..<batch {
                for k in 0..<filters {
                    for oy in 0..<outputHeight {
                        for ox in 0..<outputWidth {
                            var sum = bias[k]
                            for c in 0..<channels {
                                for i in 0..<kernel {
                                    for j in 0..<kernel {
                                        let (iy, ix) = (oy * stride + i - padTop, ox * stride + j - padLeft)
                                        guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                                        sum += w[((k * channels + c) * kernel + i) * kernel + j] * x[((b * channels + c) * height + iy) * width + ix]
                                    }
                                }
                            }
                            let got = y[((b * filters + k) * outputHeight + oy) * outputWidth + ox]
                            XCTAssertEqual(got, sum, accuracy: 1e-4, "\(padding) stride \(stride) kernel \(kernel) at \(b),\(k),\(oy),\(ox)")
                        }
                    }
                }
            }
        }
    }

    /// A 2×2 max pool folded into the convolution before it gives the two layers' results bit
    /// for bit: outputs, parameter gradients and input gradients, with ReLU or without, odd
    /// sizes (a row and column no window covers) and batches spanning several chunks.
    func test_fusedConvolutionAndPoolingEqualTheTwoLayers() throws {
        let cases: [([LayerSpec], [Int], Int)] = [
            ([.conv2d(4, kernel: 3, activation: .relu), .maxPool(2), .conv2d(3, kernel: 3, padding: .same), .maxPool(2), .flatten, .dense(5)], [2, 11, 12], 3),
            ([.conv2d(3, kernel: 3, padding: .same, activation: .relu), .maxPool(2), .flatten, .dense(4)], [1, 45, 43], 3),
            // Chunks of 4 samples and a last one of 1 (20×20 outputs), and of 2 (23×23, odd).
            ([.conv2d(3, kernel: 3, padding: .same, activation: .relu), .maxPool(2), .flatten, .dense(4)], [2, 20, 20], 9),
            ([.conv2d(3, kernel: 3, padding: .same, activation: .relu), .maxPool(2), .flatten, .dense(4)], [1, 23, 23], 4),
        ]
        for (specs, shape, batch) in cases {
            let fused = try Model(inputShape: shape, layers: specs, maxBatch: batch, seed: 3)
            let separate = try Model(inputShape: shape, layers: specs, maxBatch: batch, seed: 3, fusePooling: false)
            XCTAssertLessThan(fused.layers.count, separate.layers.count)
            XCTAssertTrue(fused.layers.contains { ($0 as? Conv2D)?.pooled == true })
            XCTAssertEqual(fused.outputShape, separate.outputShape)
            XCTAssertEqual(Array(fused.parameters.values), Array(separate.parameters.values))
            fused.computeInputGradient()
            separate.computeInputGradient()
            var generator = Generator(seed: 11)
            let x = (0..<(batch * shape.reduce(1, *))).map { _ in generator.nextGaussian() }
            let dy = (0..<(batch * fused.outputShape.reduce(1, *))).map { _ in generator.nextGaussian() }
            let count = batch * fused.outputShape.reduce(1, *)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: fused.forward(x, batch: batch, training: true), count: count)),
                           Array(UnsafeBufferPointer(start: separate.forward(x, batch: batch, training: true), count: count)))
            fused.parameters.zeroGradients()
            separate.parameters.zeroGradients()
            let dxFused = Array(UnsafeBufferPointer(start: fused.backward(outputGradient: dy, batch: batch), count: x.count))
            let dxSeparate = Array(UnsafeBufferPointer(start: separate.backward(outputGradient: dy, batch: batch), count: x.count))
            XCTAssertEqual(dxFused, dxSeparate)
            XCTAssertEqual(Array(fused.parameters.gradients), Array(separate.parameters.gradients))
            XCTAssertTrue(dxFused.contains { $0 != 0 })
        }
    }

    func test_sameAndValidOutputShapes() throws {
        let same = try Model(inputShape: [1, 28, 28], layers: [.conv2d(4, kernel: 5, padding: .same)])
        XCTAssertEqual(same.outputShape, [4, 28, 28])
        let valid = try Model(inputShape: [1, 28, 28], layers: [.conv2d(4, kernel: 3), .maxPool(2), .conv2d(8, kernel: 3), .maxPool(2)])
        XCTAssertEqual(valid.outputShape, [8, 5, 5])
        let strided = try Model(inputShape: [1, 28, 28], layers: [.conv2d(4, kernel: 3, stride: 2, padding: .same)])
        XCTAssertEqual(strided.outputShape, [4, 14, 14])
    }

    func test_maxPoolRoutesTheGradientToTheArgMax() throws {
        let model = try Model(inputShape: [1, 2, 4], layers: [.maxPool(2)], maxBatch: 1)
        let x: [Float] = [1, 5, 2, 2,
                          3, 4, 9, 2]
        let y = model.forward(x, batch: 1, training: true)
        XCTAssertEqual([y[0], y[1]], [5, 9])
        let dx = model.backward(outputGradient: [10, 20], batch: 1)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: dx, count: 8)), [0, 10, 0, 0, 0, 0, 20, 0])
    }

    func test_batchNormRunningStatisticsFollowTheMomentum() throws {
        let model = try Model(inputShape: [1], layers: [.batchNorm(momentum: 0.1)], maxBatch: 4)
        let norm = try XCTUnwrap(model.layers.first as? BatchNorm)
        // Batch [1, 2, 3, 4]: mean 2.5, unbiased variance 5/3.
        _ = model.forward([1, 2, 3, 4], batch: 4, training: true)
        XCTAssertEqual(model.parameters.buffer(of: norm.runningMean)[0], 0.25, accuracy: 1e-6)
        XCTAssertEqual(model.parameters.buffer(of: norm.runningVariance)[0], 0.9 + 0.1 * 5 / 3, accuracy: 1e-6)
        _ = model.forward([1, 2, 3, 4], batch: 4, training: true)
        XCTAssertEqual(model.parameters.buffer(of: norm.runningMean)[0], 0.9 * 0.25 + 0.25, accuracy: 1e-6)
        // Evaluation normalizes with the running statistics, not the batch's.
        let y = model.forward([0.475], batch: 1, training: false)
        XCTAssertEqual(y[0], 0, accuracy: 1e-6)
    }

    func test_evaluationModeIsDeterministic() throws {
        let model = try Model(inputShape: [1, 6, 6], layers: [
            .conv2d(2, kernel: 3, activation: .relu), .batchNorm(), .dropout(0.5), .flatten, .dense(3),
        ], maxBatch: 2, seed: 2)
        let x = (0..<72).map { Float($0 % 7) / 7 }
        _ = model.forward(x, batch: 2, training: true)
        let first = Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: false), count: 6))
        let second = Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: false), count: 6))
        XCTAssertEqual(first, second)
    }

    func test_modelsBuiltInSwiftMatchTheirConfig() throws {
        // W2 of WORKLOADS.md: 121,930 parameters.
        let w2 = try Model(inputShape: [1, 28, 28], layers: [
            .conv2d(32, kernel: 3, activation: .relu), .maxPool(2),
            .conv2d(64, kernel: 3, activation: .relu), .maxPool(2),
            .flatten, .dense(64, activation: .relu), .dense(10),
        ])
        XCTAssertEqual(w2.parameters.count, 121_930)
        // W3: 3,274,634 parameters.
        let w3 = try Model(inputShape: [1, 28, 28], layers: [
            .conv2d(32, kernel: 5, padding: .same, activation: .relu), .maxPool(2),
            .conv2d(64, kernel: 5, padding: .same, activation: .relu), .maxPool(2),
            .flatten, .dense(1024, activation: .relu), .dropout(0.4), .dense(10),
        ], maxBatch: 1)
        XCTAssertEqual(w3.parameters.count, 3_274_634)
    }

    func test_shapeMistakesAreErrorsNotTraps() {
        XCTAssertThrowsError(try Model(inputShape: [784], layers: [.conv2d(4, kernel: 3)])) { error in
            XCTAssertTrue("\(error)".contains("conv2d needs image input"), "\(error)")
        }
        XCTAssertThrowsError(try Model(inputShape: [1, 2, 2], layers: [.conv2d(4, kernel: 3)])) { error in
            XCTAssertTrue("\(error)".contains("larger than"), "\(error)")
        }
        XCTAssertThrowsError(try Model(inputShape: [1, 2, 2], layers: [.maxPool(3)]))
    }
}

final class ScheduleTests: XCTestCase {
    func test_schedulesMatchTheirFormulas() {
        let total = 100
        let constant = LearningRateSchedule(baseRate: 0.1)
        XCTAssertEqual(constant.rate(step: 57, totalSteps: total), 0.1)

        let step = LearningRateSchedule(kind: .step, baseRate: 0.1, stepSize: 30, gamma: 0.5)
        XCTAssertEqual(step.rate(step: 29, totalSteps: total), 0.1, accuracy: 1e-7)
        XCTAssertEqual(step.rate(step: 30, totalSteps: total), 0.05, accuracy: 1e-7)
        XCTAssertEqual(step.rate(step: 61, totalSteps: total), 0.025, accuracy: 1e-7)

        let cosine = LearningRateSchedule(kind: .cosine, baseRate: 0.1, minimumRate: 0.01)
        XCTAssertEqual(cosine.rate(step: 0, totalSteps: total), 0.1, accuracy: 1e-7)
        XCTAssertEqual(cosine.rate(step: 50, totalSteps: total), 0.055, accuracy: 1e-7)
        XCTAssertEqual(cosine.rate(step: 100, totalSteps: total), 0.01, accuracy: 1e-7)

        // get_linear_schedule_with_warmup(warmup 10, total 100): 0 at step 0, peak at 10, 0 at 100.
        let linear = LearningRateSchedule(kind: .linearWarmup, baseRate: 0.1, warmupSteps: 10)
        XCTAssertEqual(linear.rate(step: 0, totalSteps: total), 0)
        XCTAssertEqual(linear.rate(step: 5, totalSteps: total), 0.05, accuracy: 1e-7)
        XCTAssertEqual(linear.rate(step: 10, totalSteps: total), 0.1, accuracy: 1e-7)
        XCTAssertEqual(linear.rate(step: 55, totalSteps: total), 0.05, accuracy: 1e-7)
        XCTAssertEqual(linear.rate(step: 100, totalSteps: total), 0)

        let warmCosine = LearningRateSchedule(kind: .warmupCosine, baseRate: 0.1, warmupSteps: 20)
        XCTAssertEqual(warmCosine.rate(step: 10, totalSteps: total), 0.05, accuracy: 1e-7)
        XCTAssertEqual(warmCosine.rate(step: 20, totalSteps: total), 0.1, accuracy: 1e-7)
        XCTAssertEqual(warmCosine.rate(step: 60, totalSteps: total), 0.05, accuracy: 1e-7)
    }

    func test_adamWDecaysDecoupledFromTheGradient() {
        // θ = 2, g = 0, λ = 0.5, lr = 0.1: θ ← 2·(1 − 0.05) = 1.9, then the Adam step of g = 0 is 0.
        // Plain Adam with the same λ adds λθ to g and moves by lr·sign = 0.1 instead.
        let adamw = Adam(count: 1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.5, decay: DecayRanges(mask: [1]), decoupled: true)
        var theta: [Float] = [2]
        theta.withUnsafeMutableBufferPointer { p in [Float(0)].withUnsafeBufferPointer { adamw.step(parameters: p, gradients: $0, learningRate: 0.1) } }
        XCTAssertEqual(theta[0], 1.9, accuracy: 1e-6)
        // Second step with g = 1: θ = 1.9·0.95 = 1.805, m = 0.1, v = 0.001, m̂ = 1/1.9 ... step lr·m̂/sqrt(v̂):
        // m = 0.9·0 + 0.1·1 = 0.1, v = 0.999·0 + 0.001 = 0.001; m̂ = 0.1/0.19, v̂ = 0.001/0.001999.
        theta.withUnsafeMutableBufferPointer { p in [Float(1)].withUnsafeBufferPointer { adamw.step(parameters: p, gradients: $0, learningRate: 0.1) } }
        let mHat = 0.1 / 0.19, vHat = 0.001 / 0.001999
        XCTAssertEqual(Double(theta[0]), 1.805 - 0.1 * mHat / (vHat.squareRoot() + 1e-8), accuracy: 1e-5)
    }

    func test_gradientClippingByGlobalNorm() {
        var g: [Float] = [3, 4]
        let norm = g.withUnsafeMutableBufferPointer { clipGradientNorm($0, maxNorm: 1) }
        XCTAssertEqual(norm, 5)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-5)
        var small: [Float] = [0.3, 0.4]
        small.withUnsafeMutableBufferPointer { _ = clipGradientNorm($0, maxNorm: 1) }
        XCTAssertEqual(small, [0.3, 0.4])
    }
}
