import CCohort

/// 2-D convolution (cross-correlation, as every framework computes it) over NCHW samples.
///
/// x is [B, C, H, W]; W is [K, C, kh, kw] (PyTorch's OIHW order); b is [K]; y is [B, K, OH, OW].
/// The batch is processed in chunks of S samples (`samplesPerChunk`: S·P between 768 and 1,600
/// output pixels, P = OH·OW): each chunk is lowered with im2col to cols [C·kh·kw, S·P], so each
/// pass is one SGEMM per chunk:
///   forward   Yt[K, S·P] = W[K, CKK] · cols            then y[b, k, :] = Yt[k, b·P ..< (b+1)·P] + b[k]
///   backward  dW[K, CKK] += dYt · colsᵀ;  dcols[CKK, S·P] = Wᵀ · dYt;  dx = col2im(dcols)
/// Chunks keep cols, Yt and dcols in the core's cache (W3's second convolution has 40 MB of
/// cols for a batch of 64, 2.5 MB per chunk of 4), which measured faster than one batch-wide
/// GEMM, and backward recomputes each chunk's cols instead of storing them all.
/// A ReLU after the convolution is fused (applied while each output row is in cache, and its
/// mask applied to dy on the way back), saving two passes over the largest activations.
/// A 2×2 max pool after it can be fused too (`pooled`): each chunk's output planes are pooled
/// while in cache, so the full-size activation is never written; y is then [B, K, OH/2, OW/2],
/// and backward rebuilds dYt from the pool's winners and the pooled outputs (the ReLU mask of
/// a winner is its pooled value > 0). The results are those of the two layers, bit for bit.
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
    let pooled: Bool
    /// Samples per chunk.
    let chunk: Int
    private let columns: Workspace
    private let columnGradient: Workspace
    private let transposed: Workspace
    private let output: Workspace
    private let inputGradient: Workspace
    /// With `pooled`: which input of each 2×2 window won.
    private var winners: [UInt8]

    init(name: String, inputShape: [Int], filters: Int, kernel: Int, stride: Int, padding: Padding,
         initializer: Initializer, useBias: Bool, fusedReLU: Bool = false, pooled: Bool = false, builder: LayerBuilder) throws {
        guard inputShape.count == 3 else {
            throw CohortError("\(name): conv2d needs image input [C, H, W], got \(inputShape) (is a flatten or dense before it?)")
        }
        let geometry = try ConvolutionGeometry(name: name, channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                                               kernel: kernel, stride: stride, padding: padding)
        self.name = name
        self.inputShape = inputShape
        self.geometry = geometry
        self.fusedReLU = fusedReLU
        self.pooled = pooled
        outputShape = pooled ? [filters, geometry.outputHeight / 2, geometry.outputWidth / 2]
                             : [filters, geometry.outputHeight, geometry.outputWidth]
        parameters = builder.parameters
        let fanIn = geometry.patchSize
        let fanOut = filters * kernel * kernel
        weight = builder.declare("\(name)/weight", shape: [filters, inputShape[0], kernel, kernel], decays: true) { pointer, generator in
            initializeWeights(pointer, count: filters * fanIn, fanIn: fanIn, fanOut: fanOut, initializer, &generator)
        }
        bias = useBias ? builder.declare("\(name)/bias", shape: [filters], decays: false) { pointer, _ in
            pointer.initialize(repeating: 0, count: filters)
        } : nil
        chunk = Conv2D.samplesPerChunk(geometry, maxBatch: builder.maxBatch)
        let chunkPixels = chunk * geometry.outputPixels
        columns = Workspace(geometry.patchSize * chunkPixels)
        columnGradient = Workspace(geometry.patchSize * chunkPixels)
        transposed = Workspace(filters * chunkPixels)
        output = Workspace(builder.maxBatch * outputShape.reduce(1, *))
        inputGradient = Workspace(builder.maxBatch * inputShape.reduce(1, *))
        winners = [UInt8](repeating: 0, count: pooled ? builder.maxBatch * outputShape.reduce(1, *) : 0)
    }

    /// Output pixels per chunk: GEMMs of W3's and W2's shapes reach their best speed from about
    /// 1,500 columns on (measured with OpenBLAS's Haswell kernels, one thread).
    static let chunkPixels = 1600
    /// A chunk's cols should stay in a core's L2 (2 MB here) beside the GEMM's packed panels…
    static let chunkBytes = 1 << 20
    /// …unless that leaves GEMMs narrower than this.
    static let minimumChunkPixels = 768

    /// About `chunkPixels` output pixels of whole samples, fewer while their cols would pass
    /// `chunkBytes`, but never under `minimumChunkPixels` (W2: 7 samples, W3's second layer: 4).
    static func samplesPerChunk(_ geometry: ConvolutionGeometry, maxBatch: Int) -> Int {
        let pixels = geometry.outputPixels
        let forWidth = max(1, chunkPixels / pixels)
        let forCache = max(1, chunkBytes / (geometry.patchSize * pixels * MemoryLayout<Float>.size))
        let atLeast = (minimumChunkPixels + pixels - 1) / pixels
        return min(maxBatch, forWidth, max(forCache, atLeast))
    }

    /// Lowers samples first..<first+count to cols [CKK, count·P].
    private func lower(_ input: UnsafePointer<Float>, first: Int, count: Int) {
        let pixels = geometry.outputPixels
        for sample in 0..<count {
            geometry.im2col(input + (first + sample) * inputSize, columns.pointer + sample * pixels, rowStride: count * pixels)
        }
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let b = bias.map { parameters.values(of: $0) }
        for first in stride(from: 0, to: batch, by: chunk) {
            let count = min(chunk, batch - first)
            let chunkPixels = count * pixels
            lower(input, first: first, count: count)
            // Yt[K, S·P] = W[K, CKK] · cols[CKK, S·P]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(filters), Int32(chunkPixels), Int32(patch),
                        1, parameters.values(of: weight), Int32(patch), columns.pointer, Int32(chunkPixels), 0, transposed.pointer, Int32(chunkPixels))
            if pooled {
                let (height, width, planeSize) = (outputShape[1], outputShape[2], outputShape[1] * outputShape[2])
                winners.withUnsafeMutableBufferPointer { winners in
                    for sample in 0..<count {
                        for k in 0..<filters {
                            let plane = ((first + sample) * filters + k) * planeSize
                            cohort_bias_activate_max_pool_2x2(transposed.pointer + k * chunkPixels + sample * pixels, b?[k] ?? 0, fusedReLU ? 1 : 0,
                                                              output.pointer + plane, winners.baseAddress! + plane,
                                                              geometry.outputWidth, height, width)
                        }
                    }
                }
                continue
            }
            for sample in 0..<count {
                for k in 0..<filters {
                    let source = transposed.pointer + k * chunkPixels + sample * pixels
                    let target = output.pointer + ((first + sample) * filters + k) * pixels
                    cohort_bias_activate(source, target, pixels, b?[k] ?? 0, fusedReLU ? 1 : 0)
                }
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let db = bias.map { parameters.gradients(of: $0) }
        let dW = parameters.gradients(of: weight)
        for first in stride(from: 0, to: batch, by: chunk) {
            let count = min(chunk, batch - first)
            let chunkPixels = count * pixels
            // dYt[K, S·P] from dy[B, K, P], masked where the fused ReLU was off; db[k] = Σ dYt[k, :].
            if pooled {
                let planeSize = outputShape[1] * outputShape[2]
                winners.withUnsafeBufferPointer { winners in
                    for sample in 0..<count {
                        for k in 0..<filters {
                            let plane = ((first + sample) * filters + k) * planeSize
                            cohort_max_pool_2x2_backward(outputGradient + plane, winners.baseAddress! + plane,
                                                         fusedReLU ? UnsafePointer(output.pointer + plane) : nil,
                                                         transposed.pointer + k * chunkPixels + sample * pixels, 1,
                                                         geometry.outputHeight, geometry.outputWidth, outputShape[1], outputShape[2])
                        }
                    }
                }
            } else {
                for sample in 0..<count {
                    for k in 0..<filters {
                        let offset = ((first + sample) * filters + k) * pixels
                        cohort_mask_copy(outputGradient + offset, fusedReLU ? UnsafePointer(output.pointer + offset) : nil,
                                         transposed.pointer + k * chunkPixels + sample * pixels, pixels)
                    }
                }
            }
            if let db {
                for k in 0..<filters { db[k] += cohort_sum(transposed.pointer + k * chunkPixels, chunkPixels) }
            }
            lower(input, first: first, count: count)
            // dW[K, CKK] += dYt[K, S·P] · colsᵀ[S·P, CKK]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(filters), Int32(patch), Int32(chunkPixels),
                        1, transposed.pointer, Int32(chunkPixels), columns.pointer, Int32(chunkPixels), 1, dW, Int32(patch))
            guard computesInputGradient else { continue }
            // dcols[CKK, S·P] = Wᵀ[CKK, K] · dYt[K, S·P], folded back per sample
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(patch), Int32(chunkPixels), Int32(filters),
                        1, parameters.values(of: weight), Int32(patch), transposed.pointer, Int32(chunkPixels), 0,
                        columnGradient.pointer, Int32(chunkPixels))
            for sample in 0..<count {
                geometry.col2im(columnGradient.pointer + sample * pixels, rowStride: chunkPixels,
                                inputGradient.pointer + (first + sample) * inputSize)
            }
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
