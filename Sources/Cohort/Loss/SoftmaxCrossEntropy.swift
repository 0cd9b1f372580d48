import CCohort

/// What one call of a loss reports for its rows.
public struct LossTotals {
    /// Σ of per-sample losses (not averaged: the trainer divides by the global row count).
    public var lossSum: Double = 0
    public var correct: Int = 0
}

/// Softmax cross-entropy over logits [B, K] with integer labels [B].
///
/// Numerically stable: log-softmax is computed as z - max(z) - log Σ exp(z - max(z)), so large
/// logits neither overflow nor lose the loss to rounding. The gradient is written scaled by
/// `gradientScale` (1 / global batch size), which makes a sum of the ranks' gradients their mean.
public enum SoftmaxCrossEntropy {
    /// Loss and argmax accuracy; if `gradient` is given, dL/dlogits · gradientScale is written there.
    public static func evaluate(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, classes: Int,
                                gradient: UnsafeMutablePointer<Float>?, gradientScale: Float = 1) -> LossTotals {
        evaluate(logits: logits, labels: labels, batch: batch, classes: classes, smoothing: 0, gradient: gradient, gradientScale: gradientScale)
    }

    /// With label smoothing ε: target t = (1 − ε)·onehot + ε/K; L = −Σ t_k log p_k; dL/dz = p − t.
    public static func evaluate(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, classes: Int,
                                smoothing: Float, gradient: UnsafeMutablePointer<Float>?, gradientScale: Float = 1) -> LossTotals {
        let offTarget = smoothing / Float(classes)
        var correct = 0
        let lossSum = cohort_softmax_cross_entropy(logits, labels, batch, classes, 1 - smoothing + offTarget, offTarget,
                                                   gradient, gradientScale, &correct)
        return LossTotals(lossSum: lossSum, correct: correct)
    }
}
