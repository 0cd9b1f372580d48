import CCohort

/// Elementwise activations, y = f(x) and dx = dy · f'(x), same shape in and out.
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
        }
        return UnsafePointer(y)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let count = batch * inputSize
        let dx = inputGradient.pointer
        switch kind {
        case .relu:
            // The derivative at 0 is taken as 0, as PyTorch does.
            cohort_relu_backward(input, outputGradient, dx, count)
        }
        return UnsafePointer(dx)
    }
}
