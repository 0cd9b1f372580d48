import CCohort

/// 2-D convolution (cross-correlation, as every framework computes it) over NCHW samples.
///
/// x is [B, C, H, W]; W is [K, C, kh, kw] (PyTorch's OIHW order); b is [K]; y is [B, K, OH, OW].
/// Each sample is lowered with im2col to cols [C·kh·kw, OH·OW], so the forward pass is one SGEMM
/// per sample, y_b[K, P] = W[K, CKK] · cols_b[CKK, P] + b, and the backward pass two more:
/// dW += dy_b · cols_bᵀ and dcols_b = Wᵀ · dy_b, folded back into dx by col2im.
/// The cols of the whole batch are kept from forward to backward (B·CKK·P floats).
public final class Conv2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let geometry: ConvolutionGeometry
    let parameters: ParameterStore
    let weight: ParameterStore.Entry
    let bias: ParameterStore.Entry?
    private let columns: Workspace
    private let columnGradient: Workspace
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], filters: Int, kernel: Int, stride: Int, padding: Padding,
         initializer: Initializer, useBias: Bool, builder: LayerBuilder) throws {
        guard inputShape.count == 3 else {
            throw CohortError("\(name): conv2d needs image input [C, H, W], got \(inputShape) (is a flatten or dense before it?)")
        }
        let geometry = try ConvolutionGeometry(name: name, channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                                               kernel: kernel, stride: stride, padding: padding)
        self.name = name
        self.inputShape = inputShape
        self.geometry = geometry
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
        columns = Workspace(builder.maxBatch * geometry.patchSize * geometry.outputPixels)
        columnGradient = Workspace(geometry.patchSize * geometry.outputPixels)
        output = Workspace(builder.maxBatch * outputShape.reduce(1, *))
        inputGradient = Workspace(builder.maxBatch * inputShape.reduce(1, *))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let w = parameters.values(of: weight)
        for sample in 0..<batch {
            let cols = columns.pointer + sample * patch * pixels
            let y = output.pointer + sample * filters * pixels
            geometry.im2col(input + sample * inputSize, cols)
            if let bias {
                let b = parameters.values(of: bias)
                for k in 0..<filters { (y + k * pixels).update(repeating: b[k], count: pixels) }
            }
            // y[K, P] (+)= W[K, CKK] · cols[CKK, P]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(filters), Int32(pixels), Int32(patch),
                        1, w, Int32(patch), cols, Int32(pixels), bias == nil ? 0 : 1, y, Int32(pixels))
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let (w, dw) = (parameters.values(of: weight), parameters.gradients(of: weight))
        for sample in 0..<batch {
            let cols = columns.pointer + sample * patch * pixels
            let dy = outputGradient + sample * filters * pixels
            // dW[K, CKK] += dy[K, P] · colsᵀ[P, CKK]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(filters), Int32(patch), Int32(pixels),
                        1, dy, Int32(pixels), cols, Int32(pixels), 1, dw, Int32(patch))
            if let bias {
                let db = parameters.gradients(of: bias)
                for k in 0..<filters {
                    var sum: Float = 0
                    let row = dy + k * pixels
                    for p in 0..<pixels { sum += row[p] }
                    db[k] += sum
                }
            }
            // dcols[CKK, P] = Wᵀ[CKK, K] · dy[K, P], then scattered back into dx
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(patch), Int32(pixels), Int32(filters),
                        1, w, Int32(patch), dy, Int32(pixels), 0, columnGradient.pointer, Int32(pixels))
            geometry.col2im(columnGradient.pointer, inputGradient.pointer + sample * inputSize)
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

    /// cols[(c·k + i)·k + j, oy·OW + ox] = x[c, oy·s − padTop + i, ox·s − padLeft + j], 0 outside.
    func im2col(_ x: UnsafePointer<Float>, _ cols: UnsafeMutablePointer<Float>) {
        var row = 0
        for c in 0..<channels {
            let plane = x + c * height * width
            for i in 0..<kernel {
                for j in 0..<kernel {
                    let out = cols + row * outputPixels
                    for oy in 0..<outputHeight {
                        let iy = oy * stride - padTop + i
                        let line = out + oy * outputWidth
                        if iy < 0 || iy >= height {
                            line.update(repeating: 0, count: outputWidth)
                            continue
                        }
                        let source = plane + iy * width
                        if stride == 1 {
                            // Contiguous run: copy the in-bounds span, zero the edges.
                            let shift = j - padLeft
                            let first = max(0, -shift)
                            let last = min(outputWidth, width - shift)
                            if first > 0 { line.update(repeating: 0, count: min(first, outputWidth)) }
                            if last > first { (line + first).update(from: source + first + shift, count: last - first) }
                            if last < outputWidth { (line + max(last, 0)).update(repeating: 0, count: outputWidth - max(last, 0)) }
                        } else {
                            for ox in 0..<outputWidth {
                                let ix = ox * stride - padLeft + j
                                line[ox] = (ix >= 0 && ix < width) ? source[ix] : 0
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// The adjoint of im2col: dx[c, iy, ix] = Σ of the dcols entries that read it.
    func col2im(_ cols: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>) {
        dx.update(repeating: 0, count: channels * height * width)
        var row = 0
        for c in 0..<channels {
            let plane = dx + c * height * width
            for i in 0..<kernel {
                for j in 0..<kernel {
                    let source = cols + row * outputPixels
                    for oy in 0..<outputHeight {
                        let iy = oy * stride - padTop + i
                        if iy < 0 || iy >= height { continue }
                        let line = source + oy * outputWidth
                        let target = plane + iy * width
                        for ox in 0..<outputWidth {
                            let ix = ox * stride - padLeft + j
                            if ix >= 0 && ix < width { target[ix] += line[ox] }
                        }
                    }
                    row += 1
                }
            }
        }
    }
}
