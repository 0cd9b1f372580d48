import Foundation

/// `cohort export --format onnx`: an inference graph (opset 17) of a checkpoint's model with
/// its input normalization, a dynamic batch dimension, dropout left out and batch norm on its
/// running statistics. The input is what a data file holds, as float32: images [N, H, W, C]
/// (NHWC, pixel values as stored: the graph scales, standardizes and transposes to NCHW),
/// vectors [N, D], sequences [N, T, D]; a language model takes int64 token ids [N, T]. The
/// output is the model's last layer: logits (or the regression outputs), as Cohort's own. Each
/// layer family writes its own form (`LayerOptions.onnx`, beside its forward and backward).
public enum OnnxExport {
    /// The ONNX model bytes for `checkpoint`, whose model reads samples of `inputShape`.
    public static func model(of checkpoint: Checkpoint, inputShape: [Int]) throws -> [UInt8] {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        var graph = OnnxGraph { name in checkpoint.tensors[CheckpointSchema.parameter(name)] ?? checkpoint.tensors[CheckpointSchema.buffer(name)] }
        // A model that reads token ids takes them as int64, whatever file layout they came in.
        let readsTokens = config.layers.first.map { $0.options is EmbeddingOptions || $0.options is BertEmbeddingsOptions } ?? false
        let layout = readsTokens ? "T" : checkpoint.inputLayout ?? (inputShape.count == 3 ? "CHW" : inputShape.count == 1 ? "D" : "T")
        let input: (name: String, type: Int, dims: [String])
        var value: String
        switch layout {
        case "T":
            input = ("tokens", 7, ["N"] + inputShape.map { "\($0)" })
            value = input.name
        case "CHW":
            let (c, h, w) = (inputShape[0], inputShape[1], inputShape[2])
            input = ("input", 1, ["N", "\(h)", "\(w)", "\(c)"])
            value = normalize(&graph, input.name, channels: c, checkpoint: checkpoint)
            value = graph.node("Transpose", [value], attributes: [.ints("perm", [0, 3, 1, 2])])
        default:  // D or TD: features last, as in the file
            input = ("input", 1, ["N"] + inputShape.map { "\($0)" })
            value = normalize(&graph, input.name, channels: inputShape.last!, checkpoint: checkpoint)
        }
        let (output, shape) = try graph.stack(config.layers, value, inputShape, prefix: "")
        return encode(graph, input: input, output: (output, ["N"] + shape.map { "\($0)" }), producer: "cohort")
    }

    /// input · scale, then (x − mean) / std per channel (the last axis) when the model standardizes.
    static func normalize(_ graph: inout OnnxGraph, _ input: String, channels: Int, checkpoint: Checkpoint) -> String {
        var value = input
        if let scale = checkpoint.inputScale, scale != 1 {
            value = graph.node("Mul", [value, graph.constant("input_scale", [], [Float(scale)])])
        }
        if let (mean, std) = checkpoint.normalization {
            let expand = { (values: [Double]) in values.count == channels ? values.map(Float.init) : [Float](repeating: Float(values[0]), count: channels) }
            value = graph.node("Sub", [value, graph.constant("input_mean", [channels], expand(mean))])
            value = graph.node("Div", [value, graph.constant("input_std", [channels], expand(std))])
        }
        return value
    }

    static func valueInfo(_ name: String, type: Int, dims: [String]) -> Protobuf {
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

    /// ModelProto: IR version 8, opset 17, the graph with its input and output.
    static func encode(_ graph: OnnxGraph, input: (name: String, type: Int, dims: [String]), output: (name: String, dims: [String]),
                       producer: String) -> [UInt8] {
        var proto = Protobuf()
        for node in graph.nodes { proto.message(1, node) }
        proto.string(2, "cohort")
        for initializer in graph.initializers { proto.message(5, initializer) }
        proto.message(11, valueInfo(input.name, type: input.type, dims: input.dims))
        proto.message(12, valueInfo(output.name, type: 1, dims: output.dims))
        var opset = Protobuf()
        opset.string(1, "")
        opset.int(2, 17)
        var model = Protobuf()
        model.int(1, 8)
        model.string(2, producer)
        model.message(7, proto)
        model.message(8, opset)
        return model.bytes
    }
}
