import CCohort
/// `dense`: `{type: dense, units: N, activation: relu, init: glorot_uniform, bias: true}`.
/// A ReLU is fused into the layer; another activation follows as a layer of its own.
public struct DenseOptions: LayerOptions {
    public static let type = "dense"
    public var units: Int
    public var activation: ActivationKind?
    public var initializer: Initializer?
    public var bias: Bool

    public init(units: Int, activation: ActivationKind? = nil, initializer: Initializer? = nil, bias: Bool = true) {
        (self.units, self.activation, self.initializer, self.bias) = (units, activation, initializer, bias)
    }
    public init(config: ConfigMap) throws {
        self.init(units: try config.required("units", family: Self.type), activation: try config.activation(),
                  initializer: try config.initializer(), bias: try config.bool("bias", default: true))
    }
    public var yaml: [String: String] {
        var keys = ["units": "\(units)", "bias": "\(bias)"]
        keys["activation"] = activation?.rawValue
        keys["init"] = initializer?.rawValue
        return keys
    }
    public var followingActivation: ActivationKind? { activation == .relu ? nil : activation }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        Dense(name: name, inputShape: inputShape, units: units, initializer: initializer ?? .glorotUniform, useBias: bias,
              fusedReLU: activation == .relu, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.dense(4, activation: .gelu), .dense(3, activation: .tanh, bias: false), .dense(2)], inputShape: [5])
    }
}

/// `flatten`: `{type: flatten}`, a sample of any shape read as one row (no copy).
public struct FlattenOptions: LayerOptions {
    public static let type = "flatten"
    public init() {}
    public init(config: ConfigMap) throws {}
    public var yaml: [String: String] { [:] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        Flatten(name: name, inputShape: inputShape)
    }
    public static var specimen: LayerSpecimen { LayerSpecimen(layers: [.flatten, .dense(2)], inputShape: [2, 3]) }
}

/// Fully connected layer over the last axis: y = x · W + b (then max(y, 0) when a ReLU is fused).
/// W is [in, out] (as Keras stores kernels), b is [out]. A vector sample [in] gives [out]; a
/// sequence sample [T, in] gives [T, out], the same W at every position (torch.nn.Linear on
/// [B, T, C]); an image sample [C, H, W] is read as its flattened row (kept for configs written
/// before `flatten` was required; prefer an explicit flatten). The forward product and the input
/// gradient multiply all B·T rows by W packed once (`PanelProduct`); the weight gradient sums
/// SGEMMs over blocks of whole samples (`RowBlocks`).
public final class Dense: Layer, InputGradientOptional {
    public var threading: LayerThreading { .products }
    public var computesInputGradient = true
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    /// Rows per sample the weights apply to (T for a sequence, else 1) and their width.
    let positions: Int
    let features: Int
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    let bias: ParameterStore.Entry?
    let fusedReLU: Bool
    /// The weight gradient's sum over the batch's rows, in blocks of whole samples (`RowBlocks`).
    let blocks: RowBlocks
    /// In a padded sequence (a BERT encoder's projections): each sample's real rows only.
    let activeRows: ActiveRows?
    private let output: Workspace
    private let inputGradient: Workspace
    private let maskedGradient: Workspace
    /// W packed for one product (`PanelProduct`), forward or transposed for the input gradient.
    private let packed: Workspace

    public var multiplyAddsPerSample: Int { inputSize * outputShape.last! }
    public var summaryTag: String { fusedReLU ? "+relu" : "" }
    public var transposedForTorch: [String] { ["\(name)/weight"] }

    /// `initScale` multiplies the initializer's draws (GPT-2's residual projections: 1/√(2·layers)).
    /// With `lengths`, a sequence sample's products cover its real positions only (`ActiveRows`),
    /// and its output and input gradient are 0 at the padded ones.
    init(name: String, inputShape: [Int], units: Int, initializer: Initializer, useBias: Bool = true, fusedReLU: Bool = false,
         initScale: Float = 1, lengths: SequenceLengths? = nil, builder: LayerBuilder) {
        self.name = name
        self.fusedReLU = fusedReLU
        self.inputShape = inputShape
        if inputShape.count == 2 {
            (positions, features) = (inputShape[0], inputShape[1])
            outputShape = [inputShape[0], units]
        } else {
            (positions, features) = (1, inputShape.reduce(1, *))
            outputShape = [units]
        }
        let fanIn = features
        blocks = RowBlocks(positions: positions)
        activeRows = inputShape.count == 2 ? lengths.map { ActiveRows(positions: inputShape[0], lengths: $0) } : nil
        parameters = builder.parameters
        weight = builder.declare("\(name)/weight", shape: [fanIn, units], decays: true) { pointer, generator in
            initializeWeights(pointer, count: fanIn * units, fanIn: fanIn, fanOut: units, initializer, &generator)
            if initScale != 1 { for index in 0..<(fanIn * units) { pointer[index] *= initScale } }
        }
        bias = useBias ? builder.declare("\(name)/bias", shape: [units], decays: false) { pointer, _ in
            pointer.initialize(repeating: 0, count: units)
        } : nil
        output = builder.workspace(builder.maxBatch * positions * units)
        inputGradient = builder.workspace(gradient: builder.maxBatch * positions * fanIn)
        maskedGradient = builder.workspace(gradient: fusedReLU ? builder.maxBatch * positions * units : 0)
        packed = builder.workspace(gradient: max(PanelProduct.scratch(fanIn, units), PanelProduct.scratch(units, fanIn)))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let rows = batch * positions
        let (inCount, outCount) = (Int32(features), Int32(outputShape.last!))
        // y[rows, out] = x[rows, in] · W[in, out] + b
        let b = bias.map { UnsafePointer(parameters.values(of: $0)) }
        if rows == 1 && activeRows == nil {
            // One row (generation, a token at a time): a matrix-vector product. Packing W first
            // would cost as much as the product itself.
            if let b { output.pointer.update(from: b, count: Int(outCount)) }
            cblas_sgemv(CblasRowMajor, CblasTrans, inCount, outCount, 1, parameters.values(of: weight), outCount,
                        input, 1, b == nil ? 0 : 1, output.pointer, 1)
        } else {
            PanelProduct.multiply(rows: activeRows?.ranges(samples: batch) ?? [0..<rows], Int(outCount), Int(inCount), input, Int(inCount),
                                  parameters.values(of: weight), Int(outCount), transposeB: false, output.pointer, Int(outCount),
                                  accumulate: false, bias: b, packed: packed.pointer)
            activeRows?.clearPadding(output.pointer, samples: batch, Int(outCount))
        }
        if fusedReLU { cohort_relu_inplace(output.pointer, batch * outputSize) }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient upstream: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let rows = batch * positions
        let (inCount, outCount) = (Int32(features), Int32(outputShape.last!))
        // Through the fused ReLU first: dy = upstream where y > 0.
        var outputGradient = upstream
        if fusedReLU {
            cohort_mask_copy(upstream, output.pointer, maskedGradient.pointer, batch * outputSize)
            outputGradient = UnsafePointer(maskedGradient.pointer)
        }
        // dW[in, out] += xᵀ[in, rows] · dy[rows, out]; db[out] += Σ_rows dy[rows, out]
        if let activeRows {
            activeRows.summedProduct(Int(inCount), Int(outCount), samples: batch, 1, input, Int(inCount), outputGradient, Int(outCount),
                                     parameters.gradients(of: weight), Int(outCount))
            if let bias { activeRows.summedRows(outputGradient, samples: batch, Int(outCount), into: parameters.gradients(of: bias)) }
        } else {
            blocks.summedProduct(Int(inCount), Int(outCount), rows, 1, input, Int(inCount), outputGradient, Int(outCount),
                                 parameters.gradients(of: weight), Int(outCount))
            if let bias { blocks.summedRows(outputGradient, rows, Int(outCount), into: parameters.gradients(of: bias)) }
        }
        guard computesInputGradient else { return UnsafePointer(inputGradient.pointer) }
        // dx[rows, in] = dy[rows, out] · Wᵀ[out, in]
        PanelProduct.multiply(rows: activeRows?.ranges(samples: batch) ?? [0..<rows], Int(inCount), Int(outCount), outputGradient,
                              Int(outCount), parameters.values(of: weight), Int(outCount), transposeB: true, inputGradient.pointer,
                              Int(inCount), accumulate: false, packed: packed.pointer)
        activeRows?.clearPadding(inputGradient.pointer, samples: batch, Int(inCount))
        return UnsafePointer(inputGradient.pointer)
    }
}

func initializeWeights(_ pointer: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int,
                       _ initializer: Initializer, _ generator: inout Generator) {
    switch initializer {
    case .normal:
        for index in 0..<count { pointer[index] = generator.nextGaussian() * 0.02 }
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
    public var isShapeOnly: Bool { true }

    init(name: String, inputShape: [Int]) {
        self.name = name
        self.inputShape = inputShape
        self.outputShape = [inputShape.reduce(1, *)]
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> { input }
    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> { outputGradient }
}

extension DenseOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        var (value, shape) = shape.count == 3 ? graph.flatten(x, shape) : (x, shape)  // an image read as its row
        value = try graph.linear(value, name, bias: bias)
        if let activation { value = graph.activation(activation, value) }
        shape = shape.dropLast() + [units]
        return (value, shape)
    }
}

extension FlattenOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        graph.flatten(x, shape)
    }
}
