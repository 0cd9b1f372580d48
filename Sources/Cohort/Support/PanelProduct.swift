import CCohort

/// Products of a batch's rows by one matrix that is packed once per call (`cohort_panel_product`
/// in products.c): Dense layers' and the tied head's forward products and input gradients, and
/// the LSTM's input product and input gradient. Each element of C is
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
    /// large matrix each): any cut gives the same bits. One range of at most 96 rows (one block)
    /// takes `streamed` or `swapped`, which read B once: the same chains, so the same bits.
    static func multiply(rows: [Range<Int>], _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                         _ b: UnsafePointer<Float>, _ ldb: Int, transposeB: Bool,
                         _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>? = nil,
                         packed: UnsafeMutablePointer<Float>) {
        let total = rows.reduce(0) { $0 + $1.count }
        guard total > 0, n > 0 else { return }
        let threads = 2 * total * n * k >= 1 << 22 ? LayerThreads.count : 1
        if rows.count == 1, total <= cohort_panel_rows() {
            let first = rows[0].lowerBound
            if !transposeB {
                streamed(first..<first + total, n, k, a, lda, b, ldb, c, ldc, accumulate: accumulate, bias: bias, packed: packed, threads: threads)
                return
            }
            if bias == nil, n >= total {
                swapped(first..<first + total, n, k, a, lda, b, ldb, c, ldc, accumulate: accumulate, packed: packed, threads: threads)
                return
            }
        }
        let panels = cohort_panel_count(n)
        let packParts = min(threads, panels)
        LayerThreads.run(parts: packParts) { part, _ in
            cohort_pack_panels(panels * part / packParts, panels * (part + 1) / packParts, k, n, b, ldb, transposeB ? 1 : 0, packed)
        }
        let product = { (range: Range<Int>, p0: Int, p1: Int) in
            cohort_panel_product(range.lowerBound, range.upperBound, p0, p1, n, k, a, lda, 1, packed, c, ldc, accumulate ? 1 : 0, bias, 0)
        }
        if threads > 1, total <= cohort_panel_rows() * threads, panels >= threads {
            LayerThreads.run(parts: threads) { part, _ in
                for range in rows { product(range, panels * part / threads, panels * (part + 1) / threads) }
            }
            return
        }
        let pieces = PanelProduct.pieces(rows, threads: threads)
        LayerThreads.run(parts: pieces.count) { part, _ in product(pieces[part], 0, panels) }
    }

    /// `rows` cut into pieces of whole 6-row tiles, about one per thread.
    private static func pieces(_ rows: [Range<Int>], threads: Int) -> [Range<Int>] {
        let total = rows.reduce(0) { $0 + $1.count }
        let piece = max(6, (total + 6 * threads - 1) / (6 * threads) * 6)
        return rows.flatMap { range in
            stride(from: range.lowerBound, to: range.upperBound, by: piece).map { $0..<min($0 + piece, range.upperBound) }
        }
    }

    /// Rows that fit one block, B [k, n] read once (`cohort_panel_product_streamed`): W1's and W3's
    /// forward products at batch 64. The threads take parts of the panels.
    private static func streamed(_ rows: Range<Int>, _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                                 _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                 accumulate: Bool, bias: UnsafePointer<Float>?, packed: UnsafeMutablePointer<Float>, threads: Int) {
        let panels = cohort_panel_count(n)
        let parts = min(threads, panels)
        LayerThreads.run(parts: parts) { part, _ in
            cohort_panel_product_streamed(rows.lowerBound, rows.upperBound, panels * part / parts, panels * (part + 1) / parts, n, k,
                                          a, lda, 1, b, ldb, 0, c, ldc, accumulate ? 1 : 0, bias, packed)
        }
    }

    /// Few rows times Bᵀ, B [n, k] with n ≥ the rows (W1's and W3's input gradients at batch 64):
    /// computed as Cᵀ = B · op(A)ᵀ, with A's rows packed (small) and B read once as the rows of
    /// the product, C written transposed. Element (r, j) is the same chain, Σ_k A[r][k]·B[j][k]
    /// in k order (a product's operands commute exactly), so the same bits.
    private static func swapped(_ rows: Range<Int>, _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                                _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                accumulate: Bool, packed: UnsafeMutablePointer<Float>, threads: Int) {
        let m = rows.count
        let (first, out) = (a + rows.lowerBound * lda, c + rows.lowerBound * ldc)
        cohort_pack_panels(0, cohort_panel_count(m), k, m, first, lda, 1, packed)
        let pieces = PanelProduct.pieces([0..<n], threads: threads)
        LayerThreads.run(parts: pieces.count) { part, _ in
            cohort_panel_product(pieces[part].lowerBound, pieces[part].upperBound, 0, cohort_panel_count(m), m, k, b, ldb, 1,
                                 packed, out, ldc, accumulate ? 1 : 0, nil, 1)
        }
    }
}
