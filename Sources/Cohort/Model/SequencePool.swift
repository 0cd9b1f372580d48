/// `sequence_pool`: a sequence [T, C] to one vector [C]: the mean over the sample's real
/// positions (sentence-transformers' mean pooling: padding, as the model's `bert_embeddings`
/// finds it, left out), or its first position (BERT's `[CLS]`).
///
/// YAML: `{type: sequence_pool, mode: mean}` or `mode: first`. No parameters.
public struct SequencePoolOptions: LayerOptions {
    public static let type = "sequence_pool"
    public enum Mode: String, Sendable, CaseIterable { case mean, first }
    public var mode: Mode

    public init(mode: Mode = .mean) { self.mode = mode }
    public init(config: ConfigMap) throws {
        mode = Mode(rawValue: try config.choice("mode", Mode.allCases.map(\.rawValue), default: "mean")) ?? .mean
    }
    public var yaml: [String: String] { ["mode": mode.rawValue] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): sequence_pool reads a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        let lengths = (builder.built.last { $0 is BertEmbeddings } as? BertEmbeddings)?.lengths
        return SequencePool(name: name, inputShape: inputShape, mode: mode, lengths: lengths, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(BertEmbeddingsOptions(vocabulary: 5, dimension: 4, maxLength: 8, epsilon: 0.1)),
                               .family(SequencePoolOptions(mode: .mean)), .dense(3),
                               ], inputShape: [6], vocabulary: 5)
    }
}

/// mean: y[b] = Σ_{t < n_b} x[b, t] / n_b, dx[b, t] = dy[b] / n_b for t < n_b, else 0, with n_b
/// the sample's length (T without a `bert_embeddings`). first: y[b] = x[b, 0].
public final class SequencePool: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { [inputShape[1]] }
    let mode: SequencePoolOptions.Mode
    let lengths: SequenceLengths?
    private let output: Workspace
    private let inputGradient: Workspace

    init(name: String, inputShape: [Int], mode: SequencePoolOptions.Mode, lengths: SequenceLengths?, builder: LayerBuilder) {
        let maxBatch = builder.maxBatch
        (self.name, self.inputShape, self.mode, self.lengths) = (name, inputShape, mode, lengths)
        output = builder.workspace(maxBatch * inputShape[1])
        inputGradient = builder.workspace(gradient: maxBatch * inputShape[0] * inputShape[1])
    }

    private func length(_ b: Int) -> Int { mode == .first ? 1 : min(lengths?.values[b] ?? inputShape[0], inputShape[0]) }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (T, C) = (inputShape[0], inputShape[1])
        for b in 0..<batch {
            let (y, n) = (output.pointer + b * C, length(b))
            for c in 0..<C { y[c] = 0 }
            for t in 0..<n {
                let x = input + (b * T + t) * C
                for c in 0..<C { y[c] += x[c] }
            }
            if n > 1 { for c in 0..<C { y[c] /= Float(n) } }
        }
        return UnsafePointer(output.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (T, C) = (inputShape[0], inputShape[1])
        for b in 0..<batch {
            let (dy, n) = (outputGradient + b * C, length(b))
            for t in 0..<T {
                let dx = inputGradient.pointer + (b * T + t) * C
                for c in 0..<C { dx[c] = t < n ? dy[c] / Float(n) : 0 }
            }
        }
        return UnsafePointer(inputGradient.pointer)
    }
}

extension SequencePoolOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        let C = shape[1]
        switch mode {
        case .first:
            let first = graph.node("Gather", [x, graph.constantInt("first_position", [], [0])], attributes: [.int("axis", 1)])
            return (first, [C])
        case .mean:
            guard let mask = graph.sequenceMask else {
                return (graph.node("ReduceMean", [x], attributes: [.ints("axes", [1]), .int("keepdims", 0)]), [C])
            }
            let summed = graph.node("ReduceSum", [graph.node("Mul", [x, mask.weights]), graph.constantInt("time_axis", [1], [1])],
                                    attributes: [.int("keepdims", 0)])
            return (graph.node("Div", [summed, mask.lengths]), [C])
        }
    }
}
