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
        try checkModel([.dense(name: nil, units: 5, activation: nil, initializer: .glorotUniform)], inputShape: [7], batch: 3)
    }

    func test_denseOnImageInputFlattensRows() throws {
        try checkModel([.flatten(name: nil), .dense(name: nil, units: 3, activation: nil, initializer: .heNormal)],
                       inputShape: [2, 3, 2], batch: 2)
    }

    func test_reluGradientsMatchFiniteDifferences() throws {
        try checkModel([.activation(name: nil, kind: .relu)], inputShape: [11], batch: 4)
    }

    func test_mlpGradientsMatchFiniteDifferences() throws {
        try checkModel([.dense(name: nil, units: 6, activation: .relu, initializer: .heNormal),
                        .dense(name: nil, units: 4, activation: nil, initializer: nil)], inputShape: [5], batch: 3)
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

    // MARK: Harness

    private func assertClose(_ numeric: Double, _ analytic: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let error = abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-2)
        XCTAssertLessThan(error, Self.tolerance, "\(what): numeric \(numeric), analytic \(analytic)", file: file, line: line)
    }

    /// Checks d(Σ r ⊙ model(x))/dx and /dθ for every input and parameter element.
    func checkModel(_ specs: [LayerSpec], inputShape: [Int], batch: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try Model(specs: specs, inputShape: inputShape, maxBatch: batch, seed: 5)
        var generator = Generator(seed: 9)
        let inputCount = batch * inputShape.reduce(1, *)
        // Inputs kept away from 0 so that no ReLU kink lies within ±h.
        var x = (0..<inputCount).map { _ -> Float in
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
        for index in 0..<inputCount {
            let saved = x[index]
            x[index] = saved + h
            let plus = loss()
            x[index] = saved - h
            let minus = loss()
            x[index] = saved
            assertClose((plus - minus) / Double(2 * h), Double(inputGradient[index]), "input \(index)", file: file, line: line)
        }
        let values = model.parameters.values
        for index in 0..<values.count {
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
