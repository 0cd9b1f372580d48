import CCohort

/// 2-D convolution (cross-correlation, as every framework computes it) over NCHW samples.
///
/// x is [B, C, H, W]; W is [K, C, kh, kw] (PyTorch's OIHW order); b is [K]; y is [B, K, OH, OW].
/// The batch is lowered with im2col to cols [C·kh·kw, B·P] (P = OH·OW), so each pass is one
/// large SGEMM instead of B small ones:
///   forward   Yt[K, B·P] = W[K, CKK] · cols            then y[b, k, :] = Yt[k, b·P ..< (b+1)·P] + b[k]
///   backward  dW[K, CKK] += dYt · colsᵀ;  dcols[CKK, B·P] = Wᵀ · dYt;  dx = col2im(dcols)
/// A ReLU after the convolution is fused (applied while each output row is in cache, and its
/// mask applied to dy on the way back), saving two passes over the largest activations.
public final class Conv2D: Layer, InputGradientOptional {
    public var computesInputGradient = true
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let geometry: ConvolutionGeometry
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    let bias: ParameterStore.Entry?
    let fusedReLU: Bool
    private let columns: Workspace
    private let columnGradient: Workspace
    private let transposed: Workspace
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], filters: Int, kernel: Int, stride: Int, padding: Padding,
         initializer: Initializer, useBias: Bool, fusedReLU: Bool = false, builder: LayerBuilder) throws {
        guard inputShape.count == 3 else {
            throw CohortError("\(name): conv2d needs image input [C, H, W], got \(inputShape) (is a flatten or dense before it?)")
        }
        let geometry = try ConvolutionGeometry(name: name, channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                                               kernel: kernel, stride: stride, padding: padding)
        self.name = name
        self.inputShape = inputShape
        self.geometry = geometry
        self.fusedReLU = fusedReLU
        outputShape = [filters, geometry.outputHeight, geometry.outputWidth]
        parameters = builder.parameters
        let fanIn = geometry.patchSize
        let fanOut = filters * kernel * kernel
        weight = builder.declare("\(name)/weight", shape: [filters, inputShape[0], kernel, kernel], decays: true) { pointer, generator in
            initializeWeights(pointer, count: filters * fanIn, fanIn: fanIn, fanOut: fanOut, initializer, &generator)
        }
        bias = useBias ? builder.declare("\(name)/bias", shape: [filters], decays: false) { pointer, _ in
            pointer.initialize(repeating: 0, count: filters)
        } : nil
        let batchPixels = builder.maxBatch * geometry.outputPixels
        columns = Workspace(geometry.patchSize * batchPixels)
        columnGradient = Workspace(geometry.patchSize * batchPixels)
        transposed = Workspace(filters * batchPixels)
        output = Workspace(builder.maxBatch * outputShape.reduce(1, *))
        inputGradient = Workspace(builder.maxBatch * inputShape.reduce(1, *))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let batchPixels = batch * pixels
        for sample in 0..<batch {
            geometry.im2col(input + sample * inputSize, columns.pointer + sample * pixels, rowStride: batchPixels)
        }
        // Yt[K, B·P] = W[K, CKK] · cols[CKK, B·P]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(filters), Int32(batchPixels), Int32(patch),
                    1, parameters.values(of: weight), Int32(patch), columns.pointer, Int32(batchPixels), 0, transposed.pointer, Int32(batchPixels))
        let b = bias.map { parameters.values(of: $0) }
        for sample in 0..<batch {
            for k in 0..<filters {
                let source = transposed.pointer + k * batchPixels + sample * pixels
                let target = output.pointer + (sample * filters + k) * pixels
                cohort_bias_activate(source, target, pixels, b?[k] ?? 0, fusedReLU ? 1 : 0)
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let batchPixels = batch * pixels
        // dYt[K, B·P] from dy[B, K, P], masked where the fused ReLU was off; db[k] = Σ dYt[k, :].
        let db = bias.map { parameters.gradients(of: $0) }
        for sample in 0..<batch {
            for k in 0..<filters {
                let offset = (sample * filters + k) * pixels
                cohort_mask_copy(outputGradient + offset, fusedReLU ? UnsafePointer(output.pointer + offset) : nil,
                                 transposed.pointer + k * batchPixels + sample * pixels, pixels)
            }
        }
        if let db {
            for k in 0..<filters { db[k] += cohort_sum(transposed.pointer + k * batchPixels, batchPixels) }
        }
        // dW[K, CKK] += dYt[K, B·P] · colsᵀ[B·P, CKK]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(filters), Int32(patch), Int32(batchPixels),
                    1, transposed.pointer, Int32(batchPixels), columns.pointer, Int32(batchPixels), 1,
                    parameters.gradients(of: weight), Int32(patch))
        guard computesInputGradient else { return UnsafePointer(inputGradient.pointer) }
        // dcols[CKK, B·P] = Wᵀ[CKK, K] · dYt[K, B·P], folded back per sample
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(patch), Int32(batchPixels), Int32(filters),
                    1, parameters.values(of: weight), Int32(patch), transposed.pointer, Int32(batchPixels), 0,
                    columnGradient.pointer, Int32(batchPixels))
        for sample in 0..<batch {
            geometry.col2im(columnGradient.pointer + sample * pixels, rowStride: batchPixels, inputGradient.pointer + sample * inputSize)
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

/// Sizes and index arithmetic shared by convolution and pooling.
struct ConvolutionGeometry {
    let channels, height, width, kernel, stride: Int
    let padTop, padLeft: Int
    let outputHeight, outputWidth: Int
    var patchSize: Int { channels * kernel * kernel }
    var outputPixels: Int { outputHeight * outputWidth }

    init(name: String, channels: Int, height: Int, width: Int, kernel: Int, stride: Int, padding: Padding) throws {
        (self.channels, self.height, self.width, self.kernel, self.stride) = (channels, height, width, kernel, stride)
        switch padding {
        case .valid:
            guard height >= kernel, width >= kernel else {
                throw CohortError("\(name): kernel \(kernel) is larger than its \(height)×\(width) input")
            }
            (outputHeight, outputWidth) = ((height - kernel) / stride + 1, (width - kernel) / stride + 1)
            (padTop, padLeft) = (0, 0)
        case .same:
            (outputHeight, outputWidth) = ((height + stride - 1) / stride, (width + stride - 1) / stride)
            padTop = max((outputHeight - 1) * stride + kernel - height, 0) / 2
            padLeft = max((outputWidth - 1) * stride + kernel - width, 0) / 2
        }
    }

    /// cols[(c·k + i)·k + j, oy·OW + ox] = x[c, oy·s − padTop + i, ox·s − padLeft + j], 0 outside;
    /// row r of cols starts at cols + r·rowStride. (The loops are in kernels.c.)
    func im2col(_ x: UnsafePointer<Float>, _ cols: UnsafeMutablePointer<Float>, rowStride: Int) {
        cohort_im2col(x, cols, channels, height, width, kernel, stride, padTop, padLeft, outputHeight, outputWidth, rowStride)
    }

    /// The adjoint of im2col: dx[c, iy, ix] = Σ of the dcols entries that read it.
    func col2im(_ cols: UnsafePointer<Float>, rowStride: Int, _ dx: UnsafeMutablePointer<Float>) {
        cohort_col2im(cols, dx, channels, height, width, kernel, stride, padTop, padLeft, outputHeight, outputWidth, rowStride)
    }
}
