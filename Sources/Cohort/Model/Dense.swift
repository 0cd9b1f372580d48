import CCohort

/// Fully connected layer: y = x · W + b (then max(y, 0) when a ReLU is fused).
/// x is [B, in] (any input shape is read as its flattened rows), W is [in, out] (as Keras
/// stores kernels), b is [out], y is [B, out]. All three products are single SGEMM calls.
public final class Dense: Layer, InputGradientOptional {
    public var computesInputGradient = true
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    let bias: ParameterStore.Entry?
    let fusedReLU: Bool
    private let output: Workspace
    private let inputGradient: Workspace
    private let maskedGradient: Workspace

    init(name: String, inputShape: [Int], units: Int, initializer: Initializer, useBias: Bool = true, fusedReLU: Bool = false, builder: LayerBuilder) {
        self.name = name
        self.fusedReLU = fusedReLU
        self.inputShape = inputShape
        self.outputShape = [units]
        let fanIn = inputShape.reduce(1, *)
        parameters = builder.parameters
        weight = builder.declare("\(name)/weight", shape: [fanIn, units], decays: true) { pointer, generator in
            initializeWeights(pointer, count: fanIn * units, fanIn: fanIn, fanOut: units, initializer, &generator)
        }
        bias = useBias ? builder.declare("\(name)/bias", shape: [units], decays: false) { pointer, _ in
            pointer.initialize(repeating: 0, count: units)
        } : nil
        output = Workspace(builder.maxBatch * units)
        inputGradient = Workspace(builder.maxBatch * fanIn)
        maskedGradient = Workspace(fusedReLU ? builder.maxBatch * units : 0)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (inCount, outCount) = (Int32(inputSize), Int32(outputSize))
        // y[B, out] = b broadcast over rows, then y += x[B, in] · W[in, out]
        if let bias {
            let b = parameters.values(of: bias)
            for row in 0..<batch { (output.pointer + row * outputSize).update(from: b, count: outputSize) }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), outCount, inCount,
                    1, input, inCount, parameters.values(of: weight), outCount, bias == nil ? 0 : 1, output.pointer, outCount)
        if fusedReLU { cohort_relu_inplace(output.pointer, batch * outputSize) }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient upstream: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (inCount, outCount) = (Int32(inputSize), Int32(outputSize))
        // Through the fused ReLU first: dy = upstream where y > 0.
        var outputGradient = upstream
        if fusedReLU {
            cohort_mask_copy(upstream, output.pointer, maskedGradient.pointer, batch * outputSize)
            outputGradient = UnsafePointer(maskedGradient.pointer)
        }
        // dW[in, out] += xᵀ[in, B] · dy[B, out]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, inCount, outCount, Int32(batch),
                    1, input, inCount, outputGradient, outCount, 1, parameters.gradients(of: weight), outCount)
        // db[out] += Σ_B dy[B, out]
        if let bias { cohort_add_rows(outputGradient, parameters.gradients(of: bias), batch, outputSize) }
        guard computesInputGradient else { return UnsafePointer(inputGradient.pointer) }
        // dx[B, in] = dy[B, out] · Wᵀ[out, in]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), inCount, outCount,
                    1, outputGradient, outCount, parameters.values(of: weight), outCount, 0, inputGradient.pointer, inCount)
        return UnsafePointer(inputGradient.pointer)
    }
}

func initializeWeights(_ pointer: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int,
                       _ initializer: Initializer, _ generator: inout Generator) {
    switch initializer {
    case .glorotUniform:
        let limit = (6 / Float(fanIn + fanOut)).squareRoot()
        for index in 0..<count { pointer[index] = (generator.nextUnitFloat() * 2 - 1) * limit }
    case .heNormal:
        // nextGaussian() · std, with the uniforms drawn in its order and the transform done a
        // block at a time by a vector kernel (W3's 3.2 M weights: 0.12 s of start-up otherwise).
        let std = (2 / Float(fanIn)).squareRoot()
        let block = 4096
        var u1 = [Double](repeating: 0, count: block), u2 = [Double](repeating: 0, count: block)
        for start in stride(from: 0, to: count, by: block) {
            let length = min(block, count - start)
            for index in 0..<length { (u1[index], u2[index]) = generator.nextBoxMullerPair() }
            cohort_box_muller(u1, u2, pointer + start, length, std)
        }
    }
}

/// Reshapes [B, ...] to [B, product]: the memory is already laid out that way, so both passes
/// return their argument unchanged.
public final class Flatten: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]

    init(name: String, inputShape: [Int]) {
        self.name = name
        self.inputShape = inputShape
        self.outputShape = [inputShape.reduce(1, *)]
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> { input }
    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> { outputGradient }
}
