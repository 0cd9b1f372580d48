/// `model.freeze`: frozen gradients stay zero (no update, no decay) and only the trainable spans
/// of the flat buffer travel, one `MPI_Allreduce` each.
final class FrozenSpansSum: GradientSynchronization {
    let run: GradientRun
    let spans: [Range<Int>]
    var description: String {
        "MPI_Allreduce of the trainable parameters (\(spans.reduce(0) { $0 + $1.count }) floats in \(spans.count) span(s))"
    }

    private init(run: GradientRun, spans: [Range<Int>]) { (self.run, self.spans) = (run, spans) }

    static func make(_ run: GradientRun) -> FrozenSpansSum? {
        run.trainableSpans.map { FrozenSpansSum(run: run, spans: $0) }
    }

    func finish() -> Bool {
        let gradients = run.model.parameters.gradients
        var start = 0
        for span in spans + [gradients.count..<gradients.count] {
            if start < span.lowerBound { (gradients.baseAddress! + start).update(repeating: 0, count: span.lowerBound - start) }
            start = span.upperBound
        }
        var finite = true
        for span in spans {
            finite = run.communicator.allReduceSumCheckingFinite(UnsafeMutableBufferPointer(rebasing: gradients[span])) && finite
        }
        return finite
    }

    /// The contiguous ranges of the flat buffer that `entries` (in offset order) cover.
    static func spans(of entries: [ParameterStore.Entry]) -> [Range<Int>] {
        var spans: [Range<Int>] = []
        for entry in entries.sorted(by: { $0.offset < $1.offset }) {
            let range = entry.offset..<(entry.offset + entry.count)
            if let last = spans.last, last.upperBound == range.lowerBound {
                spans[spans.count - 1] = last.lowerBound..<range.upperBound
            } else {
                spans.append(range)
            }
        }
        return spans
    }
}
