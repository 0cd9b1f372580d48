import CCohort
/// `conv2d`: `{type: conv2d, filters: N, kernel: K, stride: 1, padding: valid|same, activation: relu,
/// init: glorot_uniform, bias: true}`. A ReLU is fused into the layer, and so is a 2×2 stride-2
/// `max_pool` right after it (one layer, the same results bit for bit).
public struct Conv2DOptions: LayerOptions {
    public static let type = "conv2d"
    public var filters: Int
    public var kernel: Int
    public var stride: Int
    public var padding: Padding
    public var activation: ActivationKind?
    public var initializer: Initializer?
    public var bias: Bool
    /// Fused with the 2×2 max pool after it (set by the builder, not a YAML key).
    var pooled = false

    public init(filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .valid, activation: ActivationKind? = nil,
                initializer: Initializer? = nil, bias: Bool = true) {
        (self.filters, self.kernel, self.stride, self.padding) = (filters, kernel, stride, padding)
        (self.activation, self.initializer, self.bias) = (activation, initializer, bias)
    }
    public init(config: ConfigMap) throws {
        self.init(filters: try config.required("filters", family: Self.type), kernel: try config.required("kernel", 1...64, family: Self.type),
                  stride: try config.int("stride", default: 1, range: 1...64),
                  padding: Padding(rawValue: try config.choice("padding", ["valid", "same"], default: "valid"))!,
                  activation: try config.activation(), initializer: try config.initializer(), bias: try config.bool("bias", default: true))
    }
    public var yaml: [String: String] {
        var keys = ["filters": "\(filters)", "kernel": "\(kernel)", "stride": "\(stride)", "padding": padding.rawValue, "bias": "\(bias)"]
        keys["activation"] = activation?.rawValue
        keys["init"] = initializer?.rawValue
        return keys
    }
    public var followingActivation: ActivationKind? { activation == .relu ? nil : activation }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try Conv2D(name: name, inputShape: inputShape, filters: filters, kernel: kernel, stride: stride, padding: padding,
                   initializer: initializer ?? .glorotUniform, useBias: bias, fusedReLU: activation == .relu, pooled: pooled,
                   builder: builder)
    }
    /// A 2×2 stride-2 max pool after a convolution whose activation is ReLU or none, with an
    /// output of at least 2×2.
    public func fused(with next: LayerSpec, inputShape: [Int], builder: LayerBuilder) -> (any LayerOptions)? {
        guard builder.fusesPooling, !pooled, inputShape.count == 3, activation == nil || activation == .relu,
              let pool = next.options as? MaxPoolOptions, pool.size == 2, pool.stride == 2,
              let geometry = try? ConvolutionGeometry(name: "", channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                                                      kernel: kernel, stride: stride, padding: padding),
              geometry.outputHeight >= 2, geometry.outputWidth >= 2
        else { return nil }
        var fused = self
        fused.pooled = true
        return fused
    }
    public static var specimen: LayerSpecimen {
        // The first convolution and its pool run fused (Conv2D.pooled), the second has an activation layer after it.
        LayerSpecimen(layers: [.conv2d(2, kernel: 3, padding: .same), .maxPool(2), .conv2d(2, kernel: 2, stride: 2, padding: .same, activation: .tanh),
                               .flatten, .dense(2)], inputShape: [2, 5, 6])
    }
}

/// 2-D convolution (cross-correlation, as every framework computes it) over NCHW samples.
///
/// x is [B, C, H, W]; W is [K, C, kh, kw] (PyTorch's OIHW order); b is [K]; y is [B, K, OH, OW].
/// The batch is processed in chunks of S samples (`samplesPerChunk`: S a power of two up to 16,
/// S·P near 768 to 1,600 output pixels, P = OH·OW). Each chunk is packed once, in forward, into a zero-padded layout
/// with the sample index fastest, padded[C, Hp, Wp, S] (kept for backward), and lowered from
/// there with im2col to cols [C·kh·kw, P·S], columns in (pixel, sample) order: with stride 1 a
/// line of cols is one run of OW·S floats of padded, where per-sample lowering copies lines of
/// OW floats and handles the padding on each (W3's second layer: 14-float lines; the
/// interleaved layout took its im2col from 4.1 to 2.4 ms and col2im from 4.7 to 1.6 ms per
/// batch of 64). Each pass is then one SGEMM per chunk:
///   forward   Yt[K, P·S] = W[K, CKK] · cols            then y[b, k, :] from Yt[k, (·, b)] + b[k]
///   backward  dW[K, CKK] += dYt · colsᵀ;  dcols[CKK, P·S] = Wᵀ · dYt;  dx = unpack(col2im(dcols))
/// Chunks keep cols, Yt and dcols in the core's cache (W3's second convolution has 40 MB of
/// cols for a batch of 64, 2.5 MB per chunk of 4), which measured faster than one batch-wide
/// GEMM; backward lowers each chunk again (from the packed input) instead of storing all cols,
/// and dcols takes the place of the chunk's cols once dW has used them.
/// A ReLU after the convolution is fused (applied while each output row is in cache, and its
/// mask applied to dy on the way back), saving two passes over the largest activations.
/// A 2×2 max pool after it can be fused too (`pooled`): each chunk's output planes are pooled
/// while in cache, so the full-size activation is never written; y is then [B, K, OH/2, OW/2],
/// and backward rebuilds dYt from the pool's winners and the pooled outputs (the ReLU mask of
/// a winner is its pooled value > 0). The results are those of the two layers, bit for bit.
public final class Conv2D: Layer, InputGradientOptional {
    public var threading: LayerThreading { .chunks }
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
    public var multiplyAddsPerSample: Int { outputShape[0] * geometry.outputPixels * geometry.patchSize }
    public var summaryTag: String { (fusedReLU ? "+relu" : "") + (pooled ? "+max_pool" : "") }
    /// Each chunk's packed input, padded[C, Hp, Wp, S], from forward for backward.
    private let packed: Workspace
    /// Per group of chunks (`groupRanges`): a chunk's padded input gradient, before unpacking;
    /// cols in forward and in backward until dW is accumulated, then dcols; the GEMM's output.
    private let scratch: [(packedGradient: Workspace, columns: Workspace, transposed: Workspace)]
    /// Per group: its chunks' share of dW and db, added to the gradients in group order.
    private let weightPartials: Workspace
    private let biasPartials: Workspace
    /// At most this many groups of consecutive chunks, fixed by the batch alone: a group's chunks
    /// run in order on one thread, so the bits do not depend on the thread count.
    static let groups = 4
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
        let chunks = (builder.maxBatch + chunk - 1) / chunk
        packed = builder.workspace(chunks * chunk * geometry.paddedPlaneSize * geometry.channels)
        let groups = min(Conv2D.groups, chunks)
        let (samples, plane) = (chunk, geometry.paddedPlaneSize * geometry.channels)
        scratch = (0..<groups).map { _ in
            (builder.workspace(samples * plane), builder.workspace(geometry.patchSize * chunkPixels), builder.workspace(filters * chunkPixels))
        }
        weightPartials = builder.workspace(groups * filters * geometry.patchSize)
        biasPartials = builder.workspace(groups * filters)
        output = builder.workspace(builder.maxBatch * outputShape.reduce(1, *))
        inputGradient = builder.workspace(builder.maxBatch * inputShape.reduce(1, *))
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
        let samples = min(forWidth, max(forCache, atLeast))
        // A power of two up to 16, the nearest, whatever the batch: a batch that is a multiple of 16 (`RowBlocks`)
        // then starts and ends on chunk boundaries wherever it sits in a larger batch, so each of
        // its samples is computed in a chunk of the same shape at the same place (the same bits
        // as one rank's half of a batch twice its size, or a micro-batch of its step).
        var power = 1
        while power * 2 <= samples { power *= 2 }
        if samples * samples >= 2 * power * power { power *= 2 }
        return min(power, 16)
    }

    /// The packed input of the chunk that starts at sample `first`.
    private func packedChunk(first: Int) -> UnsafeMutablePointer<Float> {
        packed.pointer + first * geometry.paddedPlaneSize * geometry.channels
    }

    /// The chunks of a batch in at most `groups` contiguous groups.
    private func groupRanges(batch: Int) -> [Range<Int>] {
        let chunks = (batch + chunk - 1) / chunk
        let groups = min(scratch.count, chunks)
        return (0..<groups).map { (chunks * $0 / groups)..<(chunks * ($0 + 1) / groups) }
    }

    /// C = A·B for one chunk, cut into the same parts (by its shape) whether it runs on this thread
    /// inside a group or on all threads as the only group: a chunk's bits do not depend on how
    /// many chunks the batch has.
    private func product(_ grouped: Bool, _ transposeA: CBLAS_TRANSPOSE, _ transposeB: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32,
                         _ a: UnsafePointer<Float>, _ lda: Int32, _ b: UnsafePointer<Float>, _ ldb: Int32, _ beta: Float,
                         _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) {
        gemm(transposeA == CblasTrans, transposeB == CblasTrans, Int(m), Int(n), Int(k), 1, a, Int(lda), b, Int(ldb),
             beta, c, Int(ldc), serial: grouped)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let b = bias.map { parameters.values(of: $0) }
        let w = parameters.values(of: weight)
        let groups = groupRanges(batch: batch)
        let (chunk, output, pooled, fusedReLU, geometry, inputSize) = (chunk, output.pointer, pooled, fusedReLU, geometry, inputSize)
        winners.withUnsafeMutableBufferPointer { winners in
            LayerThreads.run(parts: groups.count) { group, _ in
                let (columns, transposed) = (scratch[group].columns.pointer, scratch[group].transposed.pointer)
                for index in groups[group] {
                    let first = index * chunk
                    let count = min(chunk, batch - first)
                    let chunkPixels = count * pixels
                    geometry.pack(input + first * inputSize, count: count, sampleSize: inputSize, into: packedChunk(first: first))
                    geometry.im2col(packedChunk(first: first), count: count, columns)
                    // Yt[K, P·S] = W[K, CKK] · cols[CKK, P·S]
                    product(groups.count > 1, CblasNoTrans, CblasNoTrans, Int32(filters), Int32(chunkPixels), Int32(patch),
                            w, Int32(patch), columns, Int32(chunkPixels), 0, transposed, Int32(chunkPixels))
                    if pooled {
                        let (height, width, planeSize) = (outputShape[1], outputShape[2], outputShape[1] * outputShape[2])
                        for k in 0..<filters {
                            let plane = (first * filters + k) * planeSize
                            cohort_bias_activate_max_pool_2x2(transposed + k * chunkPixels, b?[k] ?? 0, fusedReLU ? 1 : 0,
                                                              output + plane, winners.baseAddress! + plane,
                                                              count, filters * planeSize, geometry.outputWidth, height, width)
                        }
                        continue
                    }
                    for k in 0..<filters {
                        cohort_bias_activate_deinterleave(transposed + k * chunkPixels, output + (first * filters + k) * pixels,
                                                          pixels, count, filters * pixels, b?[k] ?? 0, fusedReLU ? 1 : 0)
                    }
                }
            }
        }
        return UnsafePointer(output)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (filters, patch, pixels) = (outputShape[0], geometry.patchSize, geometry.outputPixels)
        let groups = groupRanges(batch: batch)
        let w = parameters.values(of: weight)
        let (chunk, output, pooled, fusedReLU, geometry, inputSize) = (chunk, output.pointer, pooled, fusedReLU, geometry, inputSize)
        let (weightPartials, biasPartials, inputGradient) = (weightPartials.pointer, biasPartials.pointer, inputGradient.pointer)
        let (hasBias, computesInputGradient) = (bias != nil, computesInputGradient)
        winners.withUnsafeBufferPointer { winners in
            LayerThreads.run(parts: groups.count) { group, _ in
                let (columns, transposed, packedGradient) = (scratch[group].columns.pointer, scratch[group].transposed.pointer,
                                                             scratch[group].packedGradient.pointer)
                let dW = weightPartials + group * filters * patch
                let db = biasPartials + group * filters
                dW.update(repeating: 0, count: filters * patch)
                db.update(repeating: 0, count: filters)
                for index in groups[group] {
                    let first = index * chunk
                    let count = min(chunk, batch - first)
                    let chunkPixels = count * pixels
                    // dYt[K, P·S] from dy[B, K, P], masked where the fused ReLU was off; db[k] = Σ dYt[k, :].
                    if pooled {
                        let planeSize = outputShape[1] * outputShape[2]
                        for k in 0..<filters {
                            let plane = (first * filters + k) * planeSize
                            cohort_max_pool_2x2_backward_interleaved(outputGradient + plane, winners.baseAddress! + plane,
                                                                     fusedReLU ? UnsafePointer(output + plane) : nil,
                                                                     transposed + k * chunkPixels, count, filters * planeSize,
                                                                     geometry.outputHeight, geometry.outputWidth, outputShape[1], outputShape[2])
                        }
                    } else {
                        for k in 0..<filters {
                            let offset = (first * filters + k) * pixels
                            cohort_mask_interleave(outputGradient + offset, fusedReLU ? UnsafePointer(output + offset) : nil,
                                                   transposed + k * chunkPixels, pixels, count, filters * pixels)
                        }
                    }
                    if hasBias {
                        for k in 0..<filters { db[k] += cohort_sum(transposed + k * chunkPixels, chunkPixels) }
                    }
                    geometry.im2col(packedChunk(first: first), count: count, columns)
                    // dW[K, CKK] += dYt[K, P·S] · colsᵀ[P·S, CKK]
                    product(groups.count > 1, CblasNoTrans, CblasTrans, Int32(filters), Int32(patch), Int32(chunkPixels),
                            transposed, Int32(chunkPixels), columns, Int32(chunkPixels), 1, dW, Int32(patch))
                    guard computesInputGradient else { continue }
                    // dcols[CKK, P·S] = Wᵀ[CKK, K] · dYt[K, P·S], over the cols just used, then folded back
                    product(groups.count > 1, CblasTrans, CblasNoTrans, Int32(patch), Int32(chunkPixels), Int32(filters),
                            w, Int32(patch), transposed, Int32(chunkPixels), 0, columns, Int32(chunkPixels))
                    geometry.col2im(columns, count: count, packedGradient)
                    geometry.unpack(packedGradient, count: count, sampleSize: inputSize, into: inputGradient + first * inputSize)
                }
            }
        }
        // The groups' shares, in group order.
        cohort_add_rows(weightPartials, parameters.gradients(of: weight), groups.count, filters * patch)
        if let bias { cohort_add_rows(biasPartials, parameters.gradients(of: bias), groups.count, filters) }
        return UnsafePointer(inputGradient)
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

    /// The rows and columns the kernel windows cover, padding included: the packed layout's plane.
    var paddedHeight: Int { (outputHeight - 1) * stride + kernel }
    var paddedWidth: Int { (outputWidth - 1) * stride + kernel }
    var paddedPlaneSize: Int { paddedHeight * paddedWidth }

    /// padded[c, y, x, s] = sample s of x at [c, y − padTop, x − padLeft], 0 outside; sample s
    /// starts at x + s·sampleSize. (The loops are in convolution.c.)
    func pack(_ x: UnsafePointer<Float>, count: Int, sampleSize: Int, into padded: UnsafeMutablePointer<Float>) {
        cohort_pack_interleaved(x, padded, count, sampleSize, channels, height, width, padTop, padLeft, paddedHeight, paddedWidth)
    }

    /// The adjoint of `pack`: each sample's [C, H, W] from padded, 0 where no window reaches.
    func unpack(_ padded: UnsafePointer<Float>, count: Int, sampleSize: Int, into dx: UnsafeMutablePointer<Float>) {
        cohort_unpack_interleaved(padded, dx, count, sampleSize, channels, height, width, padTop, padLeft, paddedHeight, paddedWidth)
    }

    /// cols[(c·k + i)·k + j, (oy·OW + ox)·count + s] = padded[c, oy·stride + i, ox·stride + j, s].
    func im2col(_ padded: UnsafePointer<Float>, count: Int, _ cols: UnsafeMutablePointer<Float>) {
        cohort_im2col(padded, cols, count, channels, kernel, stride, paddedHeight, paddedWidth, outputHeight, outputWidth)
    }

    /// The adjoint of im2col: padded[c, y, x, s] = Σ of the dcols entries that read it.
    func col2im(_ cols: UnsafePointer<Float>, count: Int, _ padded: UnsafeMutablePointer<Float>) {
        cohort_col2im(cols, padded, count, channels, kernel, stride, paddedHeight, paddedWidth, outputHeight, outputWidth)
    }
}

extension Conv2DOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        var (value, out) = try graph.conv(x, name, filters: filters, kernel: kernel, stride: stride, padding: padding, bias: bias, shape: shape)
        if let activation { value = graph.activation(activation, value) }
        return (value, out)
    }
}
