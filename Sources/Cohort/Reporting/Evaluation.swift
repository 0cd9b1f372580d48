import Foundation

/// Evaluation of a model over a whole file, split across ranks: each rank takes a contiguous
/// share of the rows, and the loss sum and the confusion matrix are all-reduced, so every rank
/// ends with exactly the figures a single-process evaluation would give.
public struct Evaluation: Sendable {
    public var loss: Double
    public var accuracy: Double
    public var confusion: [[Int]]
    public var rows: Int
    /// Regression: 1 − Σ(o − t)² / Σ(t − t̄)² over every target of the rows (scikit-learn's
    /// `r2_score` averaged uniformly over a single target; pooled over several).
    public var rSquared: Double? = nil
    /// Regression: √(mean of (o − t)²) over every target.
    public var rootMeanSquaredError: Double? { rSquared == nil ? nil : loss.squareRoot() }

    /// `RMSE 53.2  R² 0.47  (88 rows)` for a regression evaluation.
    public var regressionLine: String? {
        guard let rSquared, let rootMeanSquaredError else { return nil }
        return String(format: "RMSE %.4f  R² %.4f  MSE %.4f  (%d rows)", rootMeanSquaredError, rSquared, loss, rows)
    }

    public func report(classNames: [String]) -> ClassificationReport {
        ClassificationReport(confusion: confusion, classNames: classNames, loss: loss)
    }
}

/// For a language model every target token counts once: the loss is the mean over all of them
/// (nats per token), the accuracy the share of next tokens predicted, and no confusion matrix
/// is kept (V × V).
public func evaluate(model: Model, data: any SampleSource, task: TrainingTask, rows window: Range<Int>? = nil, loss: Loss, communicator: Communicator,
                     batchSize: Int) throws -> Evaluation {
    let window = window ?? 0..<data.rows
    let regression: Bool = if case .regression = task { true } else { false }
    let positions = data.targetsPerRow
    let classes = positions > 1 ? 0 : data.classes
    let width = model.outputShape.reduce(1, *) / positions
    let batch = max(1, min(batchSize, model.maxBatch))
    let x = UnsafeMutablePointer<Float>.allocate(capacity: batch * data.sampleSize)
    let y = UnsafeMutablePointer<Int32>.allocate(capacity: batch * positions)
    let t = UnsafeMutablePointer<Float>.allocate(capacity: batch * data.targetWidth)
    defer {
        x.deallocate()
        y.deallocate()
        t.deallocate()
    }
    let count = window.count
    let share = (window.lowerBound + communicator.rank * count / communicator.size)..<(window.lowerBound + (communicator.rank + 1) * count / communicator.size)
    var lossSum = 0.0
    var correctTokens = 0.0
    var confusion = [Double](repeating: 0, count: classes * classes)
    var targetSums = [0.0, 0.0]  // Σt, Σt² over every target (regression)
    var start = share.lowerBound
    while start < share.upperBound {
        let end = min(start + batch, share.upperBound)
        let rows = Array(start..<end)[...]
        try data.load(rows: rows, epoch: 0, x: x, y: y)
        data.copyTargets(rows: rows, to: t)
        if regression {
            for index in 0..<((end - start) * data.targetWidth) {
                targetSums[0] += Double(t[index])
                targetSums[1] += Double(t[index]) * Double(t[index])
            }
        }
        let outputs = model.forward(x, batch: end - start, training: false)
        let totals = loss.evaluate(outputs: outputs, labels: y, targets: regression ? UnsafePointer(t) : nil,
                                   batch: (end - start) * positions, width: width, gradient: nil)
        lossSum += totals.lossSum
        correctTokens += Double(totals.correct)
        for row in 0..<(end - start) where !regression && positions == 1 {
            let predicted = min(loss.predictedClass(outputs + row * width, width: width), classes - 1)
            confusion[Int(y[row]) * classes + predicted] += 1
        }
        start = end
    }
    if positions > 1 {
        let sums = communicator.allReduceSum([lossSum, correctTokens])
        let tokens = Double(max(count * positions, 1))
        return Evaluation(loss: sums[0] / tokens, accuracy: sums[1] / tokens, confusion: [], rows: count)
    }
    let sums = communicator.allReduceSum([lossSum] + confusion + targetSums)
    let matrix = (0..<classes).map { k in (0..<classes).map { Int(sums[1 + k * classes + $0]) } }
    let correct = (0..<classes).reduce(0) { $0 + matrix[$1][$1] }
    // Regression has no accuracy: it is reported as NaN and left out of the lines.
    var result = Evaluation(loss: sums[0] / Double(max(count, 1)), accuracy: regression ? .nan : Double(correct) / Double(max(count, 1)),
                            confusion: matrix, rows: count)
    if regression {
        // The loss per row is Σ_k (o_k − t_k)² / width, so the squared errors sum to lossSum · width.
        let targets = Double(max(count * data.targetWidth, 1))
        let (sum, squares) = (sums[1 + classes * classes], sums[2 + classes * classes])
        let total = squares - sum * sum / targets
        result.rSquared = total > 0 ? 1 - sums[0] * Double(data.targetWidth) / total : .nan
    }
    return result
}
