import XCTest
@testable import Cohort

/// Every layer's backward pass against central finite differences.
///
/// The probe loss is L = Σ r ⊙ y for a fixed random r, accumulated in Double. With step
/// h = 1e-2 on O(1) values in Float32, truncation error is O(h²) ≈ 1e-4 and rounding error about
/// ε·|L|/h ≈ 1e-4, so a correct gradient agrees to ~1e-3 relative; the tolerance 2e-2 leaves room
/// for that and still fails on a wrong index, a missing term or a transposed product, each of
/// which is off by O(1).
final class GradientCheckTests: XCTestCase {
    static let tolerance = 2e-2

    func test_denseGradientsMatchFiniteDifferences() throws {
        try checkModel([.dense(5)], inputShape: [7], batch: 3)
        try checkModel([.dense(3, bias: false)], inputShape: [4], batch: 2)
    }

    /// Dense products in panels of 16 columns, tiles of 6, 4, 2 and 1 rows and chunks of 256
    /// along k (`PanelProduct`): 300 inputs and 37 units reach a second chunk and a narrow last
    /// panel in forward (k 300, 3 panels) and in the input gradient (k 37, 19 panels); batches
    /// of 11 and 8 give tiles of 6 + 4 + 1 and 6 + 2 rows.
    func test_denseGradientsMatchFiniteDifferencesAcrossPanelsTilesAndChunks() throws {
        try checkModel([.dense(37)], inputShape: [300], batch: 11, inputStride: 13, parameterStride: 29)
        try checkModel([.dense(37, bias: false)], inputShape: [300], batch: 8, inputStride: 13, parameterStride: 29)
    }

    func test_denseOnImageInputFlattensRows() throws {
        try checkModel([.flatten, .dense(3, initializer: .heNormal)], inputShape: [2, 3, 2], batch: 2)
    }

    /// The LSTM recurrence in panels (8 units forward, 32 backward) and tiles of 6 rows: 40 units
    /// over 2 layers and a batch of 7 reach full and partial panels and a partial tile (every
    /// 17th of the 20,000 parameters: all four gates of units in every panel).
    func test_lstmGradientsMatchFiniteDifferencesAcrossPanelsAndRowTiles() throws {
        try checkModel([.family(LSTMOptions(hidden: 40, layers: 2))], inputShape: [4, 3], batch: 7, parameterStride: 17)
    }

    /// Attention's per-head products in tiles of 6 rows × 16 columns over the causal half: 40
    /// positions give whole and partial tiles of both kinds and column tiles past the diagonal
    /// (every 11th input, every 5th parameter).
    func test_causalAttentionGradientsMatchFiniteDifferencesAcrossTiles() throws {
        try checkModel([.family(AttentionOptions(heads: 2))], inputShape: [40, 8], batch: 2, inputStride: 11, parameterStride: 5)
    }

    /// Layer norm's sums in 8 lanes and a tail: 21 features are two whole lane groups and 5 more.
    func test_layerNormGradientsMatchFiniteDifferencesAcrossLanes() throws {
        try checkModel([.dense(21), .family(LayerNormOptions()), .dense(3)], inputShape: [4, 5], batch: 3)
    }

    func test_activationGradientsMatchFiniteDifferences() throws {
        for kind in ActivationKind.allCases + [.leakyRelu(slope: 0.2)] {
            try checkModel([.activation(kind)], inputShape: [11], batch: 4)
        }
    }

    func test_mlpGradientsMatchFiniteDifferences() throws {
        try checkModel([.dense(6, activation: .relu, initializer: .heNormal), .dense(4)], inputShape: [5], batch: 3)
    }

    func test_conv2dGradientsMatchFiniteDifferencesForBothPaddingsAndStrides() throws {
        for (padding, stride, kernel) in [(Padding.valid, 1, 3), (.same, 1, 3), (.valid, 2, 3), (.same, 2, 3), (.same, 1, 5), (.same, 2, 1)] {
            try checkModel([.conv2d(3, kernel: kernel, stride: stride, padding: padding)], inputShape: [2, 6, 5], batch: 2)
        }
        try checkModel([.conv2d(2, kernel: 3, bias: false)], inputShape: [1, 4, 4], batch: 2)
    }

    /// Conv2D works through the batch in chunks of about 1,600 output pixels: with 30×30
    /// outputs each sample is its own chunk, so a batch of 3 crosses two chunk boundaries; with
    /// 24×24 outputs a chunk holds 2 samples (interleaved in the GEMM's columns) and a batch of
    /// 3 ends with a chunk of 1; the stride-2 case has a chunk of 4 and one of 1 (21×22 outputs:
    /// 3 samples' worth of pixels, rounded to the nearest power of two), and its input's last row
    /// and column no window reads.
    /// (No ReLU here: with 5,400 outputs some lie within ±h of its kink, where differences lie.)
    func test_conv2dGradientsAcrossBatchChunks() throws {
        let specs: [LayerSpec] = [.conv2d(2, kernel: 3, padding: .same)]
        let conv = try XCTUnwrap(try Model(inputShape: [1, 30, 30], layers: specs, maxBatch: 3).layers.first as? Conv2D)
        XCTAssertEqual(conv.chunk, 1)
        // Every 7th input (coprime with the widths, so every row, column and sample is probed).
        try checkModel(specs, inputShape: [1, 30, 30], batch: 3, inputStride: 7)
        let pairs = try XCTUnwrap(try Model(inputShape: [2, 24, 24], layers: specs, maxBatch: 3).layers.first as? Conv2D)
        XCTAssertEqual(pairs.chunk, 2)
        try checkModel(specs, inputShape: [2, 24, 24], batch: 3, inputStride: 7)
        let strided: [LayerSpec] = [.conv2d(2, kernel: 2, stride: 2)]
        let oddChunk = try XCTUnwrap(try Model(inputShape: [1, 43, 45], layers: strided, maxBatch: 5).layers.first as? Conv2D)
        XCTAssertEqual(oddChunk.chunk, 4)
        try checkModel(strided, inputShape: [1, 43, 45], batch: 5, inputStride: 7)
    }

    func test_poolingGradientsMatchFiniteDifferences() throws {
        try checkModel([.maxPool(2)], inputShape: [2, 4, 6], batch: 2)
        try checkModel([.maxPool(2)], inputShape: [1, 7, 5], batch: 1)
        try checkModel([.conv2d(2, kernel: 3, padding: .same), .maxPool(2)], inputShape: [2, 5, 6], batch: 2)  // fused into one layer  // a row and a column no window covers
        try checkModel([.maxPool(3, stride: 2)], inputShape: [1, 7, 7], batch: 2)
        try checkModel([.averagePool(2)], inputShape: [2, 4, 4], batch: 2)
        try checkModel([.globalAveragePool], inputShape: [3, 3, 2], batch: 2)
    }

    func test_batchNormGradientsMatchFiniteDifferences() throws {
        // Training mode: the statistics depend on the whole batch, which the probe includes.
        try checkModel([.batchNorm()], inputShape: [3, 2, 2], batch: 3)
        try checkModel([.dense(4), .batchNorm(), .activation(.tanh)], inputShape: [3], batch: 5)
    }

    func test_dropoutGradientUsesTheSameMask() throws {
        // The probe re-runs forward for every perturbation; a fresh mask each time would break
        // finite differences, so the check pins the generator state before each forward.
        let model = try Model(inputShape: [20], layers: [.dropout(0.5)], maxBatch: 2, seed: 1)
        let dropout = try XCTUnwrap(model.randomizedLayers.first)
        let start = dropout.generator
        let x = (0..<40).map { Float($0) + 1 }
        let y = Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: true), count: 40))
        XCTAssertTrue(zip(x, y).allSatisfy { $0.1 == 0 || $0.1 == 2 * $0.0 }, "every entry dropped or scaled by 1/(1-p)")
        let kept = zip(x, y).filter { $0.1 != 0 }
        XCTAssertTrue(kept.allSatisfy { abs($0.1 - 2 * $0.0) < 1e-5 }, "kept entries are scaled by 1/(1-p)")
        XCTAssertTrue((10...30).contains(kept.count), "about half kept, got \(kept.count)")
        let dx = Array(UnsafeBufferPointer(start: model.backward(outputGradient: [Float](repeating: 1, count: 40), batch: 2), count: 40))
        XCTAssertEqual(dx, y.enumerated().map { $0.element == 0 ? 0 : 2 })
        XCTAssertEqual(Array(UnsafeBufferPointer(start: model.forward(x, batch: 2, training: false), count: 40)), x, "identity at evaluation")
        XCTAssertNotEqual(dropout.generator, start)
    }

    func test_residualBlockGradientsMatchFiniteDifferences() throws {
        try checkModel([.residual([.conv2d(2, kernel: 3, padding: .same, activation: .relu), .conv2d(2, kernel: 3, padding: .same)])],
                       inputShape: [2, 4, 4], batch: 2)
        // With a projection shortcut (channels and stride change).
        try checkModel([.residual([.conv2d(3, kernel: 3, stride: 2, padding: .same), .batchNorm()], activation: .tanh)],
                       inputShape: [2, 4, 4], batch: 3)
    }

    func test_lossGradientsMatchFiniteDifferences() {
        let batch = 4
        var generator = Generator(seed: 3)
        for (loss, width, labels) in [(Loss.softmaxCrossEntropy(smoothing: 0.1), 5, [Int32(0), 4, 2, 1]),
                                      (.binaryCrossEntropy, 1, [0, 1, 1, 0]),
                                      (.meanSquaredError, 3, [0, 2, 1, 1]),
                                      (.meanSquaredError, 1, [0, 2, 1, 1])] {
            var outputs = (0..<(batch * width)).map { _ in generator.nextGaussian() * 2 }
            var gradient = [Float](repeating: 0, count: outputs.count)
            _ = loss.evaluate(outputs: outputs, labels: labels, batch: batch, width: width, gradient: &gradient, gradientScale: 0.5)
            let h: Float = 1e-2
            for index in outputs.indices {
                let saved = outputs[index]
                outputs[index] = saved + h
                let plus = loss.evaluate(outputs: outputs, labels: labels, batch: batch, width: width, gradient: nil).lossSum
                outputs[index] = saved - h
                let minus = loss.evaluate(outputs: outputs, labels: labels, batch: batch, width: width, gradient: nil).lossSum
                outputs[index] = saved
                assertClose((plus - minus) / Double(2 * h) * 0.5, Double(gradient[index]), "\(loss.name) output \(index)")
            }
        }
    }

    func test_binaryCrossEntropyIsExactForLargeLogits() {
        let totals = Loss.binaryCrossEntropy.evaluate(outputs: [80, -80], labels: [0, 1], batch: 2, width: 1, gradient: nil)
        XCTAssertEqual(totals.lossSum, 160, accuracy: 1e-3)
    }

    func test_softmaxCrossEntropyGradientMatchesFiniteDifferences() {
        let (batch, classes) = (4, 5)
        var generator = Generator(seed: 11)
        var logits = (0..<(batch * classes)).map { _ in generator.nextGaussian() * 3 }
        let labels: [Int32] = [0, 4, 2, 2]
        let scale: Float = 1 / Float(batch)
        var gradient = [Float](repeating: 0, count: logits.count)
        _ = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, batch: batch, classes: classes,
                                         gradient: &gradient, gradientScale: scale)
        let h: Float = 1e-2
        for index in logits.indices {
            let saved = logits[index]
            logits[index] = saved + h
            let plus = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, batch: batch, classes: classes, gradient: nil).lossSum
            logits[index] = saved - h
            let minus = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, batch: batch, classes: classes, gradient: nil).lossSum
            logits[index] = saved
            let numeric = (plus - minus) / Double(2 * h) * Double(scale)
            assertClose(numeric, Double(gradient[index]), "logit \(index)")
        }
    }

    func test_softmaxCrossEntropyIsStableForHugeLogits() {
        let logits: [Float] = [1000, -1000, 0, 999]
        var gradient = [Float](repeating: 0, count: 4)
        let totals = SoftmaxCrossEntropy.evaluate(logits: logits, labels: [3], batch: 1, classes: 4, gradient: &gradient)
        XCTAssertEqual(totals.lossSum, 1.3133, accuracy: 1e-3) // log(1 + e^-1)
        XCTAssertTrue(gradient.allSatisfy(\.isFinite))
        XCTAssertEqual(gradient.reduce(0, +), 0, accuracy: 1e-6)
    }
}

/// The finite-difference harness, shared by every test class that checks layers.
extension XCTestCase {
    func assertClose(_ numeric: Double, _ analytic: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let error = abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-2)
        XCTAssertLessThan(error, GradientCheckTests.tolerance, "\(what): numeric \(numeric), analytic \(analytic)", file: file, line: line)
    }

    /// Checks d(Σ r ⊙ model(x))/dx and /dθ for every input and parameter element.
    /// With `vocabulary`, the inputs are token ids in [0, vocabulary) (repeats included), which
    /// have no gradient: only the parameters are checked.
    /// `inputStride` > 1 probes every that-many-th input only (large inputs: each probe is two
    /// forward passes; every parameter is still probed).
    /// `inputStride`, `parameterStride`: every n-th input and parameter (all by default).
    func checkModel(_ specs: [LayerSpec], inputShape: [Int], batch: Int, vocabulary: Int? = nil, inputStride: Int = 1,
                    parameterStride: Int = 1, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try Model(inputShape: inputShape, layers: specs, maxBatch: batch, seed: 5)
        model.computeInputGradient()
        var generator = Generator(seed: 9)
        let inputCount = batch * inputShape.reduce(1, *)
        // Inputs kept away from 0 so that no ReLU kink lies within ±h.
        var x = (0..<inputCount).map { index -> Float in
            if let vocabulary { return Float(index * 7 % vocabulary) }
            let value = generator.nextGaussian()
            return value >= 0 ? value + 0.1 : value - 0.1
        }
        let outputCount = batch * model.outputShape.reduce(1, *)
        let r = (0..<outputCount).map { _ in generator.nextGaussian() }

        func loss() -> Double {
            let y = model.forward(x, batch: batch, training: true)
            return (0..<outputCount).reduce(0.0) { $0 + Double(y[$1]) * Double(r[$1]) }
        }

        model.parameters.zeroGradients()
        _ = loss()
        let inputGradient = Array(UnsafeBufferPointer(start: model.backward(outputGradient: r, batch: batch), count: inputCount))
        let parameterGradient = Array(model.parameters.gradients)

        let h: Float = 1e-2
        for index in stride(from: 0, to: inputCount, by: inputStride) where vocabulary == nil {
            let saved = x[index]
            x[index] = saved + h
            let plus = loss()
            x[index] = saved - h
            let minus = loss()
            x[index] = saved
            assertClose((plus - minus) / Double(2 * h), Double(inputGradient[index]), "input \(index)", file: file, line: line)
        }
        let values = model.parameters.values
        for index in stride(from: 0, to: values.count, by: parameterStride) {
            let saved = values[index]
            values[index] = saved + h
            let plus = loss()
            values[index] = saved - h
            let minus = loss()
            values[index] = saved
            let name = model.parameters.entries.last { $0.offset <= index }?.name ?? "?"
            assertClose((plus - minus) / Double(2 * h), Double(parameterGradient[index]), "\(name)[\(index)]", file: file, line: line)
        }
    }
}
