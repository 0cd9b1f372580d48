import CCohort

/// Products of a batch's rows by one matrix that is packed once per call (`cohort_panel_product`
/// in products.c): a Dense layer's forward product and its input gradient. Each element of C is
/// one fused multiply-add chain in k order, so its bits depend only on its row and column: a
/// micro-batch computes the same rows as the whole batch, on any thread count and in any clone
/// (AVX-512, AVX2, baseline), with no blocks of whole samples (`RowBlocks`) needed.
enum PanelProduct {
    /// Floats of packing scratch for op(B) [k, n].
    static func scratch(_ k: Int, _ n: Int) -> Int { cohort_panels_size(k, n) }

    /// C[r, n] = op(A)[r, k] · op(B)[k, n] + C[r, n] with `accumulate`, else + `bias` [n] when
    /// there is one, for every row r in `rows`:
    /// op(A) = A [·, k] with row stride `lda`; op(B) = B [k, n] (row stride `ldb`), or Bᵀ with B
    /// [n, k] when `transposeB`. `packed` holds `scratch(k, n)` floats and is overwritten. The
    /// threads take parts of the rows, or of the columns when the rows are few (one pass over a
    /// large matrix each): any cut gives the same bits.
    static func multiply(rows: [Range<Int>], _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                         _ b: UnsafePointer<Float>, _ ldb: Int, transposeB: Bool,
                         _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>? = nil,
                         packed: UnsafeMutablePointer<Float>) {
        let total = rows.reduce(0) { $0 + $1.count }
        guard total > 0, n > 0 else { return }
        let panels = cohort_panel_count(n)
        let threads = 2 * total * n * k >= 1 << 22 ? LayerThreads.count : 1
        let packParts = min(threads, panels)
        LayerThreads.run(parts: packParts) { part, _ in
            cohort_pack_panels(panels * part / packParts, panels * (part + 1) / packParts, k, n, b, ldb, transposeB ? 1 : 0, packed)
        }
        let product = { (range: Range<Int>, p0: Int, p1: Int) in
            cohort_panel_product(range.lowerBound, range.upperBound, p0, p1, n, k, a, lda, 1, packed, c, ldc, accumulate ? 1 : 0, bias)
        }
        if threads > 1, total <= 96 * threads, panels >= threads {
            LayerThreads.run(parts: threads) { part, _ in
                for range in rows { product(range, panels * part / threads, panels * (part + 1) / threads) }
            }
            return
        }
        // Pieces of whole 6-row tiles, about one per thread.
        let piece = max(6, (total + 6 * threads - 1) / (6 * threads) * 6)
        let pieces = rows.flatMap { range in
            stride(from: range.lowerBound, to: range.upperBound, by: piece).map { $0..<min($0 + piece, range.upperBound) }
        }
        LayerThreads.run(parts: pieces.count) { part, _ in product(pieces[part], 0, panels) }
    }
}
