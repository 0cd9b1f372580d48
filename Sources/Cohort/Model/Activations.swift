import CCohort
#if canImport(Glibc)
import Glibc
#endif

/// Elementwise activations, y = f(x) and dx = dy · f'(x), same shape in and out.
///   relu        max(x, 0)                      f' = 1 if x > 0 else 0 (0 at the kink, as PyTorch)
///   leaky_relu  x if x > 0 else a·x            f' = 1 or a
///   sigmoid     1 / (1 + e^−x)                 f' = y·(1 − y)
///   tanh        tanh x                         f' = 1 − y²
///   gelu        x·Φ(x) (the exact erf form)    f' = Φ(x) + x·φ(x)
public final class Activation: Layer {
    public let name: String
    public let kind: ActivationKind
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, kind: ActivationKind, inputShape: [Int], maxBatch: Int) {
        self.name = name
        self.kind = kind
        self.inputShape = inputShape
        output = Workspace(maxBatch * inputShape.reduce(1, *))
        inputGradient = Workspace(maxBatch * inputShape.reduce(1, *))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let count = batch * inputSize
        let y = output.pointer
        switch kind {
        case .relu:
            cohort_relu_forward(input, y, count)
        case .leakyRelu(let slope):
            for i in 0..<count { y[i] = input[i] > 0 ? input[i] : slope * input[i] }
        case .sigmoid:
            for i in 0..<count { y[i] = 1 / (1 + expf(-input[i])) }
        case .tanh:
            for i in 0..<count { y[i] = tanhf(input[i]) }
        case .gelu:
            cohort_gelu_forward(input, y, count)
        }
        return UnsafePointer(y)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let count = batch * inputSize
        let (dx, dy, y) = (inputGradient.pointer, outputGradient, output.pointer)
        switch kind {
        case .relu:
            cohort_relu_backward(input, dy, dx, count)
        case .leakyRelu(let slope):
            for i in 0..<count { dx[i] = input[i] > 0 ? dy[i] : slope * dy[i] }
        case .sigmoid:
            for i in 0..<count { dx[i] = dy[i] * y[i] * (1 - y[i]) }
        case .tanh:
            for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
        case .gelu:
            cohort_gelu_backward(input, dy, dx, count)
        }
        return UnsafePointer(dx)
    }
}
