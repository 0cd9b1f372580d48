import CCohort

/// Products over each sample's real rows only: sample s is the first `active[s]` of its
/// `positions` rows (the tokens of a padded sequence, `SequenceLengths`): `PanelProduct` over
/// those rows, and weight gradients one call per sample whose shape depends on that sample alone.
/// So a sample's bits do not depend on the batch around it, and padding costs no multiply-adds.
/// Output rows past a sample's active ones are set to 0: the layers after read finite zeros
/// there, and backward carries exact zeros through them.
struct ActiveRows {
    let positions: Int
    let lengths: SequenceLengths

    private func active(_ sample: Int) -> Int { min(max(lengths.values[sample], 0), positions) }

    /// Each sample's active rows of a batch of `samples`: the rows a product computes.
    func ranges(samples: Int) -> [Range<Int>] {
        (0..<samples).map { $0 * positions..<($0 * positions + active($0)) }
    }

    /// Sets the rows past each sample's active ones to 0 in `c` [samples · positions, width].
    func clearPadding(_ c: UnsafeMutablePointer<Float>, samples: Int, _ width: Int) {
        for s in 0..<samples {
            let m = active(s)
            (c + (s * positions + m) * width).update(repeating: 0, count: (positions - m) * width)
        }
    }

    /// C[m, n] += alpha · Σ over the samples, in order, of A[s][active, m]ᵀ · B[s][active, n]
    /// (a weight gradient), C cut over the threads by its shape and `positions` alone.
    func summedProduct(_ m: Int, _ n: Int, samples: Int, _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                       _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        let blocks = (0..<samples).filter { active($0) > 0 }.map { (start: $0 * positions, rows: active($0)) }
        summedBlockProducts(m, n, blockRows: positions, blocks: blocks, alpha, a, lda, b, ldb, c, ldc)
    }

    /// sum[width] += Σ over the samples of their active rows, each sample's rows added up first.
    func summedRows(_ x: UnsafePointer<Float>, samples: Int, _ width: Int, into sum: UnsafeMutablePointer<Float>) {
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { partial.deallocate() }
        for s in 0..<samples {
            partial.initialize(repeating: 0, count: width)
            cohort_add_rows(x + s * positions * width, partial, active(s), width)
            cohort_add_rows(partial, sum, 1, width)
        }
    }
}
