import CCohort
/// The keys both windowed pools share: `size` (required) and `stride` (default: the size).
public protocol WindowedPoolOptions: LayerOptions {
    var size: Int { get }
    var stride: Int { get }
    init(size: Int, stride: Int?)
}

extension WindowedPoolOptions {
    public init(config: ConfigMap) throws {
        let size = try config.required("size", 1...64, family: Self.type)
        self.init(size: size, stride: try config.int("stride", default: size, range: 1...64))
    }
    public var yaml: [String: String] { ["size": "\(size)", "stride": "\(stride)"] }
}

/// `max_pool`: `{type: max_pool, size: K, stride: K}` over each channel of an image [C, H, W].
public struct MaxPoolOptions: WindowedPoolOptions {
    public static let type = "max_pool"
    public var size: Int
    public var stride: Int
    public init(size: Int, stride: Int? = nil) { (self.size, self.stride) = (size, stride ?? size) }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try MaxPool2D(name: name, inputShape: inputShape, size: size, stride: stride, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.maxPool(2), .maxPool(2, stride: 1), .flatten, .dense(2)], inputShape: [2, 5, 5])
    }
}

/// `avg_pool`: `{type: avg_pool, size: K, stride: K}` over each channel of an image [C, H, W].
public struct AveragePoolOptions: WindowedPoolOptions {
    public static let type = "avg_pool"
    public var size: Int
    public var stride: Int
    public init(size: Int, stride: Int? = nil) { (self.size, self.stride) = (size, stride ?? size) }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try AveragePool2D(name: name, inputShape: inputShape, size: size, stride: stride, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.averagePool(2), .flatten, .dense(2)], inputShape: [2, 4, 5])
    }
}

/// `global_avg_pool`: `{type: global_avg_pool}`, an image [C, H, W] to its channel means [C].
public struct GlobalAveragePoolOptions: LayerOptions {
    public static let type = "global_avg_pool"
    public init() {}
    public init(config: ConfigMap) throws {}
    public var yaml: [String: String] { [:] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try GlobalAveragePool(name: name, inputShape: inputShape, builder: builder)
    }
    public static var specimen: LayerSpecimen { LayerSpecimen(layers: [.globalAveragePool, .dense(2)], inputShape: [3, 2, 2]) }
}

/// Max pooling over NCHW: y[c, oy, ox] = max of the size×size window at (oy·s, ox·s) (valid
/// windows only). Forward remembers each window's arg-max, and backward routes the whole
/// gradient there (the first maximum wins ties, as in PyTorch).
public final class MaxPool2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let size, stride: Int
    private let output: Workspace
    private let inputGradient: Workspace
    /// Flat input index of each output's maximum (general sizes).
    private var argmax: [Int32]
    /// Which of the four inputs won each 2×2 window (the common case; pooling.c).
    private var winners: [UInt8]

    init(name: String, inputShape: [Int], size: Int, stride: Int, builder: LayerBuilder) throws {
        let maxBatch = builder.maxBatch
        self.name = name
        self.inputShape = inputShape
        (self.size, self.stride) = (size, stride)
        outputShape = try pooledShape(name: name, type: "max_pool", inputShape: inputShape, size: size, stride: stride)
        output = builder.workspace(maxBatch * outputShape.reduce(1, *))
        inputGradient = builder.workspace(maxBatch * inputShape.reduce(1, *))
        let outputs = maxBatch * outputShape.reduce(1, *)
        let pairs = size == 2 && stride == 2
        argmax = [Int32](repeating: 0, count: pairs ? 0 : outputs)
        winners = [UInt8](repeating: 0, count: pairs ? outputs : 0)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (height, width) = (inputShape[1], inputShape[2])
        let (outputHeight, outputWidth) = (outputShape[1], outputShape[2])
        if size == 2, stride == 2 {
            winners.withUnsafeMutableBufferPointer { winners in
                cohort_max_pool_2x2(input, output.pointer, winners.baseAddress!, batch * inputShape[0], height, width, outputHeight, outputWidth)
            }
            return UnsafePointer(output.pointer)
        }
        argmax.withUnsafeMutableBufferPointer { argmax in
            var o = 0
            for plane in 0..<(batch * inputShape[0]) {
                let x = input + plane * height * width
                for oy in 0..<outputHeight {
                    for ox in 0..<outputWidth {
                        var best = (oy * stride) * width + ox * stride
                        for i in 0..<size {
                            for j in 0..<size {
                                let index = (oy * stride + i) * width + ox * stride + j
                                if x[index] > x[best] { best = index }
                            }
                        }
                        output.pointer[o] = x[best]
                        argmax[o] = Int32(plane * height * width + best)
                        o += 1
                    }
                }
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        if size == 2, stride == 2 {
            winners.withUnsafeBufferPointer { winners in
                cohort_max_pool_2x2_backward(outputGradient, winners.baseAddress!, inputGradient.pointer, batch * inputShape[0],
                                             inputShape[1], inputShape[2], outputShape[1], outputShape[2])
            }
            return UnsafePointer(inputGradient.pointer)
        }
        inputGradient.pointer.update(repeating: 0, count: batch * inputSize)
        argmax.withUnsafeBufferPointer { argmax in
            for o in 0..<(batch * outputSize) { inputGradient.pointer[Int(argmax[o])] += outputGradient[o] }
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

/// Average pooling over NCHW (valid windows): y = mean of each size×size window;
/// backward spreads dy / size² over the window.
public final class AveragePool2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let size, stride: Int
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], size: Int, stride: Int, builder: LayerBuilder) throws {
        let maxBatch = builder.maxBatch
        self.name = name
        self.inputShape = inputShape
        (self.size, self.stride) = (size, stride)
        outputShape = try pooledShape(name: name, type: "avg_pool", inputShape: inputShape, size: size, stride: stride)
        output = builder.workspace(maxBatch * outputShape.reduce(1, *))
        inputGradient = builder.workspace(maxBatch * inputShape.reduce(1, *))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (height, width, outputHeight, outputWidth) = (inputShape[1], inputShape[2], outputShape[1], outputShape[2])
        let scale = 1 / Float(size * size)
        var o = 0
        for plane in 0..<(batch * inputShape[0]) {
            let x = input + plane * height * width
            for oy in 0..<outputHeight {
                for ox in 0..<outputWidth {
                    var sum: Float = 0
                    for i in 0..<size {
                        for j in 0..<size { sum += x[(oy * stride + i) * width + ox * stride + j] }
                    }
                    output.pointer[o] = sum * scale
                    o += 1
                }
            }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (height, width, outputHeight, outputWidth) = (inputShape[1], inputShape[2], outputShape[1], outputShape[2])
        let scale = 1 / Float(size * size)
        inputGradient.pointer.update(repeating: 0, count: batch * inputSize)
        var o = 0
        for plane in 0..<(batch * inputShape[0]) {
            let dx = inputGradient.pointer + plane * height * width
            for oy in 0..<outputHeight {
                for ox in 0..<outputWidth {
                    let share = outputGradient[o] * scale
                    for i in 0..<size {
                        for j in 0..<size { dx[(oy * stride + i) * width + ox * stride + j] += share }
                    }
                    o += 1
                }
            }
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

/// [C, H, W] → [C]: the mean of each channel's plane; backward spreads dy / (H·W).
public final class GlobalAveragePool: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], builder: LayerBuilder) throws {
        let maxBatch = builder.maxBatch
        guard inputShape.count == 3 else { throw CohortError("\(name): global_avg_pool needs image input [C, H, W], got \(inputShape)") }
        self.name = name
        self.inputShape = inputShape
        outputShape = [inputShape[0]]
        output = builder.workspace(maxBatch * inputShape[0])
        inputGradient = builder.workspace(maxBatch * inputShape.reduce(1, *))
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let pixels = inputShape[1] * inputShape[2]
        for plane in 0..<(batch * inputShape[0]) {
            var sum: Float = 0
            let x = input + plane * pixels
            for p in 0..<pixels { sum += x[p] }
            output.pointer[plane] = sum / Float(pixels)
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let pixels = inputShape[1] * inputShape[2]
        for plane in 0..<(batch * inputShape[0]) {
            (inputGradient.pointer + plane * pixels).update(repeating: outputGradient[plane] / Float(pixels), count: pixels)
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

/// [C, H, W] → [C, ⌊(H − size)/stride⌋ + 1, ⌊(W − size)/stride⌋ + 1] (valid windows only).
func pooledShape(name: String, type: String, inputShape: [Int], size: Int, stride: Int) throws -> [Int] {
    guard inputShape.count == 3, inputShape[1] >= size, inputShape[2] >= size else {
        throw CohortError("\(name): \(type) of size \(size) needs image input at least \(size)×\(size), got \(inputShape)")
    }
    return [inputShape[0], (inputShape[1] - size) / stride + 1, (inputShape[2] - size) / stride + 1]
}

extension MaxPoolOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        graph.pool("MaxPool", x, size: size, stride: stride, shape: shape)
    }
}

extension AveragePoolOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        graph.pool("AveragePool", x, size: size, stride: stride, shape: shape)
    }
}

extension GlobalAveragePoolOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let pooled = graph.node("GlobalAveragePool", [x])
        return (graph.flatten(pooled, shape).0, [shape[0]])
    }
}
