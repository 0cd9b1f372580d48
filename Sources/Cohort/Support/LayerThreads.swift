import CCohort
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Threads inside a rank (`training.threads`). Work is cut into parts by the shape of the
/// problem alone (`LayerThreads.parts`, `gemm`): the same parts, each computed by one thread
/// with single-threaded OpenBLAS, whatever the number of threads, so results are bit for bit
/// the same for any thread count. (OpenBLAS's own threads cut GEMMs by their thread count:
/// W6 trained 5 steps with 1 and with 2 OpenBLAS threads ended with 44 of its 52 tensors
/// different, so Cohort keeps OpenBLAS at one thread and runs the parts itself.)
public enum LayerThreads {
    nonisolated(unsafe) public private(set) static var count = 1

    /// Uses `threads` threads from now on (at least 1), and one OpenBLAS thread per call.
    public static func use(_ threads: Int) {
        count = max(1, threads)
        openblas_set_num_threads(1)
    }

    /// The default thread count: `COHORT_THREADS` where it is set (`launch/cohort-mpirun` sets it
    /// to cores / ranks, OPENBLAS_NUM_THREADS to 1, and binds each rank to that many cores), else
    /// `OPENBLAS_NUM_THREADS`, otherwise the CPUs this process may run on (what mpirun or taskset
    /// bound it to).
    public static func boundCores() -> Int {
        for name in ["COHORT_THREADS", "OPENBLAS_NUM_THREADS"] {
            if let value = getenv(name).flatMap({ Int(String(cString: $0)) }), value > 0 { return value }
        }
        return Int(cohort_bound_cores())
    }

    /// Runs `body(part, worker)` for every part in 0..<parts, parts spread over the threads;
    /// `worker` (0..<min(count, parts)) indexes per-thread scratch. The threads are a pool that
    /// waits for work spinning briefly (`cohort_pool_run`); a region asked for inside a region
    /// runs its parts on the asking thread, worker 0.
    static func run(parts: Int, _ body: (_ part: Int, _ worker: Int) -> Void) {
        let workers = min(count, parts)
        guard workers > 1, cohort_pool_inside() == 0 else {
            for part in 0..<parts { body(part, 0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var region = body
            withUnsafeMutablePointer(to: &region) { pointer in
                cohort_pool_run(parts, workers, { context, part, worker in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(part, worker)
                }, pointer)
            }
        }
    }
}

extension LayerThreads {
    /// Runs an element-wise pass over `count` elements as `body(start, count)` calls spread over
    /// the threads (an optimizer's update). Every element is computed alone, so any cut gives the
    /// same bits; parts of at least 64K elements, starting on 64-byte boundaries.
    static func elementwise(_ count: Int, _ body: (_ start: Int, _ count: Int) -> Void) {
        let parts = max(1, min(LayerThreads.count, count / 65_536))
        run(parts: parts) { part, _ in
            let lower = part == 0 ? 0 : (count * part / parts) & ~15
            let upper = part == parts - 1 ? count : (count * (part + 1) / parts) & ~15
            body(lower, upper - lower)
        }
    }

    /// out[i] = a[i] + b[i] for i < count (a residual sum; out may be a or b), over the threads.
    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        elementwise(count) { start, part in cohort_add(a + start, b + start, out + start, part) }
    }
}

/// C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C, row-major, as `cblas_sgemm`; a
/// product of more than 8 MFLOP is cut into up to 8 parts along its longer output side (never
/// along k, so every element is one dot product as before), the parts fixed by the shape and
/// run on `LayerThreads` (one after the other with `serial`: the same parts, so the same bits, on
/// a thread that is already one of them).
func gemm(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
          _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, serial: Bool = false) {
    let (ta, tb) = (transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans)
    let parts = min(8, 2 * m * n * k / (8 << 20), m >= n ? m / 16 : n / 16)
    guard parts > 1 else {
        sgemm(ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        return
    }
    let side = m >= n ? m : n
    let step = (side + parts - 1) / parts
    func multiply(part: Int) {
        let start = part * step
        let count = min(step, side - start)
        guard count > 0 else { return }
        if m >= n {  // rows start..<start+count of C and of op(A)
            sgemm(ta, tb, Int32(count), Int32(n), Int32(k), alpha, a + (transposeA ? start : start * lda), Int32(lda),
                        b, Int32(ldb), beta, c + start * ldc, Int32(ldc))
        } else {  // columns start..<start+count of C and of op(B)
            sgemm(ta, tb, Int32(m), Int32(count), Int32(k), alpha, a, Int32(lda),
                        b + (transposeB ? start * ldb : start), Int32(ldb), beta, c + start, Int32(ldc))
        }
    }
    if serial {
        for part in 0..<parts { multiply(part: part) }
    } else {
        LayerThreads.run(parts: parts) { part, _ in multiply(part: part) }
    }
}

/// `gemm` with `cblas_sgemm`'s arguments (row-major only), so a call site reads as before.
func gemm(_ order: CBLAS_ORDER, _ transposeA: CBLAS_TRANSPOSE, _ transposeB: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32,
          _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int32, _ b: UnsafePointer<Float>, _ ldb: Int32,
          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) {
    precondition(order == CblasRowMajor, "gemm is row-major")
    gemm(transposeA == CblasTrans, transposeB == CblasTrans, Int(m), Int(n), Int(k), alpha, a, Int(lda), b, Int(ldb), beta, c, Int(ldc))
}
