#if canImport(Glibc)
import Glibc
#endif

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
        var totals = LossTotals()
        let offTarget = smoothing / Float(classes)
        let onTarget = 1 - smoothing + offTarget
        for row in 0..<batch {
            let z = logits + row * classes
            let label = Int(labels[row])
            var maximum = z[0]
            var argmax = 0
            for k in 1..<classes where z[k] > maximum {
                maximum = z[k]
                argmax = k
            }
            var sum: Float = 0
            for k in 0..<classes { sum += expf(z[k] - maximum) }
            let logSum = logf(sum)
            var loss: Double = 0
            for k in 0..<classes {
                let target = k == label ? onTarget : offTarget
                let logP = z[k] - maximum - logSum
                loss -= Double(target * logP)
                gradient?[row * classes + k] = (expf(logP) - target) * gradientScale
            }
            totals.lossSum += loss
            if argmax == label { totals.correct += 1 }
        }
        return totals
    }
}
