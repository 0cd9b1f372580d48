import Foundation

/// A published model's tensors (DIR/model.safetensors) taken one by one into Cohort's checkpoint
/// names: each must be there with the shape config.json implies, and none may be left over.
struct WeightMapping {
    let weightsPath: String
    let configPath: String
    private var tensors: [String: SafetensorsFile.Tensor]
    /// Another name the file may use for a tensor (older BERT checkpoints' gamma and beta).
    var alias: (String) -> String = { $0 }
    /// The checkpoint's tensors, by their names there.
    private(set) var mapped: [String: (shape: [Int], values: [Float])] = [:]

    /// `droppingPrefix`: a head model's prefix of the base model's names (`transformer.`, `bert.`).
    init(directory: String, droppingPrefix prefix: String) throws {
        let read = try HuggingFace.weights(in: directory, droppingPrefix: prefix)
        (weightsPath, configPath, tensors) = (read.path, "\(directory)/config.json", read.tensors)
    }

    /// The values of `source`, which must have `shape`; taken out of the file's tensors.
    mutating func tensor(_ source: String, shape: [Int]) throws -> [Float] {
        guard let found = tensors.removeValue(forKey: source) ?? tensors.removeValue(forKey: alias(source)) else {
            throw CohortError("\(weightsPath): no tensor '\(source)', which \(configPath) implies")
        }
        guard found.shape == shape else {
            throw CohortError("\(weightsPath): '\(source)' has shape \(found.shape), \(configPath) implies \(shape)")
        }
        return found.values
    }

    mutating func take(_ source: String, as target: String, shape: [Int]) throws {
        put(target, shape, try tensor(source, shape: shape))
    }

    /// A torch Linear's [out, in] weight as Cohort's [in, out], and its bias.
    mutating func takeLinear(_ source: String, as target: String, inputs: Int, outputs: Int) throws {
        let values = try tensor("\(source).weight", shape: [outputs, inputs])
        put("\(target)/weight", [inputs, outputs], HuggingFace.transposed(values, rows: outputs, columns: inputs))
        try take("\(source).bias", as: "\(target)/bias", shape: [outputs])
    }

    /// The parameter `target` of the checkpoint.
    mutating func put(_ target: String, _ shape: [Int], _ values: [Float]) {
        mapped[CheckpointSchema.parameter(target)] = (shape, values)
    }

    /// A tensor kept in the checkpoint under the published model's own name (`huggingface/…`), for the export.
    mutating func carry(_ name: String, _ tensor: SafetensorsFile.Tensor) {
        mapped[CheckpointSchema.huggingFacePrefix + name] = (tensor.shape, tensor.values)
    }

    func has(_ name: String) -> Bool { tensors[name] != nil }

    /// Takes `name` out of the file's tensors, if it is there (a tensor with no parameter of its own).
    mutating func remove(_ name: String) -> SafetensorsFile.Tensor? { tensors.removeValue(forKey: name) }

    /// Refuses a tensor nothing took.
    func refuseLeftovers(family: String) throws {
        if let stray = tensors.keys.sorted().first {
            throw CohortError("\(weightsPath): tensor '\(stray)' has no place in a \(family) model of \(configPath)")
        }
    }

    var parameterCount: Int { mapped.filter { $0.key.hasPrefix(CheckpointSchema.parametersPrefix) }.values.reduce(0) { $0 + $1.values.count } }
}
