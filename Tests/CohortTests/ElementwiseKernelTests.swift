import CCohort
import Foundation
import XCTest
@testable import Cohort

/// The elementwise kernels that take an exponential (activations.c): GELU in both forms and the
/// causal softmax rows, against float64, and the promise that a slope kept by a Transformer
/// block's backward (`…_forward_slope`, then `cohort_multiply`) has the bits of one computed there.
final class ElementwiseKernelTests: XCTestCase {
    /// x from −12 to 12, denser near 0, where GELU bends.
    private let inputs: [Float] = (-2400...2400).map { i in
        let t = Double(i) / 200
        return Float(t * t * t / 144 + t / 2)
    }

    private typealias Forward = (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    private typealias Backward = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    private typealias Both = (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void

    /// Value and slope within `tolerance`·(1 + |reference|) of float64; the three entry points agree bit for bit.
    private func check(_ name: String, forward: Forward, backward: Backward, both: Both, tolerance: Double,
                       reference: (Double) -> (value: Double, slope: Double)) {
        let x = inputs, n = x.count
        var generator = Generator(seed: 5)
        let dy = (0..<n).map { _ in generator.nextGaussian() }
        var y = [Float](repeating: .nan, count: n), dx = y, keptY = y, slope = y, keptDx = y
        forward(x, &y, n)
        backward(x, dy, &dx, n)
        both(x, &keptY, &slope, n)
        cohort_multiply(dy, slope, &keptDx, n)
        for i in 0..<n {
            let (value, derivative) = reference(Double(x[i]))
            XCTAssertLessThanOrEqual(abs(Double(y[i]) - value), tolerance * (1 + abs(value)), "\(name)(\(x[i]))")
            XCTAssertLessThanOrEqual(abs(Double(slope[i]) - derivative), tolerance * (1 + abs(derivative)), "\(name)'(\(x[i]))")
            XCTAssertEqual(keptY[i].bitPattern, y[i].bitPattern, "\(name)(\(x[i])): value with and without the slope")
            XCTAssertEqual(keptDx[i].bitPattern, dx[i].bitPattern, "\(name)'(\(x[i])): kept slope against backward")
        }
    }

    /// The kernels' own e^x (`exp_`): within 2 ulp of float64 over [−87, 88] (it reaches about 1),
    /// clamped outside, NaN kept.
    func test_exponentialWithinTwoUlp() {
        let x = (0...1_000_000).map { Float(-87 + 175 * Double($0) / 1_000_000) } + [-1000, 1000, .nan]
        var y = [Float](repeating: 0, count: x.count)
        cohort_exp(x, &y, x.count)
        for i in 0..<(x.count - 3) {
            let expected = exp(Double(x[i]))
            XCTAssertLessThanOrEqual(abs(Double(y[i]) - expected), 2 * Double(Float(expected).ulp), "e^\(x[i])")
        }
        XCTAssertEqual(Double(y[x.count - 3]), exp(-87), accuracy: 1e-44, "e^−1000 is clamped to e^−87")
        XCTAssertEqual(Double(y[x.count - 2]), exp(88), accuracy: 1e32, "e^1000 is clamped to e^88")
        XCTAssertTrue(y[x.count - 1].isNaN)
    }

    func test_geluMatchesFloat64AndItsKeptSlopeItsBackward() {
        // erf by Abramowitz & Stegun 7.1.26 is within 1.5e-7 absolute; float rounding adds a few ulp.
        check("gelu", forward: cohort_gelu_forward, backward: cohort_gelu_backward, both: cohort_gelu_forward_slope,
              tolerance: 1e-6) { x in
            let cdf = 0.5 * (1 + erf(x / 2.0.squareRoot())), pdf = exp(-x * x / 2) / (2 * Double.pi).squareRoot()
            return (x * cdf, cdf + x * pdf)
        }
    }

    func test_geluTanhMatchesFloat64AndItsKeptSlopeItsBackward() {
        check("gelu_tanh", forward: cohort_gelu_tanh_forward, backward: cohort_gelu_tanh_backward,
              both: cohort_gelu_tanh_forward_slope, tolerance: 1e-6) { x in
            let c = (2 / Double.pi).squareRoot()
            let t = tanh(c * (x + 0.044715 * x * x * x))
            return (0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))
        }
    }

    /// Rows of every prefix length 1 … T, T a multiple of 8 and not, scores spread over ±40 so
    /// the exponentials cover e^−80 … 1: each probability within 8 ulp of float64 (the
    /// exponential's 1 ulp, the sum's and the division's rounding), the future exactly 0.
    func test_softmaxRowsMatchFloat64() {
        var generator = Generator(seed: 11)
        for length in [64, 13] {
            for count in 1...length {
                let scores = (0..<length).map { _ in 40 * (2 * generator.nextUnitFloat() - 1) }
                var row = scores
                cohort_softmax_prefix(&row, count, length)
                // x − max as the kernel forms it, in float: e^x's condition number is |x|, so the
                // difference's own rounding is the input's, not the kernel's error.
                let maximum = scores[..<count].max()!
                let exponentials = scores[..<count].map { exp(Double($0 - maximum)) }
                let sum = exponentials.reduce(0, +)
                for j in 0..<count {
                    let expected: Double = exponentials[j] / sum
                    let bound: Double = 8 * Double(Float.ulpOfOne) * expected + 1e-38
                    XCTAssertLessThanOrEqual(abs(Double(row[j]) - expected), bound, "length \(length), count \(count), column \(j)")
                }
                for j in count..<length { XCTAssertEqual(row[j], 0, "length \(length), count \(count), future column \(j)") }
            }
        }
    }

    /// Cross-entropy rows with label smoothing: loss and gradient against float64; a row counts as
    /// correct when its first largest logit is the label (ties go to the lower index, as argmax).
    func test_softmaxCrossEntropyMatchesFloat64AndCountsTheFirstLargestLogit() {
        let classes = 11, smoothing: Float = 0.1, scale: Float = 0.25
        var generator = Generator(seed: 3)
        var logits = (0..<(6 * classes)).map { _ in 6 * generator.nextGaussian() }
        let labels: [Int32] = [0, 3, 10, 4, 7, 5]
        logits[0 * classes + 0] = 50                                        // label 0 the largest: correct
        logits[1 * classes + 2] = 50; logits[1 * classes + 3] = 50         // tie at 2 and 3, label 3: wrong
        logits[2 * classes + 10] = 50                                      // the last class: correct
        logits[3 * classes + 4] = 50; logits[3 * classes + 9] = 50         // tie at 4 and 9, label 4: correct
        logits[4 * classes + 1] = 50                                       // wrong
        logits[5 * classes + 5] = 50                                       // correct
        var gradient = [Float](repeating: .nan, count: logits.count)
        let totals = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, batch: 6, classes: classes, smoothing: smoothing,
                                                  gradient: &gradient, gradientScale: scale)
        XCTAssertEqual(totals.correct, 4)
        var expectedLoss = 0.0
        for row in 0..<6 {
            let z = logits[(row * classes)..<((row + 1) * classes)].map(Double.init)
            let maximum = z.max()!
            let logSum = log(z.map { exp($0 - maximum) }.reduce(0, +))
            for k in 0..<classes {
                let target = Double(smoothing) / Double(classes) + (k == Int(labels[row]) ? 1 - Double(smoothing) : 0)
                let logP = z[k] - maximum - logSum
                expectedLoss -= target * logP
                XCTAssertEqual(Double(gradient[row * classes + k]), (exp(logP) - target) * Double(scale), accuracy: 1e-7, "row \(row), class \(k)")
            }
        }
        XCTAssertEqual(totals.lossSum, expectedLoss, accuracy: 1e-5 * expectedLoss)
    }

    /// The gradient norm's Σ x² (`cohort_sum_squares`, 8 double lanes): within 1e-13 relative of
    /// a compensated sum (the squares are exact in double), for lengths around the lane count, so
    /// that every tail element is counted; an empty buffer has norm 0.
    func test_sumOfSquaresMatchesACompensatedSum() {
        var generator = Generator(seed: 11)
        for n in [0, 1, 7, 8, 9, 15, 17, 100_003] {
            let x = (0..<n).map { _ in generator.nextGaussian() * 1e-2 }
            var (sum, compensation) = (0.0, 0.0)
            for value in x {  // Kahan–Babuška
                let square = Double(value) * Double(value), total = sum + square
                compensation += abs(sum) >= square ? (sum - total) + square : (square - total) + sum
                sum = total
            }
            let reference = sum + compensation
            let got = cohort_sum_squares(x, n)
            XCTAssertLessThanOrEqual(abs(got - reference), 1e-13 * reference, "n = \(n)")
            if n > 0 { XCTAssertGreaterThan(got, 0, "n = \(n)") }
        }
        XCTAssertEqual(clipGradientNorm(UnsafeMutableBufferPointer(start: nil, count: 0), maxNorm: 1), 0)
    }

    /// A head's keys as [columns][rows]: every element in its place, for blocks of 16 and the
    /// rows and columns past them (the AVX-512 path where the CPU has it, else one float at a time).
    func test_transposeMovesEveryElementToItsPlace() {
        for (rows, columns) in [(1, 1), (15, 16), (16, 16), (17, 33), (64, 32), (70, 48), (33, 17)] {
            let ldx = columns + 5
            let x = (0..<(rows * ldx)).map { Float($0) }
            var t = [Float](repeating: .nan, count: rows * columns)
            cohort_transpose(x, ldx, rows, columns, &t)
            let expected = (0..<columns).flatMap { k in (0..<rows).map { j in x[j * ldx + k] } }
            XCTAssertEqual(t, expected, "\(rows) × \(columns)")
        }
    }
}
