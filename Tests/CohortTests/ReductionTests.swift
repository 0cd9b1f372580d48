import CCohort
import XCTest
@testable import Cohort

/// The pieces of the node shared-memory all-reduce that need no MPI (the whole of it runs under
/// mpirun in MPITrainingTests and MultiHostTests).
final class ReductionTests: XCTestCase {
    func test_slicesCoverTheBufferOnCacheLines() {
        for (count, parts) in [(1, 2), (5, 3), (16, 2), (1_000_003, 3), (3_274_634, 2), (100, 7)] {
            let slices = NodeSharedReduction.slices(count: count, parts: parts)
            XCTAssertEqual(slices.count, parts)
            XCTAssertEqual(slices.first?.lowerBound, 0)
            XCTAssertEqual(slices.last?.upperBound, count)
            for (slice, next) in zip(slices, slices.dropFirst()) {
                XCTAssertEqual(slice.upperBound, next.lowerBound, "\(count) in \(parts)")
                XCTAssertEqual(next.lowerBound % 16, 0, "\(count) in \(parts): a slice starts inside a 64-byte line")
            }
        }
    }

    func test_sumOfSourcesIsInRankOrderAndMayOverwriteASource() {
        // 5 000 values span several of the kernel's blocks; the destination list includes the third source.
        let n = 5_000
        var generator = Generator(seed: 7)
        var sources = (0..<4).map { _ in (0..<n).map { _ in generator.nextUnitFloat() * 1e4 - 5e3 } }
        let expected = (0..<n).map { i in ((sources[0][i] + sources[1][i]) + sources[2][i]) + sources[3][i] }
        var other = [Float](repeating: 0, count: n)
        let (s0, s1, s3) = (sources[0], sources[1], sources[3])
        s0.withUnsafeBufferPointer { p0 in
            s1.withUnsafeBufferPointer { p1 in
                s3.withUnsafeBufferPointer { p3 in
                    sources[2].withUnsafeMutableBufferPointer { p2 in
                        other.withUnsafeMutableBufferPointer { target in
                            let inputs: [UnsafePointer<Float>?] = [p0.baseAddress, p1.baseAddress, UnsafePointer(p2.baseAddress), p3.baseAddress]
                            let outputs: [UnsafeMutablePointer<Float>?] = [p2.baseAddress, target.baseAddress]
                            XCTAssertEqual(cohort_sum_sources(inputs, 4, outputs, 2, n), 1, "finite sums reported as not finite")
                        }
                    }
                }
            }
        }
        XCTAssertEqual(sources[2], expected)
        XCTAssertEqual(other, expected)
    }

    /// The finiteness the trainer acts on: every position of a buffer, in the sum kernel's
    /// blocks and in the vector tail, with values whose sum overflows (still finite).
    func test_finitenessCheckFindsEveryNonFiniteValueAndOnlyThose() {
        let n = 5_003
        var values = [Float](repeating: 3e38, count: n)
        XCTAssertEqual(cohort_all_finite(values, n), 1, "a sum that overflows is not a non-finite value")
        XCTAssertEqual(cohort_all_finite(values, 0), 1)
        for position in [0, 7, 8, 2047, 2048, 4999, 5000, 5002] {
            for bad in [Float.nan, .infinity, -.infinity] {
                values[position] = bad
                XCTAssertEqual(cohort_all_finite(values, n), 0, "\(bad) at \(position)")
                var sum = [Float](repeating: 0, count: n)
                let zeros = [Float](repeating: 0, count: n)
                let found = values.withUnsafeBufferPointer { p0 in
                    zeros.withUnsafeBufferPointer { p1 in
                        sum.withUnsafeMutableBufferPointer { target in
                            let inputs: [UnsafePointer<Float>?] = [p1.baseAddress, p0.baseAddress]
                            let outputs: [UnsafeMutablePointer<Float>?] = [target.baseAddress]
                            return cohort_sum_sources(inputs, 2, outputs, 1, n)
                        }
                    }
                }
                XCTAssertEqual(found, 0, "sum kernel: \(bad) at \(position)")
                values[position] = 3e38
            }
        }
    }
}

/// bfloat16 gradient compression (`training.compress: bf16`): the top 16 bits of a float32,
/// rounded to nearest even, NaN kept NaN.
final class BFloat16Tests: XCTestCase {
    func test_roundsToNearestEvenAndKeepsNaN() {
        let values: [Float] = [1, 1 + 1.0 / 256, 1 + 3.0 / 256, 1 + 1.0 / 512, -2.5, .infinity, .nan, 3.0e38, 1e-30]
        var packed = [UInt16](repeating: 0, count: values.count)
        var back = [Float](repeating: 0, count: values.count)
        cohort_float_to_bf16(values, &packed, values.count)
        cohort_bf16_to_float(packed, &back, values.count)
        XCTAssertEqual(back[0], 1)
        XCTAssertEqual(back[1], 1, "a tie rounds to the even mantissa (down here)")
        XCTAssertEqual(back[2], 1 + 1.0 / 64, "another tie, rounded up to even")
        XCTAssertEqual(back[3], 1, "below half an ulp rounds down")
        XCTAssertEqual(back[4], -2.5)
        XCTAssertEqual(back[5], .infinity)
        XCTAssertTrue(back[6].isNaN)
        XCTAssertEqual(back[7] / 3.0e38, 1, accuracy: 1.0 / 128)
        XCTAssertEqual(back[8] / 1e-30, 1, accuracy: 1.0 / 128)
    }
}
