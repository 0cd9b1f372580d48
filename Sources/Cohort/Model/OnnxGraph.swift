/// An ONNX graph under construction (opset 17): nodes, float32/int64 initializers, and the
/// helpers layer families build their ONNX forms from (`LayerOptions.onnx`). The model's tensors
/// come from `tensor`, by Cohort name (`dense_1/weight`); `Checkpoint/OnnxExport.swift` adds the
/// input, its normalization and the encoding around it.
public struct OnnxGraph {
    public enum Attribute {
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

    /// A model tensor (parameter or buffer) by its Cohort name, or nil.
    let tensorNamed: (String) -> (shape: [Int], values: [Float])?
    var nodes: [Protobuf] = []
    var initializers: [Protobuf] = []
    private var names = Set<String>()
    private var counter = 0
    /// Per-type counters for layer names, as `LayerBuilder.uniqueName` numbers them.
    var counts: [String: Int] = [:]
    /// The last embedding's table and vocabulary (a tied head multiplies by it).
    var embedding: (name: String, vocabulary: Int)?
    /// From `bert_embeddings`: an additive key mask [N, 1, 1, T] (0 for real positions, −1e9 for
    /// padding), the real positions as weights [N, T, 1], and the lengths [N, 1] as floats.
    var sequenceMask: (keys: String, weights: String, lengths: String)?

    /// The sequence mask of ids [N, T] padded at the end with `padID` (see `SequenceLengths`).
    mutating func sequenceMask(ids: String, padID: Int, length T: Int) {
        let real = node("Cast", [node("Not", [node("Equal", [ids, constantInt("pad_id", [], [Int64(padID)])])])], attributes: [.int("to", 7)])
        let marked = node("Mul", [real, constantInt("positions_from_1", [T], (1...T).map(Int64.init))])
        let last = node("ReduceMax", [marked], attributes: [.ints("axes", [1]), .int("keepdims", 1)])
        let lengths = node("Max", [last, constantInt("one_int", [], [1])])
        let valid = node("Cast", [node("Less", [constantInt("positions_from_0", [T], (0..<T).map(Int64.init)), lengths])],
                         attributes: [.int("to", 1)])
        let additive = node("Mul", [node("Sub", [valid, constant("one", [], [1])]), constant("masked", [], [1e9])])
        sequenceMask = (node("Reshape", [additive, constantInt("key_mask_shape", [4], [0, 1, 1, Int64(T)])]),
                        node("Reshape", [valid, constantInt("weight_shape", [3], [0, Int64(T), 1])]),
                        node("Cast", [lengths], attributes: [.int("to", 1)]))
    }

    public init(tensor: @escaping (String) -> (shape: [Int], values: [Float])?) { tensorNamed = tensor }

    mutating func fresh(_ hint: String) -> String {
        counter += 1
        return "\(hint)_\(counter)"
    }

    /// Adds a node; returns its first output's name.
    @discardableResult
    public mutating func node(_ op: String, _ inputs: [String], outputs count: Int = 1, attributes: [Attribute] = []) -> String {
        outputs(op, inputs, count: count, attributes: attributes)[0]
    }

    public mutating func outputs(_ op: String, _ inputs: [String], count: Int, attributes: [Attribute] = []) -> [String] {
        let outputs = (0..<count).map { _ in fresh(op.lowercased()) }
        var p = Protobuf()
        for input in inputs { p.string(1, input) }
        for output in outputs { p.string(2, output) }
        p.string(3, outputs[0])
        p.string(4, op)
        for attribute in attributes { p.message(5, attribute.proto) }
        nodes.append(p)
        return outputs
    }

    /// A float32 initializer.
    public mutating func constant(_ name: String, _ shape: [Int], _ values: [Float]) -> String {
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
    public mutating func constantInt(_ name: String, _ shape: [Int], _ values: [Int64]) -> String {
        let unique = fresh(name)
        var t = Protobuf()
        for d in shape { t.int(1, Int64(d)) }
        t.int(2, 7)
        t.string(8, unique)
        t.data(9, values.withUnsafeBytes { Array($0) })
        initializers.append(t)
        return unique
    }

    public func tensor(_ name: String) throws -> (shape: [Int], values: [Float]) {
        guard let tensor = tensorNamed(name) else { throw CohortError("the checkpoint has no tensor \(name) for its own config's model") }
        return tensor
    }

    /// A model tensor as an initializer, values and shape as stored.
    public mutating func parameter(_ name: String) throws -> (name: String, shape: [Int], values: [Float]) {
        let tensor = try self.tensor(name)
        return (constant(name.replacingOccurrences(of: "/", with: "."), tensor.shape, tensor.values), tensor.shape, tensor.values)
    }

    // MARK: Shared pieces of the families' forms

    /// The layers of `specs` in order over `x` of per-sample `shape`, named as the model names them.
    public mutating func stack(_ specs: [LayerSpec], _ x: String, _ shape: [Int], prefix: String) throws -> (String, [Int]) {
        var (value, shape) = (x, shape)
        for spec in specs {
            let name: String
            if let given = spec.name {
                name = prefix + given
            } else {
                counts[spec.type, default: 0] += 1
                name = "\(prefix)\(spec.type)_\(counts[spec.type]!)"
            }
            (value, shape) = try spec.options.onnx(&self, value, shape, name: name)
        }
        return (value, shape)
    }

    public mutating func activation(_ kind: ActivationKind, _ x: String) -> String {
        switch kind {
        case .relu: return node("Relu", [x])
        case .sigmoid: return node("Sigmoid", [x])
        case .tanh: return node("Tanh", [x])
        case .leakyRelu(let slope): return node("LeakyRelu", [x], attributes: [.float("alpha", slope)])
        case .gelu:
            // x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (Gelu is opset 20).
            let erf = node("Erf", [node("Div", [x, constant("sqrt2", [], [Float(2).squareRoot()])])])
            let one = node("Add", [erf, constant("one", [], [1])])
            return node("Mul", [node("Mul", [x, one]), constant("half", [], [0.5])])
        case .geluTanh:
            // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))).
            let cube = node("Mul", [node("Mul", [x, x]), x])
            let inner = node("Add", [x, node("Mul", [cube, constant("gelu_c", [], [0.044715])])])
            let t = node("Tanh", [node("Mul", [inner, constant("sqrt_2_over_pi", [], [Float((2 / Double.pi).squareRoot())])])])
            let one = node("Add", [t, constant("one", [], [1])])
            return node("Mul", [node("Mul", [x, one]), constant("half", [], [0.5])])
        }
    }

    /// x · W + b over the last axis (W stored [in, out]).
    public mutating func linear(_ x: String, _ name: String, bias: Bool) throws -> String {
        var y = node("MatMul", [x, try parameter("\(name)/weight").name])
        if bias { y = node("Add", [y, try parameter("\(name)/bias").name]) }
        return y
    }

    public mutating func batchNorm(_ x: String, _ name: String, epsilon: Float) throws -> String {
        let inputs = try ["gamma", "beta", "running_mean", "running_var"].map { try parameter("\(name)/\($0)").name }
        return node("BatchNormalization", [x] + inputs, attributes: [.float("epsilon", epsilon)])
    }

    /// A convolution, TensorFlow's `same` padding made explicit (the extra row and column last).
    public mutating func conv(_ x: String, _ name: String, filters: Int, kernel: Int, stride: Int, padding: Padding, bias: Bool,
                              shape: [Int]) throws -> (String, [Int]) {
        let (h, w) = (shape[1], shape[2])
        var pads = [0, 0, 0, 0]
        var (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1)
        if padding == .same {
            (oh, ow) = ((h + stride - 1) / stride, (w + stride - 1) / stride)
            let th = max((oh - 1) * stride + kernel - h, 0), tw = max((ow - 1) * stride + kernel - w, 0)
            pads = [th / 2, tw / 2, th - th / 2, tw - tw / 2]
        }
        var inputs = [x, try parameter("\(name)/weight").name]
        if bias { inputs.append(try parameter("\(name)/bias").name) }
        let y = node("Conv", inputs, attributes: [.ints("kernel_shape", [kernel, kernel]), .ints("strides", [stride, stride]), .ints("pads", pads)])
        return (y, [filters, oh, ow])
    }

    public mutating func pool(_ op: String, _ x: String, size: Int, stride: Int, shape: [Int]) -> (String, [Int]) {
        (node(op, [x], attributes: [.ints("kernel_shape", [size, size]), .ints("strides", [stride, stride])]),
         [shape[0], (shape[1] - size) / stride + 1, (shape[2] - size) / stride + 1])
    }

    public mutating func flatten(_ x: String, _ shape: [Int]) -> (String, [Int]) {
        (node("Flatten", [x], attributes: [.int("axis", 1)]), [shape.reduce(1, *)])
    }

    public mutating func layerNorm(_ x: String, _ name: String, epsilon: Float) throws -> String {
        node("LayerNormalization", [x, try parameter("\(name)/weight").name, try parameter("\(name)/bias").name],
             attributes: [.int("axis", -1), .float("epsilon", epsilon)])
    }

    /// Causal multi-head self-attention on [N, T, C] (batched MatMuls, mask, Softmax).
    public mutating func attention(_ x: String, _ name: String, heads: Int, bias: Bool, length: Int, width: Int, causal: Bool) throws -> String {
        let qkv = try linear(x, "\(name)/qkv", bias: bias)
        let parts = outputs("Split", [qkv, constantInt("split", [3], [Int64(width), Int64(width), Int64(width)])], count: 3,
                            attributes: [.int("axis", -1)])
        let headShape = constantInt("heads", [4], [0, Int64(length), Int64(heads), Int64(width / heads)])
        var perHead: [String] = []
        for part in parts {
            perHead.append(node("Transpose", [node("Reshape", [part, headShape])], attributes: [.ints("perm", [0, 2, 1, 3])]))
        }
        let kT = node("Transpose", [perHead[1]], attributes: [.ints("perm", [0, 1, 3, 2])])
        var scores = node("Mul", [node("MatMul", [perHead[0], kT]), constant("scale", [], [1 / Float(width / heads).squareRoot()])])
        if causal {
            let mask = (0..<(length * length)).map { $0 % length > $0 / length ? -Float.infinity : 0 }
            scores = node("Add", [scores, constant("causal_mask", [length, length], mask)])
        }
        if !causal, let sequenceMask { scores = node("Add", [scores, sequenceMask.keys]) }
        var y = node("MatMul", [node("Softmax", [scores], attributes: [.int("axis", -1)]), perHead[2]])
        y = node("Transpose", [y], attributes: [.ints("perm", [0, 2, 1, 3])])
        y = node("Reshape", [y, constantInt("merge", [3], [0, Int64(length), Int64(width)])])
        return try linear(y, "\(name)/proj", bias: bias)
    }
}

extension LayerOptions {
    /// Default: the family has no ONNX form, and export says so in one line.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        throw CohortError("\(name): layers of type \(typeName) have no ONNX form")
    }
}
