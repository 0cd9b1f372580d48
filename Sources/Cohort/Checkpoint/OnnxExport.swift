import Foundation

/// `cohort export --format onnx`: an inference graph (opset 17) of a checkpoint's model with
/// its input normalization, a dynamic batch dimension, dropout left out and batch norm on its
/// running statistics. The input is what a data file holds, as float32: images [N, H, W, C]
/// (NHWC, pixel values as stored: the graph scales, standardizes and transposes to NCHW),
/// vectors [N, D], sequences [N, T, D]; a language model takes int64 token ids [N, T]. The
/// output is the model's last layer: logits (or the regression outputs), as Cohort's own.
public enum OnnxExport {
    /// The ONNX model bytes for `checkpoint`, whose model reads samples of `inputShape`.
    public static func model(of checkpoint: Checkpoint, inputShape: [Int]) throws -> [UInt8] {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        var graph = Graph(checkpoint: checkpoint)
        let layout = checkpoint.inputLayout ?? (inputShape.count == 3 ? "CHW" : inputShape.count == 1 ? "D" : "T")
        var value: String
        var shape: [Int]
        switch layout {
        case "T":
            graph.input = ("tokens", 7, ["N"] + inputShape.map { "\($0)" })
            (value, shape) = ("tokens", inputShape)
        case "CHW":
            let (c, h, w) = (inputShape[0], inputShape[1], inputShape[2])
            graph.input = ("input", 1, ["N", "\(h)", "\(w)", "\(c)"])
            value = try graph.normalize("input", channels: c)
            value = graph.node("Transpose", [value], attributes: [.ints("perm", [0, 3, 1, 2])])
            shape = inputShape
        default:  // D or TD: features last, as in the file
            graph.input = ("input", 1, ["N"] + inputShape.map { "\($0)" })
            value = try graph.normalize("input", channels: inputShape.last!)
            shape = inputShape
        }
        var builder = Builder(graph: graph)
        (value, shape) = try builder.stack(config.layers, value, shape, prefix: "")
        graph = builder.graph
        graph.output = (value, ["N"] + shape.map { "\($0)" })
        return graph.encode(producer: "cohort")
    }

    // MARK: The graph

    enum Attribute {
        case int(String, Int)
        case float(String, Float)
        case ints(String, [Int])

        var proto: Protobuf {
            var p = Protobuf()
            switch self {
            case .int(let name, let value): p.string(1, name); p.int(3, Int64(value)); p.int(20, 2)
            case .float(let name, let value): p.string(1, name); p.float(2, value); p.int(20, 1)
            case .ints(let name, let values): p.string(1, name); for v in values { p.int(8, Int64(v)) }; p.int(20, 7)
            }
            return p
        }
    }

    struct Graph {
        let checkpoint: Checkpoint
        var nodes: [Protobuf] = []
        var initializers: [Protobuf] = []
        var names = Set<String>()
        var counter = 0
        var input: (name: String, type: Int, dims: [String]) = ("input", 1, [])
        var output: (name: String, dims: [String]) = ("output", [])

        init(checkpoint: Checkpoint) { self.checkpoint = checkpoint }

        mutating func fresh(_ hint: String) -> String {
            counter += 1
            return "\(hint)_\(counter)"
        }

        /// Adds a node; returns its (first) output's name.
        @discardableResult
        mutating func node(_ op: String, _ inputs: [String], outputs count: Int = 1, attributes: [Attribute] = []) -> String {
            let outputs = (0..<count).map { _ in fresh(op.lowercased()) }
            var p = Protobuf()
            for input in inputs { p.string(1, input) }
            for output in outputs { p.string(2, output) }
            p.string(3, outputs[0])
            p.string(4, op)
            for attribute in attributes { p.message(5, attribute.proto) }
            nodes.append(p)
            return outputs[0]
        }

        mutating func outputs(_ op: String, _ inputs: [String], count: Int, attributes: [Attribute] = []) -> [String] {
            let first = node(op, inputs, outputs: count, attributes: attributes)
            let number = Int(first.split(separator: "_").last!)!
            return (0..<count).map { "\(op.lowercased())_\(number + $0)" }
        }

        /// A float32 initializer.
        mutating func constant(_ name: String, _ shape: [Int], _ values: [Float]) -> String {
            let unique = names.contains(name) ? fresh(name) : name
            names.insert(unique)
            var t = Protobuf()
            for d in shape { t.int(1, Int64(d)) }
            t.int(2, 1)
            t.string(8, unique)
            t.data(9, values.withUnsafeBytes { Array($0) })
            initializers.append(t)
            return unique
        }

        /// An int64 initializer.
        mutating func constantInt(_ name: String, _ shape: [Int], _ values: [Int64]) -> String {
            let unique = fresh(name)
            var t = Protobuf()
            for d in shape { t.int(1, Int64(d)) }
            t.int(2, 7)
            t.string(8, unique)
            t.data(9, values.withUnsafeBytes { Array($0) })
            initializers.append(t)
            return unique
        }

        /// A checkpoint tensor (a parameter or buffer).
        func tensor(_ name: String) throws -> (shape: [Int], values: [Float]) {
            guard let tensor = checkpoint.tensors["parameters/\(name)"] ?? checkpoint.tensors["buffers/\(name)"] else {
                throw CohortError("the checkpoint has no tensor \(name) for its own config's model")
            }
            return tensor
        }

        /// A checkpoint tensor as an initializer (its values and shape as stored).
        mutating func parameter(_ name: String) throws -> (name: String, shape: [Int], values: [Float]) {
            let tensor = try self.tensor(name)
            return (constant(name.replacingOccurrences(of: "/", with: "."), tensor.shape, tensor.values), tensor.shape, tensor.values)
        }

        /// input · scale, then (x − mean) / std per channel (the last axis) when the model standardizes.
        mutating func normalize(_ input: String, channels: Int) throws -> String {
            var value = input
            if let scale = checkpoint.inputScale, scale != 1 {
                value = node("Mul", [value, constant("input_scale", [], [Float(scale)])])
            }
            if let (mean, std) = checkpoint.normalization {
                let expand = { (values: [Double]) in values.count == channels ? values.map(Float.init) : [Float](repeating: Float(values[0]), count: channels) }
                value = node("Sub", [value, constant("input_mean", [channels], expand(mean))])
                value = node("Div", [value, constant("input_std", [channels], expand(std))])
            }
            return value
        }

        func valueInfo(_ name: String, type: Int, dims: [String]) -> Protobuf {
            var shapeProto = Protobuf()
            for d in dims {
                var dim = Protobuf()
                if let value = Int(d) { dim.int(1, Int64(value)) } else { dim.string(2, d) }
                shapeProto.message(1, dim)
            }
            var tensor = Protobuf()
            tensor.int(1, Int64(type))
            tensor.message(2, shapeProto)
            var typeProto = Protobuf()
            typeProto.message(1, tensor)
            var info = Protobuf()
            info.string(1, name)
            info.message(2, typeProto)
            return info
        }

        func encode(producer: String) -> [UInt8] {
            var graph = Protobuf()
            for node in nodes { graph.message(1, node) }
            graph.string(2, "cohort")
            for initializer in initializers { graph.message(5, initializer) }
            graph.message(11, valueInfo(input.name, type: input.type, dims: input.dims))
            graph.message(12, valueInfo(output.name, type: 1, dims: output.dims))
            var opset = Protobuf()
            opset.string(1, "")
            opset.int(2, 17)
            var model = Protobuf()
            model.int(1, 8)  // IR version 8 (opset 17)
            model.string(2, producer)
            model.message(7, graph)
            model.message(8, opset)
            return model.bytes
        }
    }

    // MARK: Layers

    struct Builder {
        var graph: Graph
        var counts: [String: Int] = [:]
        var embedding: (name: String, vocabulary: Int)?

        mutating func layerName(_ spec: LayerSpec, prefix: String) -> String {
            if let name = spec.name { return prefix + name }
            counts[spec.type, default: 0] += 1
            return "\(prefix)\(spec.type)_\(counts[spec.type]!)"
        }

        mutating func activation(_ kind: ActivationKind, _ x: String) -> String {
            switch kind {
            case .relu: return graph.node("Relu", [x])
            case .sigmoid: return graph.node("Sigmoid", [x])
            case .tanh: return graph.node("Tanh", [x])
            case .leakyRelu(let slope): return graph.node("LeakyRelu", [x], attributes: [.float("alpha", slope)])
            case .gelu:
                // x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (Gelu is opset 20).
                let erf = graph.node("Erf", [graph.node("Div", [x, graph.constant("sqrt2", [], [Float(2).squareRoot()])])])
                let one = graph.node("Add", [erf, graph.constant("one", [], [1])])
                return graph.node("Mul", [graph.node("Mul", [x, one]), graph.constant("half", [], [0.5])])
            }
        }

        /// x · W + b over the last axis (W stored [in, out]).
        mutating func linear(_ x: String, _ name: String, bias: Bool) throws -> String {
            let weight = try graph.parameter("\(name)/weight")
            var y = graph.node("MatMul", [x, weight.name])
            if bias { y = graph.node("Add", [y, try graph.parameter("\(name)/bias").name]) }
            return y
        }

        mutating func batchNorm(_ x: String, _ name: String, epsilon: Float) throws -> String {
            let inputs = try ["gamma", "beta", "running_mean", "running_var"].map { try graph.parameter("\(name)/\($0)").name }
            return graph.node("BatchNormalization", [x] + inputs, attributes: [.float("epsilon", epsilon)])
        }

        mutating func conv(_ x: String, _ name: String, filters: Int, kernel: Int, stride: Int, padding: Padding, bias: Bool,
                           shape: [Int]) throws -> (String, [Int]) {
            let (h, w) = (shape[1], shape[2])
            var pads = [0, 0, 0, 0]
            var (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1)
            if padding == .same {
                (oh, ow) = ((h + stride - 1) / stride, (w + stride - 1) / stride)
                let th = max((oh - 1) * stride + kernel - h, 0), tw = max((ow - 1) * stride + kernel - w, 0)
                pads = [th / 2, tw / 2, th - th / 2, tw - tw / 2]  // TensorFlow's split: the extra one last
            }
            var inputs = [x, try graph.parameter("\(name)/weight").name]
            if bias { inputs.append(try graph.parameter("\(name)/bias").name) }
            let y = graph.node("Conv", inputs, attributes: [.ints("kernel_shape", [kernel, kernel]), .ints("strides", [stride, stride]),
                                                            .ints("pads", pads)])
            return (y, [filters, oh, ow])
        }

        mutating func layerNorm(_ x: String, _ name: String, epsilon: Float) throws -> String {
            graph.node("LayerNormalization", [x, try graph.parameter("\(name)/weight").name, try graph.parameter("\(name)/bias").name],
                       attributes: [.int("axis", -1), .float("epsilon", epsilon)])
        }

        /// Causal multi-head self-attention on [N, T, C].
        mutating func attention(_ x: String, _ name: String, heads: Int, bias: Bool, length: Int, width: Int) throws -> String {
            let qkv = try linear(x, "\(name)/qkv", bias: bias)
            let parts = graph.outputs("Split", [qkv, graph.constantInt("split", [3], [Int64(width), Int64(width), Int64(width)])], count: 3,
                                      attributes: [.int("axis", -1)])
            let headShape = graph.constantInt("heads", [4], [0, Int64(length), Int64(heads), Int64(width / heads)])
            var perHead: [String] = []
            for part in parts {
                perHead.append(graph.node("Transpose", [graph.node("Reshape", [part, headShape])], attributes: [.ints("perm", [0, 2, 1, 3])]))
            }
            let (q, k, v) = (perHead[0], perHead[1], perHead[2])
            let kT = graph.node("Transpose", [k], attributes: [.ints("perm", [0, 1, 3, 2])])
            var scores = graph.node("MatMul", [q, kT])
            scores = graph.node("Mul", [scores, graph.constant("scale", [], [1 / Float(width / heads).squareRoot()])])
            let mask = (0..<(length * length)).map { $0 % length > $0 / length ? -Float.infinity : 0 }
            scores = graph.node("Add", [scores, graph.constant("causal_mask", [length, length], mask)])
            let weights = graph.node("Softmax", [scores], attributes: [.int("axis", -1)])
            var y = graph.node("MatMul", [weights, v])
            y = graph.node("Transpose", [y], attributes: [.ints("perm", [0, 2, 1, 3])])
            y = graph.node("Reshape", [y, graph.constantInt("merge", [3], [0, Int64(length), Int64(width)])])
            return try linear(y, "\(name)/proj", bias: bias)
        }

        /// Stacked LSTM over [N, T, C], PyTorch's weights (gates i, f, g, o) as ONNX's (i, o, f, c).
        mutating func lstm(_ x: String, _ name: String, options: LSTMOptions, length: Int) throws -> String {
            var value = x
            let h = options.hidden
            for k in 0..<options.layers {
                // PyTorch's gate blocks i, f, g, o (rows of W, entries of b) in ONNX's order i, o, f, c.
                func reorder(_ values: [Float]) -> [Float] {
                    let per = values.count / 4
                    let (i, f, g, o) = (values[0..<per], values[per..<(2 * per)], values[(2 * per)..<(3 * per)], values[(3 * per)...])
                    return Array(i) + Array(o) + Array(f) + Array(g)
                }
                let wi = try graph.tensor("\(name)/weight_ih_l\(k)"), wh = try graph.tensor("\(name)/weight_hh_l\(k)")
                let bi = try graph.tensor("\(name)/bias_ih_l\(k)"), bh = try graph.tensor("\(name)/bias_hh_l\(k)")
                let w = graph.constant("\(name).W_l\(k)", [1] + wi.shape, reorder(wi.values))
                let r = graph.constant("\(name).R_l\(k)", [1] + wh.shape, reorder(wh.values))
                let b = graph.constant("\(name).B_l\(k)", [1, 8 * h], reorder(bi.values) + reorder(bh.values))
                // Sequence-major (layout 0, what onnxruntime runs): X [T, N, C], Y [T, 1, N, H].
                let timeMajor = graph.node("Transpose", [value], attributes: [.ints("perm", [1, 0, 2])])
                let y = graph.node("LSTM", [timeMajor, w, r, b], attributes: [.int("hidden_size", h)])
                let squeezed = graph.node("Squeeze", [y, graph.constantInt("axis", [1], [1])])
                value = graph.node("Transpose", [squeezed], attributes: [.ints("perm", [1, 0, 2])])
            }
            if !options.returnSequences {
                value = graph.node("Gather", [value, graph.constantInt("last", [], [Int64(length - 1)])], attributes: [.int("axis", 1)])
            }
            return value
        }

        mutating func stack(_ specs: [LayerSpec], _ x: String, _ shape: [Int], prefix: String) throws -> (String, [Int]) {
            var (value, shape) = (x, shape)
            for spec in specs {
                let name = layerName(spec, prefix: prefix)
                switch spec.options {
                case is FlattenOptions:
                    value = graph.node("Flatten", [value], attributes: [.int("axis", 1)])
                    shape = [shape.reduce(1, *)]
                case let dense as DenseOptions:
                    if shape.count == 3 {  // an image read as its flattened row
                        value = graph.node("Flatten", [value], attributes: [.int("axis", 1)])
                        shape = [shape.reduce(1, *)]
                    }
                    value = try linear(value, name, bias: dense.bias)
                    shape = shape.dropLast() + [dense.units]
                    if let kind = dense.activation { value = self.activation(kind, value) }
                case let conv as Conv2DOptions:
                    (value, shape) = try self.conv(value, name, filters: conv.filters, kernel: conv.kernel, stride: conv.stride,
                                                   padding: conv.padding, bias: conv.bias, shape: shape)
                    if let kind = conv.activation { value = self.activation(kind, value) }
                case let pool as MaxPoolOptions:
                    value = graph.node("MaxPool", [value], attributes: [.ints("kernel_shape", [pool.size, pool.size]), .ints("strides", [pool.stride, pool.stride])])
                    shape = [shape[0], (shape[1] - pool.size) / pool.stride + 1, (shape[2] - pool.size) / pool.stride + 1]
                case let pool as AveragePoolOptions:
                    value = graph.node("AveragePool", [value], attributes: [.ints("kernel_shape", [pool.size, pool.size]), .ints("strides", [pool.stride, pool.stride])])
                    shape = [shape[0], (shape[1] - pool.size) / pool.stride + 1, (shape[2] - pool.size) / pool.stride + 1]
                case is GlobalAveragePoolOptions:
                    value = graph.node("Flatten", [graph.node("GlobalAveragePool", [value])], attributes: [.int("axis", 1)])
                    shape = [shape[0]]
                case let norm as BatchNormOptions:
                    value = try batchNorm(value, name, epsilon: norm.epsilon)
                case is DropoutOptions:
                    break
                case let activation as ActivationOptions:
                    value = self.activation(activation.kind, value)
                case let residual as ResidualOptions:
                    let (main, out) = try stack(residual.layers, value, shape, prefix: "\(name)/")
                    var shortcut = value
                    if residual.projection ?? (out != shape) {
                        let stride = max(1, (shape[1] + out[1] - 1) / out[1])
                        (shortcut, _) = try conv(value, "\(name)/projection", filters: out[0], kernel: 1, stride: stride, padding: .same,
                                                 bias: false, shape: shape)
                        shortcut = try batchNorm(shortcut, "\(name)/projection_bn", epsilon: 1e-5)
                    }
                    value = graph.node("Add", [main, shortcut])
                    if let activation = residual.activation { value = self.activation(activation, value) }
                    shape = out
                case let norm as LayerNormOptions:
                    value = try layerNorm(value, name, epsilon: norm.epsilon)
                case let options as EmbeddingOptions:
                    let table = try graph.parameter("\(name)/weight")
                    embedding = (table.name, table.shape[0])
                    value = graph.node("Gather", [table.name, value], attributes: [.int("axis", 0)])
                    shape = shape + [options.dimension]
                case is PositionalEmbeddingOptions:
                    let table = try graph.tensor("\(name)/weight")
                    let used = graph.constant("\(name).weight", [shape[0], shape[1]], Array(table.values.prefix(shape[0] * shape[1])))
                    value = graph.node("Add", [value, used])
                case let options as AttentionOptions:
                    value = try attention(value, name, heads: options.heads, bias: options.bias, length: shape[0], width: shape[1])
                case let options as TransformerBlockOptions:
                    let attended = try attention(try layerNorm(value, "\(name)/ln_1", epsilon: 1e-5), "\(name)/attention",
                                                 heads: options.heads, bias: options.bias, length: shape[0], width: shape[1])
                    value = graph.node("Add", [value, attended])
                    var mlp = try linear(try layerNorm(value, "\(name)/ln_2", epsilon: 1e-5), "\(name)/fc", bias: options.bias)
                    mlp = try linear(activation(.gelu, mlp), "\(name)/proj", bias: options.bias)
                    value = graph.node("Add", [value, mlp])
                case let head as LanguageModelHeadOptions:
                    if head.tied {
                        guard let embedding else { throw CohortError("\(name): a tied head needs the embedding before it") }
                        value = graph.node("MatMul", [value, graph.node("Transpose", [embedding.name], attributes: [.ints("perm", [1, 0])])])
                        shape = shape.dropLast() + [embedding.vocabulary]
                    } else {
                        value = try linear(value, name, bias: false)
                        shape = shape.dropLast() + [head.units ?? 0]
                    }
                case let options as LSTMOptions:
                    value = try lstm(value, name, options: options, length: shape[0])
                    shape = (options.returnSequences ? [shape[0]] : []) + [options.hidden]
                default:
                    throw CohortError("\(spec.type): no ONNX form yet")
                }
            }
            return (value, shape)
        }
    }
}
