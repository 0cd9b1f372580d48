import CCohort
import Foundation

/// One `cblas_sgemm` call as Cohort makes it (row-major): its shape, strides and scalars.
public struct GEMMCall: Hashable, Comparable, CustomStringConvertible, Sendable {
    public let transposeA: Bool, transposeB: Bool
    public let m: Int, n: Int, k: Int
    public let lda: Int, ldb: Int, ldc: Int
    public let alpha: Float, beta: Float

    public var description: String {
        "sgemm(\(transposeA ? "T" : "N")\(transposeB ? "T" : "N"), m \(m), n \(n), k \(k), lda \(lda), ldb \(ldb), ldc \(ldc), "
            + "alpha \(alpha), beta \(beta))"
    }

    public static func < (a: GEMMCall, b: GEMMCall) -> Bool {
        (a.m * a.n * a.k, a.description) < (b.m * b.n * b.k, b.description)
    }
}

/// Every SGEMM of Cohort's layers goes through `sgemm`, which can note the calls of a step, so
/// that the library is checked on exactly those: the shapes, transposes, strides and scalars
/// the model uses, on the kernels OpenBLAS picked for this CPU.
public enum BLASCalls {
    nonisolated(unsafe) public private(set) static var isRecording = false
    nonisolated(unsafe) private static var recorded = Set<GEMMCall>()
    private static let lock = NSLock()

    /// Notes every call from now until `stopRecording()`.
    public static func startRecording() {
        lock.withLock { recorded.removeAll() }
        isRecording = true
    }

    /// The distinct calls noted since `startRecording()`, smallest first.
    public static func stopRecording() -> [GEMMCall] {
        isRecording = false
        return lock.withLock { recorded.sorted() }
    }

    static func record(_ call: GEMMCall) {
        lock.withLock { _ = recorded.insert(call) }
    }
}

/// `cblas_sgemm` in row-major order, noted while `BLASCalls` records.
@inline(__always)
func sgemm(_ transposeA: CBLAS_TRANSPOSE, _ transposeB: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32, _ alpha: Float,
           _ a: UnsafePointer<Float>, _ lda: Int32, _ b: UnsafePointer<Float>, _ ldb: Int32,
           _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) {
    if BLASCalls.isRecording {
        BLASCalls.record(GEMMCall(transposeA: transposeA == CblasTrans, transposeB: transposeB == CblasTrans,
                                  m: Int(m), n: Int(n), k: Int(k), lda: Int(lda), ldb: Int(ldb), ldc: Int(ldc), alpha: alpha, beta: beta))
    }
    cblas_sgemm(CblasRowMajor, transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

/// A call checked against a float64 reference.
public struct GEMMVerdict: Sendable {
    public let call: GEMMCall
    /// The largest error over the elements checked, as a fraction of the float32 bound.
    public let worstFraction: Double
    /// Where it was, and the values.
    public let row: Int, column: Int
    public let got: Float, expected: Double
    public var passed: Bool { worstFraction <= 1 }

    public var failureLine: String {
        String(format: "%@ computes C[%d, %d] = %.9g where float64 gives %.9g: %.3g times the float32 rounding bound",
               call.description, row, column, Double(got), expected, worstFraction)
    }
}

/// Checks the library's SGEMM on given calls against float64 arithmetic.
///
/// The bound is Higham's for a sum of products in any order (Accuracy and Stability of
/// Numerical Algorithms, §3.1): |c − ĉ| ≤ γ(k+2) · (|α| Σ|a·b| + |β·c₀|), γ(n) = n·u / (1 − n·u),
/// u = 2⁻²⁴; k + 2 covers the products' sum, the scaling by α and the addition of β·c₀, in
/// whatever order and blocking the kernel takes them. Operands are drawn from [-1, 1), so no
/// value comes near underflow. A correct library never exceeds it; a kernel that drops, repeats
/// or misplaces a term, reads past a stride or mishandles β lands orders of magnitude above.
public enum BLASCheck {
    /// `elements`: how many elements of each product to check (nil: all of them).
    /// `corrupt` (fault injection only) puts one element of the first product off, as a broken kernel would.
    public static func verify(_ calls: [GEMMCall], elements: Int? = nil, seed: UInt64 = 7, corrupt: Bool = false) -> [GEMMVerdict] {
        var verdicts = [GEMMVerdict?](repeating: nil, count: calls.count)
        verdicts.withUnsafeMutableBufferPointer { verdicts in
            let slots = UnsafeSendableBox(verdicts)
            // Spread over the layer threads, so the calls also run concurrently as in a step.
            LayerThreads.run(parts: calls.count) { index, _ in
                slots.value[index] = verify(calls[index], elements: elements, seed: seed &+ UInt64(index), corrupt: corrupt && index == 0)
            }
        }
        return verdicts.map { $0! }
    }

    static func verify(_ call: GEMMCall, elements: Int?, seed: UInt64, corrupt: Bool = false) -> GEMMVerdict {
        var generator = Generator(seed: seed)
        let aRows = call.transposeA ? call.k : call.m, bRows = call.transposeB ? call.n : call.k
        let a = (0..<(aRows * call.lda)).map { _ in generator.nextUnitFloat() * 2 - 1 }
        let b = (0..<(bRows * call.ldb)).map { _ in generator.nextUnitFloat() * 2 - 1 }
        let initial = (0..<(call.m * call.ldc)).map { _ in generator.nextUnitFloat() * 2 - 1 }
        var c = initial
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    cblas_sgemm(CblasRowMajor, call.transposeA ? CblasTrans : CblasNoTrans, call.transposeB ? CblasTrans : CblasNoTrans,
                                Int32(call.m), Int32(call.n), Int32(call.k), call.alpha, a.baseAddress!, Int32(call.lda),
                                b.baseAddress!, Int32(call.ldb), call.beta, c.baseAddress!, Int32(call.ldc))
                }
            }
        }
        if corrupt { c[0] += 1e-3 }
        let u = 0x1p-24
        let gamma = Double(call.k + 2) * u / (1 - Double(call.k + 2) * u)
        let total = call.m * call.n
        let checked = min(elements ?? total, total)
        var worst = (fraction: -1.0, row: 0, column: 0, expected: 0.0)
        for index in 0..<checked {
            // All elements, or `checked` of them spread over the product (a stride coprime with n).
            let element = checked == total || index == 0 ? index : Int((UInt64(index) &* 0x9E37_79B9_7F4A_7C15) % UInt64(total))
            let (i, j) = (element / call.n, element % call.n)
            var sum = 0.0, magnitude = 0.0
            for p in 0..<call.k {
                let x = Double(call.transposeA ? a[p * call.lda + i] : a[i * call.lda + p])
                let y = Double(call.transposeB ? b[j * call.ldb + p] : b[p * call.ldb + j])
                sum += x * y
                magnitude += abs(x * y)
            }
            let c0 = Double(initial[i * call.ldc + j])
            let expected = Double(call.alpha) * sum + (call.beta == 0 ? 0 : Double(call.beta) * c0)
            let bound = gamma * (abs(Double(call.alpha)) * magnitude + abs(Double(call.beta) * c0)) + Double(Float.leastNormalMagnitude)
            let fraction = abs(Double(c[i * call.ldc + j]) - expected) / bound
            if !(fraction <= worst.fraction) { worst = (fraction.isNaN ? .infinity : fraction, i, j, expected) }
        }
        return GEMMVerdict(call: call, worstFraction: worst.fraction, row: worst.row, column: worst.column,
                           got: c[worst.row * call.ldc + worst.column], expected: worst.expected)
    }

    /// The products of a run's first step checked against float64 (64 elements of each distinct
    /// call): the line that ends the run, naming the call, when the library computes a wrong
    /// result on this CPU; nil when every product is within float32 rounding.
    public static func startupFailure(_ calls: [GEMMCall], rank: Int, corrupt: Bool = false) -> String? {
        guard let failure = verify(calls, elements: 64, corrupt: corrupt).first(where: { !$0.passed }) else { return nil }
        return "rank \(rank): \(kernelsAndCPU()): \(failure.failureLine); "
            + "try another kernel family (OPENBLAS_CORETYPE=Haswell) or another OpenBLAS build; `cohort check-blas --verify CONFIG` checks every element"
    }

    /// The kernel family OpenBLAS picked and the CPU it runs on, for reports.
    public static func kernelsAndCPU() -> String {
        "OpenBLAS \(String(cString: cohort_openblas_corename())) kernels on \(cpuDescription())"
    }
}

/// "AMD EPYC (family 25, model 17; avx512f, avx2)", from /proc/cpuinfo where it exists.
public func cpuDescription() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "an unknown CPU" }
    var fields: [String: String] = [:]
    for line in text.split(separator: "\n") {
        if line.isEmpty { break }
        let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        if parts.count == 2, fields[parts[0]] == nil { fields[parts[0]] = parts[1] }
    }
    let flags = Set((fields["flags"] ?? "").split(separator: " ").map(String.init))
    let vector = ["avx512f", "avx512_bf16", "avx2", "fma"].filter(flags.contains).joined(separator: ", ")
    return "\(fields["model name"] ?? "an unknown CPU") (family \(fields["cpu family"] ?? "?"), model \(fields["model"] ?? "?"); \(vector))"
}

private struct UnsafeSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
