#if canImport(Glibc)
import Glibc
#endif
/// `batch_norm`: `{type: batch_norm, momentum: 0.1, epsilon: 1e-5, sync: false}` (PyTorch's
/// momentum convention); `sync: true` takes the statistics over every rank's batch.
public struct BatchNormOptions: LayerOptions {
    public static let type = "batch_norm"
    public var momentum: Float
    public var epsilon: Float
    public var sync: Bool
    public init(momentum: Float = 0.1, epsilon: Float = 1e-5, sync: Bool = false) {
        (self.momentum, self.epsilon, self.sync) = (momentum, epsilon, sync)
    }
    public init(config: ConfigMap) throws {
        self.init(momentum: Float(try config.double("momentum", default: 0.1, range: 0...1)),
                  epsilon: Float(try config.double("epsilon", default: 1e-5, range: 0...1)), sync: try config.bool("sync", default: false))
    }
    public var yaml: [String: String] { ["momentum": "\(momentum)", "epsilon": "\(epsilon)", "sync": "\(sync)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        BatchNorm(name: name, inputShape: inputShape, momentum: momentum, epsilon: epsilon, sync: sync, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        // Training mode: each channel's statistics over the batch's 2 × 2 × 2 values.
        LayerSpecimen(layers: [.batchNorm(), .conv2d(2, kernel: 1), .batchNorm(momentum: 0.5, epsilon: 1e-3)], inputShape: [3, 2, 2])
    }
}

/// Batch normalization over channels of [C, H, W] samples (statistics over B·H·W) or over
/// features of [F] samples (statistics over B).
///
/// Training: x̂ = (x − μ_B) / sqrt(σ²_B + ε) with the batch's mean and biased variance,
/// y = γ·x̂ + β; running statistics follow PyTorch: r ← (1 − m)·r + m·stat, with the unbiased
/// variance (n / (n − 1)) for r_var. Evaluation uses the running statistics.
/// `sync`: the sums behind μ_B and σ²_B (and, in backward, Σdy and Σdy·x̂) are all-reduced over
/// the ranks, so the statistics are those of the global batch (SyncBatchNorm). Without it each
/// rank normalizes by its own batch, as DDP does by default.
/// Backward: dx = γ / sqrt(σ² + ε) · (dy − mean(dy) − x̂·mean(dy·x̂)).
public final class BatchNorm: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let momentum, epsilon: Float
    let sync: Bool
    let communicator: Communicator
    let parameters: ParameterStore
    let scale, shift: ParameterStore.Entry
    let runningMean, runningVariance: ParameterStore.Entry
    private let channels, spatial: Int
    private var mean, inverseStd: [Float]
    private var normalized: Workspace
    private let output: Workspace
    private let inputGradient: Workspace
    private var batchCount = 0
    /// Frozen (fine-tuning): running statistics in training too, never updated.
    private var runningStatisticsOnly = false
    /// Whether the last forward normalized by batch statistics (backward differs).
    private var usedBatchStatistics = false

    public func useRunningStatistics() { runningStatisticsOnly = true }

    init(name: String, inputShape: [Int], momentum: Float, epsilon: Float, sync: Bool, builder: LayerBuilder) {
        self.name = name
        self.inputShape = inputShape
        (self.momentum, self.epsilon, self.sync) = (momentum, epsilon, sync)
        communicator = builder.communicator
        parameters = builder.parameters
        channels = inputShape[0]
        spatial = inputShape.dropFirst().reduce(1, *)
        let c = channels
        scale = builder.declare("\(name)/gamma", shape: [c], decays: false) { pointer, _ in pointer.initialize(repeating: 1, count: c) }
        shift = builder.declare("\(name)/beta", shape: [c], decays: false) { pointer, _ in pointer.initialize(repeating: 0, count: c) }
        runningMean = builder.parameters.declareBuffer("\(name)/running_mean", shape: [c], initialValue: 0)
        runningVariance = builder.parameters.declareBuffer("\(name)/running_var", shape: [c], initialValue: 1)
        mean = [Float](repeating: 0, count: c)
        inverseStd = [Float](repeating: 1, count: c)
        let count = builder.maxBatch * inputShape.reduce(1, *)
        normalized = builder.workspace(count)
        output = builder.workspace(count)
        inputGradient = builder.workspace(count)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (gamma, beta) = (parameters.values(of: scale), parameters.values(of: shift))
        usedBatchStatistics = training && !runningStatisticsOnly
        if usedBatchStatistics {
            // Per-channel Σx and Σx² in Double, all-reduced for sync.
            var sums = [Double](repeating: 0, count: 2 * channels + 1)
            for sample in 0..<batch {
                for c in 0..<channels {
                    let x = input + (sample * channels + c) * spatial
                    var (s, q) = (0.0, 0.0)
                    for p in 0..<spatial {
                        let value = Double(x[p])
                        s += value
                        q += value * value
                    }
                    sums[c] += s
                    sums[channels + c] += q
                }
            }
            sums[2 * channels] = Double(batch * spatial)
            if sync { sums = communicator.allReduceSum(sums) }
            let n = sums[2 * channels]
            batchCount = Int(n)
            let runMean = parameters.buffer(of: runningMean)
            let runVariance = parameters.buffer(of: runningVariance)
            for c in 0..<channels {
                let mu = n > 0 ? sums[c] / n : 0
                let variance = n > 0 ? max(sums[channels + c] / n - mu * mu, 0) : 0
                mean[c] = Float(mu)
                inverseStd[c] = 1 / (Float(variance) + epsilon).squareRoot()
                if n > 0 {
                    let unbiased = n > 1 ? variance * n / (n - 1) : variance
                    runMean[c] = (1 - momentum) * runMean[c] + momentum * Float(mu)
                    runVariance[c] = (1 - momentum) * runVariance[c] + momentum * Float(unbiased)
                }
            }
        } else {
            let runMean = parameters.buffer(of: runningMean)
            let runVariance = parameters.buffer(of: runningVariance)
            for c in 0..<channels {
                mean[c] = runMean[c]
                inverseStd[c] = 1 / (runVariance[c] + epsilon).squareRoot()
            }
        }
        for sample in 0..<batch {
            for c in 0..<channels {
                let offset = (sample * channels + c) * spatial
                let (mu, inv, g, b) = (mean[c], inverseStd[c], gamma[c], beta[c])
                for p in 0..<spatial {
                    let xhat = (input[offset + p] - mu) * inv
                    normalized.pointer[offset + p] = xhat
                    output.pointer[offset + p] = g * xhat + b
                }
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let gamma = parameters.values(of: scale)
        let (dGamma, dBeta) = (parameters.gradients(of: scale), parameters.gradients(of: shift))
        var sums = [Double](repeating: 0, count: 2 * channels)
        for sample in 0..<batch {
            for c in 0..<channels {
                let offset = (sample * channels + c) * spatial
                var (sumDy, sumDyXhat) = (0.0, 0.0)
                for p in 0..<spatial {
                    let dy = Double(outputGradient[offset + p])
                    sumDy += dy
                    sumDyXhat += dy * Double(normalized.pointer[offset + p])
                }
                sums[c] += sumDy
                sums[channels + c] += sumDyXhat
            }
        }
        // dγ and dβ are this rank's share; the gradient all-reduce adds the other ranks'.
        for c in 0..<channels {
            dBeta[c] += Float(sums[c])
            dGamma[c] += Float(sums[channels + c])
        }
        guard usedBatchStatistics else {
            // Fixed statistics: y = γ·(x − μ)·s + β is affine in x, dx = γ·s·dy.
            for sample in 0..<batch {
                for c in 0..<channels {
                    let offset = (sample * channels + c) * spatial
                    let factor = gamma[c] * inverseStd[c]
                    for p in 0..<spatial { inputGradient.pointer[offset + p] = factor * outputGradient[offset + p] }
                }
            }
            return UnsafePointer(inputGradient.pointer)
        }
        if sync { sums = communicator.allReduceSum(sums) }
        let n = Float(max(batchCount, 1))
        for sample in 0..<batch {
            for c in 0..<channels {
                let offset = (sample * channels + c) * spatial
                let meanDy = Float(sums[c]) / n
                let meanDyXhat = Float(sums[channels + c]) / n
                let factor = gamma[c] * inverseStd[c]
                for p in 0..<spatial {
                    inputGradient.pointer[offset + p] =
                        factor * (outputGradient[offset + p] - meanDy - normalized.pointer[offset + p] * meanDyXhat)
                }
            }
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

extension BatchNormOptions {
    /// Inference: the running statistics.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        (try graph.batchNorm(x, name, epsilon: epsilon), shape)
    }
}
