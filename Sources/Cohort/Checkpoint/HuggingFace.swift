import Foundation

/// Hugging Face model directories (`config.json` and `model.safetensors`, as
/// `save_pretrained` writes them) to Cohort checkpoints and back: `cohort import huggingface`
/// and `cohort export --format huggingface`.
///
/// The GPT-2 family (`GPT2Model`, `GPT2LMHeadModel`) maps onto Cohort's own layers:
///
///     wte [V, C]                 embedding_1/weight
///     wpe [P, C]                 positional_embedding_1/weight
///     h.i.ln_1, h.i.ln_2         transformer_block_{i+1}/ln_1, ln_2 (weight, bias)
///     h.i.attn.c_attn [C, 3C]    transformer_block_{i+1}/attention/qkv (q | k | v, heads of D)
///     h.i.attn.c_proj [C, C]     transformer_block_{i+1}/attention/proj
///     h.i.mlp.c_fc [C, 4C]       transformer_block_{i+1}/fc
///     h.i.mlp.c_proj [4C, C]     transformer_block_{i+1}/proj
///     ln_f                       layer_norm_1
///     lm_head [V, C]             tied to wte (`lm_head`), or an untied head [C, V]
///
/// GPT-2's `Conv1D` stores weights [in, out] as Cohort's dense layers do: nothing is
/// transposed but an untied head. Its blocks use `gelu_new` (`activation: gelu_tanh`). Every
/// tensor is mapped or refused by name; every `config.json` key is used, checked to hold the
/// one value Cohort implements, or known to leave the computation alone, and any other key is
/// refused by name.
///
/// The BERT family (`BertModel`) maps onto `bert_embeddings` and `encoder_block`s (then
/// `sequence_pool` mean when the directory is a sentence-transformers model whose
/// `1_Pooling/config.json` asks for mean pooling):
///
///     embeddings.word/position/token_type_embeddings   bert_embeddings_1/word, position, token_type
///     embeddings.LayerNorm                             bert_embeddings_1/ln
///     encoder.layer.i.attention.self.query/key/value   encoder_block_{i+1}/attention/qkv (transposed, q | k | v)
///     encoder.layer.i.attention.output.dense           encoder_block_{i+1}/attention/proj (transposed)
///     encoder.layer.i.attention.output.LayerNorm       encoder_block_{i+1}/ln_1
///     encoder.layer.i.intermediate.dense               encoder_block_{i+1}/fc (transposed)
///     encoder.layer.i.output.dense                     encoder_block_{i+1}/proj (transposed)
///     encoder.layer.i.output.LayerNorm                 encoder_block_{i+1}/ln_2
///     pooler.dense                                     kept as huggingface/pooler.dense.* for export
///     embeddings.position_ids                          checked to be 0, 1, …, then left out
public enum HuggingFace {
    /// What an import gives: the checkpoint (model config, parameters, no optimizer state) and
    /// the lines that say what became of the directory's files.
    public struct Imported {
        public var checkpoint: Checkpoint
        public var notes: [String]
    }

    /// Reads `directory` (config.json, model.safetensors) as a Cohort checkpoint.
    /// Without `readingWeights`, only config.json is read: the checkpoint has the model's config
    /// and no tensors (a training config's layers).
    public static func importModel(from directory: String, readingWeights: Bool = true) throws -> Imported {
        let configPath = "\(directory)/config.json"
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw CohortError("\(configPath): no such file (a Hugging Face model directory holds config.json and model.safetensors)")
        }
        guard let config = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CohortError("\(configPath): not a JSON object")
        }
        let modelType = config["model_type"] as? String ?? "(none)"
        switch modelType {
        case "gpt2": return try importGPT2(config, directory: directory, readingWeights: readingWeights)
        case "bert": return try importBERT(config, directory: directory, readingWeights: readingWeights)
        default:
            throw CohortError("\(configPath): model_type '\(modelType)' is not a family Cohort imports (gpt2, bert)")
        }
    }

    /// The files of a Hugging Face directory for a checkpoint's model: GPT-2-shaped models as
    /// `GPT2LMHeadModel`, BERT-family ones as `BertModel` or `BertForSequenceClassification` (see `exportBERT`).
    public static func export(_ checkpoint: Checkpoint) throws -> [(name: String, bytes: Data)] {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        if config.layers.first?.options is BertEmbeddingsOptions { return try exportBERT(checkpoint, layers: config.layers) }
        let (json, weights) = try exportGPT2(checkpoint)
        return [("config.json", json), ("model.safetensors", weights)]
    }

    /// A checkpoint of `layers` with no tensors yet and no step taken: its config names the
    /// directory, a placeholder for the data and AdamW 5e-5, for a user to complete.
    static func importedCheckpoint(_ directory: String, layers: [LayerSpec], window: Int, data: String) -> Checkpoint {
        let train = TrainConfig(name: URL(fileURLWithPath: directory).lastPathComponent, data: DataConfig(train: data, window: window),
                                layers: layers, optimizer: OptimizerConfig(kind: .adamw, learningRate: 5e-5))
        var checkpoint = Checkpoint(position: Checkpoint.Position(epoch: 0, stepInEpoch: 0, globalStep: 0, samplesSeen: 0),
                                    worldSize: 1, batchSize: 1, optimizerSteps: 0, config: train.text)
        (checkpoint.inputShape, checkpoint.inputLayout, checkpoint.inputScale) = ([window], "T", 1)
        checkpoint.loss = Loss.softmaxCrossEntropy(smoothing: 0).name
        return checkpoint
    }

    /// DIR/model.safetensors' tensors, with a head model's prefix (`transformer.`, `bert.`) taken off.
    static func weights(in directory: String, droppingPrefix prefix: String) throws -> (path: String, tensors: [String: SafetensorsFile.Tensor]) {
        let path = "\(directory)/model.safetensors"
        guard FileManager.default.fileExists(atPath: path) else {
            throw CohortError("\(path): no such file (only safetensors weights are read, not pytorch_model.bin)")
        }
        var (tensors, _) = try SafetensorsFile.read(path)
        for name in Array(tensors.keys) where name.hasPrefix(prefix) {
            tensors[String(name.dropFirst(prefix.count))] = tensors.removeValue(forKey: name)
        }
        return (path, tensors)
    }

    static func transposed(_ values: [Float], rows: Int, columns: Int) -> [Float] {
        (0..<(rows * columns)).map { index in values[(index % rows) * columns + index / rows] }
    }
}

extension TrainConfig {
    /// A config whose `model.init_from: {huggingface: DIR}` leaves `model.layers` out, with the
    /// published model's layers from DIR/config.json followed by `model.add_layers`, and its
    /// text listing them (checkpoints store it, so that they stand without DIR). Any other
    /// config as it is.
    public func resolvingPublishedModel() throws -> TrainConfig {
        guard layers.isEmpty, let from = fineTuning.initFrom, from.huggingface else { return self }
        let imported = try HuggingFace.importModel(from: from.checkpoint, readingWeights: false)
        var resolved = self
        resolved.layers = try TrainConfig.parse(text: imported.checkpoint.config, file: "\(from.checkpoint)/config.json").layers + addedLayers
        resolved.addedLayers = []
        resolved.text = resolved.yaml
        return resolved
    }
}

/// A `config.json`'s values, read with errors that name the file and the key.
struct ConfigJSON {
    let values: [String: Any]
    let path: String

    func int(_ key: String, default value: Int? = nil) throws -> Int {
        if let number = values[key] as? Int { return number }
        if values[key] == nil || values[key] is NSNull, let value { return value }
        throw CohortError("\(path): \(key) must be a whole number, got \(values[key].map { "\($0)" } ?? "nothing")")
    }

    func double(_ key: String, default value: Double) throws -> Double {
        if let number = values[key] as? Double { return number }
        if values[key] == nil { return value }
        throw CohortError("\(path): \(key) must be a number")
    }

    /// The key holds the one value Cohort implements (or is absent and defaults to it).
    func require<T: Equatable>(_ key: String, _ expected: T, default value: T) throws {
        let actual = values[key] as? T ?? value
        guard actual == expected else { throw CohortError("\(path): \(key) \(actual) is not implemented by Cohort (only \(expected))") }
    }

    /// Every key is used or known to leave the computation alone.
    func refuseUnknown(used: Set<String>, inert: Set<String>, family: String) throws {
        if let unknown = values.keys.sorted().first(where: { !used.contains($0) && !inert.contains($0) }) {
            throw CohortError("\(path): \(unknown) is a setting Cohort does not implement for \(family)")
        }
    }
}
