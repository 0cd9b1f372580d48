#if canImport(Glibc)
import Glibc
#endif

/// The training objectives. Each turns a batch of model outputs [B, width] and labels into a
/// loss sum and (optionally) dL/d(outputs) scaled by `gradientScale` (1 / global batch size),
/// so that summing the ranks' gradients gives the gradient of the global mean loss.
public enum Loss: Equatable, Sendable {
    /// Softmax cross-entropy over K logits, integer labels; `smoothing` ε mixes the one-hot
    /// target with the uniform distribution: t = (1 − ε)·onehot + ε/K.
    case softmaxCrossEntropy(smoothing: Float)
    /// Binary cross-entropy on one logit per row (sigmoid fused), labels 0 or 1:
    /// L = max(z, 0) − z·y + log(1 + exp(−|z|)), exact for any z; dL/dz = σ(z) − y.
    case binaryCrossEntropy
    /// Mean squared error, ½ omitted: L = Σ_k (o_k − t_k)² / width, with t the float targets of a
    /// regression file, or else the one-hot label when width > 1 and the label's value when width = 1.
    case meanSquaredError

    public var name: String {
        switch self {
        case .softmaxCrossEntropy: return "softmax_cross_entropy"
        case .binaryCrossEntropy: return "binary_cross_entropy"
        case .meanSquaredError: return "mean_squared_error"
        }
    }

    /// The model output width this loss needs for a dataset of `classes` classes.
    public func outputWidth(classes: Int) -> Int {
        switch self {
        case .softmaxCrossEntropy, .meanSquaredError: return classes
        case .binaryCrossEntropy: return 1
        }
    }

    /// The class a row of outputs predicts: the arg-max, or logit > 0 for the binary loss.
    public func predictedClass(_ outputs: UnsafePointer<Float>, width: Int) -> Int {
        if self == .binaryCrossEntropy { return outputs[0] > 0 ? 1 : 0 }
        if width == 1 { return max(0, Int(outputs[0].rounded())) }
        var best = 0
        for k in 1..<width where outputs[k] > outputs[best] { best = k }
        return best
    }

    /// Class probabilities of a row: softmax, or (1 − σ(z), σ(z)) for the binary loss.
    public func probabilities(_ outputs: UnsafePointer<Float>, width: Int, classes: Int) -> [Float] {
        if self == .binaryCrossEntropy {
            let p = 1 / (1 + expf(-outputs[0]))
            return [1 - p, p]
        }
        if width == 1 { return [outputs[0]] }
        let maximum = (0..<width).map { outputs[$0] }.max() ?? 0
        let exps = (0..<width).map { expf(outputs[$0] - maximum) }
        let sum = exps.reduce(0, +)
        return exps.map { $0 / sum }
    }

    /// Loss sum and correct predictions (argmax, or z > 0 for binary) of `batch` rows.
    public func evaluate(outputs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, targets: UnsafePointer<Float>? = nil,
                         batch: Int, width: Int, gradient: UnsafeMutablePointer<Float>?, gradientScale: Float = 1) -> LossTotals {
        switch self {
        case .softmaxCrossEntropy(let smoothing):
            return SoftmaxCrossEntropy.evaluate(logits: outputs, labels: labels, batch: batch, classes: width,
                                                smoothing: smoothing, gradient: gradient, gradientScale: gradientScale)
        case .binaryCrossEntropy:
            var totals = LossTotals()
            for row in 0..<batch {
                let z = outputs[row]
                let y = Float(labels[row])
                totals.lossSum += Double(max(z, 0) - z * y + log1pf(expf(-abs(z))))
                if (z > 0) == (labels[row] == 1) { totals.correct += 1 }
                gradient?[row] = (1 / (1 + expf(-z)) - y) * gradientScale
            }
            return totals
        case .meanSquaredError:
            var totals = LossTotals()
            for row in 0..<batch {
                let o = outputs + row * width
                let label = Int(labels[row])
                var sum: Float = 0
                var argmax = 0
                for k in 0..<width {
                    let target: Float = targets.map { $0[row * width + k] } ?? (width == 1 ? Float(label) : (k == label ? 1 : 0))
                    let difference = o[k] - target
                    sum += difference * difference
                    if o[k] > o[argmax] { argmax = k }
                    gradient?[row * width + k] = 2 * difference / Float(width) * gradientScale
                }
                totals.lossSum += Double(sum / Float(width))
                let predicted = width == 1 ? Int((o[0]).rounded()) : argmax
                if targets == nil, predicted == label { totals.correct += 1 }
            }
            return totals
        }
    }
}
