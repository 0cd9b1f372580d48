import XCTest
@testable import Cohort

/// `PanelProduct` (products.c): every element one fused multiply-add chain in k order over W
/// packed in panels of 16 columns, in tiles of 6, 4, 2 and 1 rows and chunks of 256 along k.
final class PanelProductTests: XCTestCase {
    private struct Case {
        let m: Int, n: Int, k: Int
        let transposeB: Bool, accumulate: Bool
        var a: [Float] = [], b: [Float] = [], c: [Float] = []
        /// Added to each row when not `accumulate` (a Dense layer's bias).
        var bias: [Float]?

        init(m: Int, n: Int, k: Int, transposeB: Bool, accumulate: Bool, bias: Bool = false, seed: UInt64) {
            (self.m, self.n, self.k, self.transposeB, self.accumulate) = (m, n, k, transposeB, accumulate)
            var generator = Generator(seed: seed)
            a = (0..<(m * k)).map { _ in generator.nextGaussian() }
            b = (0..<(k * n)).map { _ in generator.nextGaussian() }
            c = (0..<(m * n)).map { _ in generator.nextGaussian() }
            if bias { self.bias = (0..<n).map { _ in generator.nextGaussian() } }
        }

        /// C's element before the products: the chain's first value.
        func initial(_ i: Int, _ j: Int) -> Float { accumulate ? c[i * n + j] : bias?[j] ?? 0 }

        /// op(B)[i, j]: B [k, n], or B [n, k] read transposed.
        func opB(_ i: Int, _ j: Int) -> Float { transposeB ? b[j * k + i] : b[i * n + j] }

        /// C after the product, for the rows in `rows` (the others as they were).
        func run(rows: [Range<Int>]) -> [Float] {
            var c = self.c
            var packed = [Float](repeating: .nan, count: PanelProduct.scratch(k, n))
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    PanelProduct.multiply(rows: rows, n, k, a.baseAddress!, k, b.baseAddress!, transposeB ? k : n,
                                          transposeB: transposeB, &c, n, accumulate: accumulate, bias: bias, packed: &packed)
                }
            }
            return c
        }
    }

    private let cases: [Case] = [
        // narrow last panel (37 = 2 × 16 + 5), a second chunk of k (300), rows 6 + 6 + 1
        Case(m: 13, n: 37, k: 300, transposeB: false, accumulate: true, seed: 1),
        Case(m: 11, n: 300, k: 37, transposeB: true, accumulate: false, seed: 2),  // 6 + 4 + 1
        Case(m: 11, n: 45, k: 300, transposeB: false, accumulate: false, bias: true, seed: 8),  // from the bias
        Case(m: 8, n: 16, k: 5, transposeB: false, accumulate: false, seed: 3),    // 6 + 2, one whole panel
        Case(m: 1, n: 7, k: 513, transposeB: true, accumulate: true, seed: 4),     // one row, three chunks
        Case(m: 200, n: 70, k: 64, transposeB: false, accumulate: false, seed: 5), // blocks of 96 rows
    ]

    /// Each element within the rounding bound of a chain of k + 1 fused multiply-adds: |ĉ − c| ≤
    /// γ_{k+1} · (|c₀| + Σ|a·b|), γ_j = j·u / (1 − j·u), u = 2⁻²⁴ (Higham, Accuracy and Stability,
    /// (3.5)); a dropped term or a row read twice is off by one term, far above it.
    func test_productsMatchADoubleReferenceWithinTheirRoundingBound() {
        for test in cases {
            let c = test.run(rows: [0..<test.m])
            let u = 0x1p-24, gamma = Double(test.k + 1) * u / (1 - Double(test.k + 1) * u)
            for i in 0..<test.m {
                for j in 0..<test.n {
                    var exact = Double(test.initial(i, j))
                    var magnitude = abs(exact)
                    for l in 0..<test.k {
                        let term = Double(test.a[i * test.k + l]) * Double(test.opB(l, j))
                        (exact, magnitude) = (exact + term, magnitude + abs(term))
                    }
                    XCTAssertLessThanOrEqual(abs(Double(c[i * test.n + j]) - exact), gamma * magnitude,
                                             "\(test.m) × \(test.n) × \(test.k) at [\(i), \(j)]")
                }
            }
        }
    }

    /// A row's bits do not depend on the rows computed with it, nor on the cut over threads:
    /// 3 threads cut a few rows by columns and many by rows, 1 thread takes them all.
    func test_aRowsBitsDependOnNothingElse() {
        defer { LayerThreads.use(1) }
        let few = Case(m: 40, n: 200, k: 300, transposeB: false, accumulate: false, bias: true, seed: 6)  // 4.8 MFLOP
        let many = Case(m: 400, n: 48, k: 160, transposeB: true, accumulate: false, seed: 7)
        for test in cases + [few, many] {
            LayerThreads.use(1)
            let whole = test.run(rows: [0..<test.m]).map(\.bitPattern)
            let cut = test.m / 3
            let apart = test.run(rows: [cut..<test.m, 0..<cut]).map(\.bitPattern)
            LayerThreads.use(3)
            let threaded = test.run(rows: [0..<test.m]).map(\.bitPattern)
            XCTAssertTrue(apart == whole, "\(test.m) × \(test.n) × \(test.k): rows apart differ from the whole")
            XCTAssertTrue(threaded == whole, "\(test.m) × \(test.n) × \(test.k): 3 threads differ from 1")
        }
    }
}
