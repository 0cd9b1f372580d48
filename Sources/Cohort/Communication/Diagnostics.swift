import CCohort
import Foundation

extension Communicator {
    /// Root receives every rank's text (rank order, at most 256 UTF-8 bytes each); others get [].
    public func gatherStrings(_ text: String, root: Int) -> [String] {
        var bytes = Array(text.utf8.prefix(256))
        bytes += [UInt8](repeating: 0, count: 256 - bytes.count)
        let words = stride(from: 0, to: 256, by: 8).map { offset in
            bytes[offset..<offset + 8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        return gather(words, root: root).map { rankWords in
            let rankBytes = rankWords.flatMap { word in (0..<8).map { UInt8((word >> (8 * UInt64($0))) & 0xFF) } }
            return String(decoding: rankBytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

/// Median seconds of one in-place sum all-reduce of `floats` values (after a warm-up).
/// With `cold`, each repetition first does what a training step does to the caches before its
/// all-reduce: it writes the whole buffer (as backward writes the gradients) after streaming
/// through `coldBytes` of other memory (as forward and backward do through activations and
/// workspaces), so MPI's own buffers are no longer in cache.
/// With `shared`, the buffer is the communicator's reduction buffer (what training sums its
/// gradients in): nil on every rank when the communicator has none.
public func measureAllReduce(_ communicator: Communicator, floats: Int, repeats: Int, cold: Bool = false,
                             coldBytes: Int = 256 << 20, shared: Bool = false) -> Double? {
    withAllReduceBuffer(communicator, floats: floats, shared: shared) { buffer in
        timeAllReduce(communicator, buffer, repeats: repeats, cold: cold, coldBytes: coldBytes)
    }
}

private func timeAllReduce(_ communicator: Communicator, _ buffer: UnsafeMutableBufferPointer<Float>, repeats: Int,
                           cold: Bool, coldBytes: Int) -> Double {
    buffer.update(repeating: 1)
    let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: cold ? coldBytes / 4 : 0)
    defer { scratch.deallocate() }
    if cold { scratch.initialize(repeating: 0) }
    for _ in 0..<3 { communicator.allReduceSum(buffer) }
    var times: [Double] = []
    for repetition in 0..<repeats {
        if cold {
            scratch.update(repeating: Float(repetition))
            buffer.update(repeating: Float(repetition % 7) * 1e-3)
        }
        communicator.barrier()
        let start = monotonicNanoseconds()
        communicator.allReduceSum(buffer)
        times.append(seconds(since: start))
    }
    // Every rank's time counts: the slowest rank's median is what a step waits for.
    return communicator.allReduceMax([median(times)])[0]
}

/// The ranks (known to every rank) that did not end an in-place sum all-reduce of `floats`
/// values with the exact sums: the values are small integers, so any summation order is exact.
/// With `shared`, the communicator's reduction buffer is checked: nil when it has none.
public func checkAllReduce(_ communicator: Communicator, floats: Int, shared: Bool) -> [Int]? {
    withAllReduceBuffer(communicator, floats: floats, shared: shared) { buffer in
        let (rank, size) = (communicator.rank, communicator.size)
        for index in buffer.indices { buffer[index] = Float(index % 1021 + 3 * rank) }
        communicator.allReduceSum(buffer)
        let wrong = buffer.indices.contains { buffer[$0] != Float(size * ($0 % 1021) + 3 * size * (size - 1) / 2) }
        var flags = [Double](repeating: 0, count: size)
        flags[rank] = wrong ? 1 : 0
        let agreed = communicator.allReduceMax(flags)
        return agreed.indices.filter { agreed[$0] > 0 }
    }
}

/// `body` on `floats` values: with `shared` the communicator's reduction buffer (nil on every
/// rank when it has none; it lives until the communicator is finalized), otherwise memory of
/// this call's own.
private func withAllReduceBuffer<Result>(_ communicator: Communicator, floats: Int, shared: Bool,
                                         _ body: (UnsafeMutableBufferPointer<Float>) -> Result) -> Result? {
    if shared {
        return communicator.nodeMemory?.makeReductionBuffer(count: floats).map { body($0.buffer) }
    }
    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
    defer { buffer.deallocate() }
    return body(buffer)
}

/// OpenBLAS's thread count and kernel family, as this process sees them.
public func blasDescription() -> String {
    "\(openblas_get_num_threads()) thread(s), \(String(cString: cohort_openblas_corename())) kernels"
}

/// Median GFLOP/s of C[m, n] = A[m, k] · B[k, n] in single precision.
public func measureGEMM(m: Int, n: Int, k: Int, repeats: Int) -> Double {
    var generator = Generator(seed: 1)
    let a = (0..<(m * k)).map { _ in generator.nextUnitFloat() }
    let b = (0..<(k * n)).map { _ in generator.nextUnitFloat() }
    var c = [Float](repeating: 0, count: m * n)
    // Enough products per timing that each lasts a few milliseconds.
    let inner = max(1, Int(2e8 / Double(2 * m * n * k)))
    var rates: [Double] = []
    for _ in 0..<(repeats + 1) {
        let start = monotonicNanoseconds()
        for _ in 0..<inner {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c, Int32(n))
        }
        rates.append(Double(2 * m * n * k * inner) / seconds(since: start) / 1e9)
    }
    return median(Array(rates.dropFirst()))
}
