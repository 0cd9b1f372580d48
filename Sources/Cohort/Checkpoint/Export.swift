import Foundation

/// `cohort export --format safetensors`: a checkpoint's parameters and batch-norm buffers under
/// PyTorch `state_dict` names and layouts, in Hugging Face's safetensors format: an 8-byte
/// little-endian header length, a JSON header (`{"name": {"dtype", "shape", "data_offsets"}}` and
/// `__metadata__` strings), then the raw little-endian tensors. Names are Cohort's with `/` as
/// `.` (`residual_1.conv2d_2.weight`); dense weights are transposed to [out, in]; batch norm's
/// gamma and beta become `weight` and `bias`, with `running_mean`, `running_var` and an int64
/// `num_batches_tracked` (the checkpoint's optimizer steps). The metadata carries what a
/// loader needs to rebuild the model: the config, input shape and layout, normalization, class
/// names and loss (`Examples/pytorch/cohort_torch.py` builds the PyTorch module from them).
public enum SafetensorsExport {
    public struct Tensor {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: Data
    }

    /// The tensors and metadata of `checkpoint`, whose model (built from its config for samples
    /// of `inputShape`) says which weights are stored transposed.
    public static func tensors(of checkpoint: Checkpoint, inputShape: [Int]) throws -> (tensors: [Tensor], metadata: [String: String]) {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        let model = try Model(inputShape: inputShape, layers: config.layers, maxBatch: 1, seed: 0)
        let transposed = Set(model.stack.allLayers.flatMap(\.transposedForTorch))
        let normalizations = Set(model.parameters.bufferEntries.map { String($0.name.split(separator: "/").dropLast().joined(separator: "/")) })
        var tensors: [Tensor] = []
        for entry in model.parameters.entries + model.parameters.bufferEntries {
            let group = model.parameters.entries.contains(entry) ? "parameters" : "buffers"
            guard let stored = checkpoint.tensors["\(group)/\(entry.name)"], stored.shape == entry.shape else {
                throw CohortError("the checkpoint has no \(group)/\(entry.name) \(entry.shape) for its own config's model")
            }
            var (shape, values) = (stored.shape, stored.values)
            if transposed.contains(entry.name), shape.count == 2 {
                let (rows, columns) = (shape[0], shape[1])
                values = (0..<(rows * columns)).map { index in stored.values[(index % rows) * columns + index / rows] }
                shape = [columns, rows]
            }
            var path = entry.name.split(separator: "/").map(String.init)
            if let layer = path.dropLast().joined(separator: "/") as String?, normalizations.contains(layer) {
                path[path.count - 1] = ["gamma": "weight", "beta": "bias"][path.last!] ?? path.last!
            }
            tensors.append(Tensor(name: path.joined(separator: "."), dtype: "F32", shape: shape,
                                  bytes: values.withUnsafeBufferPointer { Data(buffer: $0) }))
        }
        for layer in normalizations.sorted() {
            let count = Int64(checkpoint.optimizerSteps).littleEndian
            tensors.append(Tensor(name: layer.replacingOccurrences(of: "/", with: ".") + ".num_batches_tracked", dtype: "I64", shape: [],
                                  bytes: withUnsafeBytes(of: count) { Data($0) }))
        }
        func json(_ value: Any) -> String {
            String(decoding: (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data("null".utf8), as: UTF8.self)
        }
        var metadata = ["format": "cohort", "config": checkpoint.config, "input_shape": json(inputShape),
                        "global_step": "\(checkpoint.position.globalStep)"]
        metadata["input_layout"] = checkpoint.inputLayout
        metadata["input_scale"] = checkpoint.inputScale.map { "\($0)" }
        metadata["loss"] = checkpoint.loss ?? config.loss.name
        metadata["class_names"] = checkpoint.classNames.map(json)
        metadata["tokenizer"] = checkpoint.tokenizer
        if let normalization = checkpoint.normalization {
            metadata["normalization_mean"] = json(normalization.mean)
            metadata["normalization_std"] = json(normalization.std)
        }
        return (tensors.sorted { $0.name < $1.name }, metadata)
    }

    /// The safetensors bytes of `tensors` and `metadata`.
    public static func encode(_ tensors: [Tensor], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for tensor in tensors {
            header[tensor.name] = ["dtype": tensor.dtype, "shape": tensor.shape, "data_offsets": [offset, offset + tensor.bytes.count]]
            offset += tensor.bytes.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Padded with spaces so that the data starts 8-byte aligned, as the reference writer does.
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var file = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) }
        file.append(json)
        for tensor in tensors { file.append(tensor.bytes) }
        return file
    }
}
