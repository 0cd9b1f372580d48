import CCohort

/// Sums over the rows of a batch (weight and bias gradients), taken in blocks of whole samples (at
/// least 16 rows) that are the same wherever the samples sit: a micro-batch of b samples and the
/// same samples inside a batch of k·b give the same bits (b·positions a multiple of `rows`), on
/// any kernel family and for any thread count. (Products row by row, forward and input
/// gradients, are `PanelProduct`'s: each element's bits depend on its row alone.)
///
/// Why: OpenBLAS rounds an element of a product differently by the call's shape (the Haswell
/// kernels by a row's place in the call, modulo 12; the SkylakeX/Cooperlake ones by how Cohort
/// cut a product into parts), and a sum over the batch in one call differently from the same
/// sum over two micro-batches. Accumulated and whole batches then took gradients a rounding
/// apart, which is harmless until a ReLU pre-activation within that rounding of 0 falls on the
/// other side of the kink: W1 on 4 ranks, 32 × 2 accumulated against 64, parted at step 32 and
/// drifted to 0.3 relative by step 60 (Cooperlake kernels; Haswell's happened to miss a kink).
/// With every sum over the batch taken block after block in row order, accumulation is the same
/// arithmetic as the whole batch.
struct RowBlocks {
    /// Rows per block: whole samples of `positions` rows, at least 16 rows.
    let rows: Int

    init(positions: Int) {
        rows = positions * ((16 + positions - 1) / positions)
    }

    /// sum[width] += Σ rows[count, width], each block's rows added up first and then added to
    /// `sum`, as `summedProduct` adds a block's product: a batch split between ranks or
    /// micro-batches at block boundaries sums its blocks in the same association.
    func summedRows(_ x: UnsafePointer<Float>, _ count: Int, _ width: Int, into sum: UnsafeMutablePointer<Float>) {
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { partial.deallocate() }
        for start in stride(from: 0, to: count, by: rows) {
            partial.initialize(repeating: 0, count: width)
            cohort_add_rows(x + start * width, partial, min(rows, count - start), width)
            cohort_add_rows(partial, sum, 1, width)
        }
    }

    /// C[m, n] += alpha · Σ over the k rows of A[k, m]ᵀ · B[k, n] (a weight gradient), one
    /// block of rows after the other in row order (`summedBlockProducts`).
    func summedProduct(_ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                       _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        let blocks = stride(from: 0, to: k, by: rows).map { (start: $0, rows: min(rows, k - $0)) }
        summedBlockProducts(m, n, blockRows: rows, blocks: blocks, alpha, a, lda, b, ldb, c, ldc)
    }
}

/// C[m, n] += alpha · Σ over `blocks` (a first row and a row count each), in order, of
/// A[rows, m]ᵀ · B[rows, n]: a weight gradient. For the threads, C is cut into parts along its
/// longer side, as many as its shape and `blockRows` give work for (never by the rows summed or
/// the thread count), and each part adds every block in order: the same calls, so the same
/// bits, on any number of threads.
func summedBlockProducts(_ m: Int, _ n: Int, blockRows: Int, blocks: [(start: Int, rows: Int)], _ alpha: Float,
                         _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                         _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    let side = max(m, n)
    let parts = max(1, min(8, side / 32, m * n * blockRows / (1 << 18)))
    let step = (side + parts - 1) / parts
    LayerThreads.run(parts: parts) { part, _ in
        let first = part * step
        let count = min(step, side - first)
        guard count > 0 else { return }
        for block in blocks {
            let (a, b, k) = (a + block.start * lda, b + block.start * ldb, Int32(block.rows))
            if m >= n {  // rows first..<first+count of C: columns of A
                sgemm(CblasTrans, CblasNoTrans, Int32(count), Int32(n), k, alpha, a + first, Int32(lda),
                      b, Int32(ldb), 1, c + first * ldc, Int32(ldc))
            } else {  // columns first..<first+count of C: columns of B
                sgemm(CblasTrans, CblasNoTrans, Int32(m), Int32(count), k, alpha, a, Int32(lda),
                      b + first, Int32(ldb), 1, c + first, Int32(ldc))
            }
        }
    }
}
