import Foundation

/// The BERT family (`BertModel`, `BertForSequenceClassification`): import and export (see `HuggingFace`).
extension HuggingFace {
    /// Keys of a BERT `config.json` that do not change what the model computes.
    static let inertBERTKeys: Set<String> = [
        "architectures", "model_type", "_name_or_path", "initializer_range", "gradient_checkpointing", "use_cache",
        "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "output_attentions",
        "output_hidden_states", "return_dict", "tokenizer_class", "classifier_dropout", "_attn_implementation_autoset",
        "tie_word_embeddings", "id2label", "label2id", "problem_type", "directionality", "pooler_fc_size",
        "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type",
    ]

    static func importBERT(_ config: [String: Any], directory: String, readingWeights: Bool) throws -> Imported {
        let bert = try BERTConfig(config, path: "\(directory)/config.json")
        // With a tokenizer, its [SEP] marks the second segment of a sentence pair (token type 1).
        let tokenizerText = try? String(contentsOfFile: "\(directory)/tokenizer.json", encoding: .utf8)
        let tokenizer = try tokenizerText.map { _ in try WordPiece(tokenizerJSON: "\(directory)/tokenizer.json") }
        let (specs, layerNotes) = try bertLayers(bert, separator: bert.types >= 2 ? tokenizer?.separator : nil, directory: directory)
        var notes = layerNotes
        var checkpoint = importedCheckpoint(directory, layers: specs, window: min(bert.positions, 128), data: "data/REPLACE-WITH-TEXT/train.h5")
        let summary = "bert: \(bert.layers) encoder blocks, \(bert.heads) heads, width \(bert.width), feed-forward \(bert.inner), "
            + "vocabulary \(bert.vocabulary), \(bert.positions) positions, \(bert.types) token types, \(bert.activation), epsilon \(bert.epsilon)"
        if let text = tokenizerText {
            checkpoint.tokenizerJSON = text
            notes.append("\(directory)/tokenizer.json: WordPiece, stored in the checkpoint")
        }
        guard readingWeights else { return Imported(checkpoint: checkpoint, notes: [summary] + notes) }
        let weights = try bertWeights(bert, directory: directory, notes: &notes)
        checkpoint.tensors = weights.mapped
        return Imported(checkpoint: checkpoint, notes: [summary + "; \(weights.parameterCount) parameters"] + notes)
    }

    /// The layers of a BERT model: bert_embeddings, the encoder blocks, then BertForSequenceClassification's
    /// head, or the pooling a sentence-transformers directory names (`1_Pooling/config.json`).
    private static func bertLayers(_ bert: BERTConfig, separator: Int?, directory: String) throws -> ([LayerSpec], [String]) {
        let dropout = Float(bert.dropout)
        var specs = [LayerSpec(BertEmbeddingsOptions(vocabulary: bert.vocabulary, dimension: bert.width, maxLength: bert.positions,
                                                     tokenTypes: bert.types, epsilon: bert.epsilon, padID: bert.pad, sepID: separator,
                                                     dropout: dropout))]
        specs += (0..<bert.layers).map { _ in
            LayerSpec(EncoderBlockOptions(heads: bert.heads, mlpRatio: bert.inner / bert.width, epsilon: bert.epsilon, dropout: dropout,
                                          activation: bert.kind))
        }
        if let labels = bert.labels {
            // BertForSequenceClassification: the [CLS] pooler (dense + tanh), dropout, and a linear classifier.
            specs += [LayerSpec(SequencePoolOptions(mode: .first)), .dense(bert.width, activation: .tanh, initializer: .normal),
                      LayerSpec(DropoutOptions(rate: Float(bert.classifierDropout))), .dense(labels, initializer: .normal)]
            return (specs, ["BertForSequenceClassification: pooler (sequence_pool first, dense \(bert.width) tanh), dropout \(bert.classifierDropout), classifier (dense \(labels))"])
        }
        // A sentence-transformers directory says how its sentence embeddings pool the tokens.
        let poolingPath = "\(directory)/1_Pooling/config.json"
        guard let data = FileManager.default.contents(atPath: poolingPath),
              let pooling = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return (specs, []) }
        if pooling["pooling_mode_mean_tokens"] as? Bool == true {
            return (specs + [LayerSpec(SequencePoolOptions(mode: .mean))], ["\(poolingPath): mean pooling (sequence_pool mean)"])
        } else if pooling["pooling_mode_cls_token"] as? Bool == true {
            return (specs + [LayerSpec(SequencePoolOptions(mode: .first))], ["\(poolingPath): the first token's vector (sequence_pool first)"])
        }
        throw CohortError("\(poolingPath): only mean or cls_token pooling is implemented by Cohort")
    }

    /// The weights of a BERT model under Cohort's names: q, k and v side by side in the fused
    /// projection, every Linear weight [in, out]; BertModel's unused pooler kept for the export.
    private static func bertWeights(_ bert: BERTConfig, directory: String, notes: inout [String]) throws -> WeightMapping {
        var weights = try WeightMapping(directory: directory, droppingPrefix: "bert.")
        // Older checkpoints name a layer norm's scale and shift gamma and beta.
        weights.alias = { $0.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma").replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta") }
        let (width, inner) = (bert.width, bert.inner)
        try weights.take("embeddings.word_embeddings.weight", as: "bert_embeddings_1/word/weight", shape: [bert.vocabulary, width])
        try weights.take("embeddings.position_embeddings.weight", as: "bert_embeddings_1/position/weight", shape: [bert.positions, width])
        try weights.take("embeddings.token_type_embeddings.weight", as: "bert_embeddings_1/token_type/weight", shape: [bert.types, width])
        try weights.take("embeddings.LayerNorm.weight", as: "bert_embeddings_1/ln/weight", shape: [width])
        try weights.take("embeddings.LayerNorm.bias", as: "bert_embeddings_1/ln/bias", shape: [width])
        if let ids = weights.remove("embeddings.position_ids") {
            guard ids.values.enumerated().allSatisfy({ Float($0.offset) == $0.element }) else {
                throw CohortError("\(weights.weightsPath): embeddings.position_ids is not 0, 1, 2, …; Cohort implements absolute positions only")
            }
            notes.append("embeddings.position_ids: the positions 0…\(ids.values.count - 1), implied")
        }
        for index in 0..<bert.layers {
            let (source, target) = ("encoder.layer.\(index)", "encoder_block_\(index + 1)")
            // q, k and v, each [out, in], side by side in Cohort's fused [in, 3·out] projection.
            var qkv = [Float](repeating: 0, count: width * 3 * width)
            var bias: [Float] = []
            for (part, name) in ["query", "key", "value"].enumerated() {
                let weight = try weights.tensor("\(source).attention.self.\(name).weight", shape: [width, width])
                for input in 0..<width {
                    for output in 0..<width { qkv[input * 3 * width + part * width + output] = weight[output * width + input] }
                }
                bias += try weights.tensor("\(source).attention.self.\(name).bias", shape: [width])
            }
            weights.put("\(target)/attention/qkv/weight", [width, 3 * width], qkv)
            weights.put("\(target)/attention/qkv/bias", [3 * width], bias)
            try weights.takeLinear("\(source).attention.output.dense", as: "\(target)/attention/proj", inputs: width, outputs: width)
            try weights.take("\(source).attention.output.LayerNorm.weight", as: "\(target)/ln_1/weight", shape: [width])
            try weights.take("\(source).attention.output.LayerNorm.bias", as: "\(target)/ln_1/bias", shape: [width])
            try weights.takeLinear("\(source).intermediate.dense", as: "\(target)/fc", inputs: width, outputs: inner)
            try weights.takeLinear("\(source).output.dense", as: "\(target)/proj", inputs: inner, outputs: width)
            try weights.take("\(source).output.LayerNorm.weight", as: "\(target)/ln_2/weight", shape: [width])
            try weights.take("\(source).output.LayerNorm.bias", as: "\(target)/ln_2/bias", shape: [width])
        }
        if let labels = bert.labels {
            try weights.takeLinear("pooler.dense", as: "dense_1", inputs: width, outputs: width)
            try weights.takeLinear("classifier", as: "dense_2", inputs: width, outputs: labels)
        }
        var carriesPooler = false
        for part in ["weight", "bias"] {
            guard let pooler = weights.remove("pooler.dense.\(part)") else { continue }
            weights.carry("pooler.dense.\(part)", pooler)
            carriesPooler = carriesPooler || part == "weight"
        }
        if carriesPooler { notes.append("pooler.dense: BertModel's [CLS] pooler, not used by these layers; kept for the export") }
        try weights.refuseLeftovers(family: "bert")
        return weights
    }

    /// A BERT-family checkpoint (bert_embeddings, encoder_blocks alike, then layers the encoder
    /// does not hold) as `BertModel`: config.json, model.safetensors (q, k and v split and every
    /// Linear weight [out, in] again; the pooler the import kept, or the checkpoint has none),
    /// tokenizer.json when the checkpoint holds one, and `1_Pooling/config.json` when the model
    /// pools as sentence-transformers does. A head after the encoder (a classifier) is not part
    /// of BertModel: said in the returned notes by the caller's listing of what was written.
    static func exportBERT(_ checkpoint: Checkpoint, layers: [LayerSpec]) throws -> [(name: String, bytes: Data)] {
        guard let embeddings = layers.first?.options as? BertEmbeddingsOptions else { throw CohortError("--format huggingface: no bert_embeddings") }
        let blocks = layers.dropFirst().prefix { $0.options is EncoderBlockOptions }.compactMap { $0.options as? EncoderBlockOptions }
        guard let block = blocks.first, blocks.allSatisfy({ $0.yaml == block.yaml }) else {
            throw CohortError("--format huggingface: a BERT model needs encoder_blocks alike after bert_embeddings")
        }
        guard block.epsilon == embeddings.epsilon, block.dropout == embeddings.dropout else {
            throw CohortError("--format huggingface: the encoder blocks' epsilon and dropout differ from bert_embeddings', which BertConfig cannot say")
        }
        let width = embeddings.dimension
        // BertForSequenceClassification's head after the encoder: [CLS] pooler, dropout, classifier.
        let head = Array(layers.dropFirst(1 + blocks.count))
        let classifier: (dropout: Float, labels: Int)?
        if head.count == 4, (head[0].options as? SequencePoolOptions)?.mode == .first,
           let pooler = head[1].options as? DenseOptions, pooler.units == width, pooler.activation == .tanh, pooler.bias,
           let dropout = head[2].options as? DropoutOptions, let output = head[3].options as? DenseOptions, output.activation == nil, output.bias {
            classifier = (dropout.rate, output.units)
        } else {
            classifier = nil
        }
        var files: [(name: String, bytes: Data)] = [
            ("config.json", try JSONSerialization.data(withJSONObject: bertConfigJSON(embeddings, block: block, count: blocks.count, classifier: classifier),
                                                       options: [.sortedKeys, .prettyPrinted])),
            ("model.safetensors", try SafetensorsExport.encode(try bertTensors(checkpoint, width: width, blocks: blocks.count, classifier: classifier != nil)
                .sorted { $0.name < $1.name }, metadata: ["format": "pt"])),
        ]
        if let tokenizer = checkpoint.tokenizerJSON { files.append(("tokenizer.json", Data(tokenizer.utf8))) }
        if classifier == nil, let pool = head.first?.options as? SequencePoolOptions {
            let pooling: [String: Any] = ["word_embedding_dimension": width, "pooling_mode_mean_tokens": pool.mode == .mean,
                                          "pooling_mode_cls_token": pool.mode == .first, "pooling_mode_max_tokens": false]
            files.append(("1_Pooling/config.json", try JSONSerialization.data(withJSONObject: pooling, options: [.sortedKeys, .prettyPrinted])))
        }
        return files
    }

    /// BertConfig for the export: BertModel, or BertForSequenceClassification with its labels.
    private static func bertConfigJSON(_ embeddings: BertEmbeddingsOptions, block: EncoderBlockOptions, count: Int,
                                       classifier: (dropout: Float, labels: Int)?) -> [String: Any] {
        let (width, inner) = (embeddings.dimension, block.mlpRatio * embeddings.dimension)
        func decimal(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }
        var json: [String: Any] = [
            "model_type": "bert", "architectures": [classifier == nil ? "BertModel" : "BertForSequenceClassification"],
            "vocab_size": embeddings.vocabulary, "hidden_size": width,
            "num_hidden_layers": count, "num_attention_heads": block.heads, "intermediate_size": inner,
            "hidden_act": block.activation == .geluTanh ? "gelu_new" : block.activation.rawValue,
            "hidden_dropout_prob": decimal(block.dropout), "attention_probs_dropout_prob": decimal(block.dropout),
            "max_position_embeddings": embeddings.maxLength, "type_vocab_size": embeddings.tokenTypes,
            "layer_norm_eps": decimal(block.epsilon), "pad_token_id": embeddings.padID, "position_embedding_type": "absolute",
            "torch_dtype": "float32",
        ]
        if let classifier {
            json["num_labels"] = classifier.labels
            json["id2label"] = Dictionary(uniqueKeysWithValues: (0..<classifier.labels).map { ("\($0)", "LABEL_\($0)") })
            json["label2id"] = Dictionary(uniqueKeysWithValues: (0..<classifier.labels).map { ("LABEL_\($0)", $0) })
            json["classifier_dropout"] = decimal(classifier.dropout)
        }
        return json
    }

    /// The checkpoint's tensors under BertModel's names (`bert.` before them under a classifier):
    /// the fused projection split into q, k and v, every Linear weight [out, in] again, and the
    /// pooler the import kept, when there is no classifier.
    private static func bertTensors(_ checkpoint: Checkpoint, width: Int, blocks: Int, classifier: Bool) throws -> [SafetensorsExport.Tensor] {
        let prefix = classifier ? "bert." : ""
        var tensors: [SafetensorsExport.Tensor] = []
        func parameter(_ name: String) throws -> (shape: [Int], values: [Float]) {
            guard let tensor = checkpoint.tensors[CheckpointSchema.parameter(name)] else { throw CohortError("the checkpoint has no parameters/\(name)") }
            return tensor
        }
        func put(_ name: String, _ shape: [Int], _ values: [Float]) {
            let name = name.hasPrefix("classifier.") ? name : prefix + name
            tensors.append(SafetensorsExport.Tensor(name: name, dtype: "F32", shape: shape, bytes: values.withUnsafeBufferPointer { Data(buffer: $0) }))
        }
        func putLinear(_ target: String, _ source: String) throws {
            let weight = try parameter("\(source)/weight")
            let (inputs, outputs) = (weight.shape[0], weight.shape[1])
            put("\(target).weight", [outputs, inputs], transposed(weight.values, rows: inputs, columns: outputs))
            let bias = try parameter("\(source)/bias")
            put("\(target).bias", bias.shape, bias.values)
        }
        for (target, source) in [("embeddings.word_embeddings.weight", "bert_embeddings_1/word/weight"),
                                 ("embeddings.position_embeddings.weight", "bert_embeddings_1/position/weight"),
                                 ("embeddings.token_type_embeddings.weight", "bert_embeddings_1/token_type/weight"),
                                 ("embeddings.LayerNorm.weight", "bert_embeddings_1/ln/weight"),
                                 ("embeddings.LayerNorm.bias", "bert_embeddings_1/ln/bias")] {
            let tensor = try parameter(source)
            put(target, tensor.shape, tensor.values)
        }
        for index in 0..<blocks {
            let (target, source) = ("encoder.layer.\(index)", "encoder_block_\(index + 1)")
            let qkv = try parameter("\(source)/attention/qkv/weight")
            let bias = try parameter("\(source)/attention/qkv/bias")
            for (part, name) in ["query", "key", "value"].enumerated() {
                var weight = [Float](repeating: 0, count: width * width)
                for output in 0..<width {
                    for input in 0..<width { weight[output * width + input] = qkv.values[input * 3 * width + part * width + output] }
                }
                put("\(target).attention.self.\(name).weight", [width, width], weight)
                put("\(target).attention.self.\(name).bias", [width], Array(bias.values[(part * width)..<((part + 1) * width)]))
            }
            try putLinear("\(target).attention.output.dense", "\(source)/attention/proj")
            try putLinear("\(target).intermediate.dense", "\(source)/fc")
            try putLinear("\(target).output.dense", "\(source)/proj")
            for (norm, name) in [("attention.output.LayerNorm", "ln_1"), ("output.LayerNorm", "ln_2")] {
                for part in ["weight", "bias"] {
                    let tensor = try parameter("\(source)/\(name)/\(part)")
                    put("\(target).\(norm).\(part)", tensor.shape, tensor.values)
                }
            }
        }
        if classifier {
            try putLinear("pooler.dense", "dense_1")
            try putLinear("classifier", "dense_2")
        }
        for part in ["weight", "bias"] where !classifier {
            if let pooler = checkpoint.tensors[CheckpointSchema.huggingFacePrefix + "pooler.dense.\(part)"] { put("pooler.dense.\(part)", pooler.shape, pooler.values) }
        }
        return tensors
    }
}

/// What a BERT `config.json` says, checked: its sizes, activation, dropout, epsilon, and, for
/// BertForSequenceClassification, its labels.
struct BERTConfig {
    let vocabulary, width, layers, heads, inner, positions, types, pad: Int
    let activation: String
    let kind: ActivationKind
    let dropout: Double
    let epsilon: Float
    /// BertForSequenceClassification's classes; nil for BertModel.
    let labels: Int?
    let classifierDropout: Double

    init(_ config: [String: Any], path: String) throws {
        let json = ConfigJSON(values: config, path: path)
        let used: Set<String> = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                                 "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                                 "layer_norm_eps", "pad_token_id", "position_embedding_type", "is_decoder", "add_cross_attention",
                                 "chunk_size_feed_forward", "num_labels"]
        try json.refuseUnknown(used: used, inert: HuggingFace.inertBERTKeys, family: "bert")
        let architectures = config["architectures"] as? [String] ?? ["BertModel"]
        if let other = architectures.first(where: { $0 != "BertModel" && $0 != "BertForSequenceClassification" }) {
            throw CohortError("\(path): architectures \(other): Cohort imports BertModel and BertForSequenceClassification (add another head with model.add_layers)")
        }
        labels = architectures.contains("BertForSequenceClassification")
            ? try (config["id2label"] as? [String: Any])?.count ?? json.int("num_labels", default: 2) : nil
        (vocabulary, width, layers) = (try json.int("vocab_size"), try json.int("hidden_size"), try json.int("num_hidden_layers"))
        (heads, inner, positions) = (try json.int("num_attention_heads"), try json.int("intermediate_size"), try json.int("max_position_embeddings", default: 512))
        (types, pad) = (try json.int("type_vocab_size", default: 2), try json.int("pad_token_id", default: 0))
        guard vocabulary > 0, width > 0, layers > 0, heads > 0, width % heads == 0, inner > 0, positions > 0, types > 0,
              (0..<vocabulary).contains(pad) else {
            throw CohortError("\(path): vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings and type_vocab_size must be positive, hidden_size a multiple of num_attention_heads, pad_token_id a token")
        }
        guard inner % width == 0 else {
            throw CohortError("\(path): intermediate_size \(inner) is not a multiple of hidden_size \(width), which Cohort's block needs (mlp_ratio)")
        }
        activation = config["hidden_act"] as? String ?? "gelu"
        switch activation {
        case "gelu": kind = .gelu
        case "gelu_new", "gelu_pytorch_tanh": kind = .geluTanh
        case "relu": kind = .relu
        default: throw CohortError("\(path): hidden_act '\(activation)' is not implemented by Cohort (gelu, gelu_new, relu)")
        }
        try json.require("position_embedding_type", "absolute", default: "absolute")
        try json.require("is_decoder", false, default: false)
        try json.require("add_cross_attention", false, default: false)
        try json.require("chunk_size_feed_forward", 0, default: 0)
        let (hidden, attention) = (try json.double("hidden_dropout_prob", default: 0.1), try json.double("attention_probs_dropout_prob", default: 0.1))
        guard hidden == attention else {
            throw CohortError("\(path): attention_probs_dropout_prob \(attention) differs from hidden_dropout_prob \(hidden); Cohort's block has one dropout rate")
        }
        dropout = hidden
        epsilon = Float(try json.double("layer_norm_eps", default: 1e-12))
        if let labels, labels <= 0 { throw CohortError("\(path): num_labels must be positive") }
        classifierDropout = (config["classifier_dropout"] as? Double) ?? hidden
    }
}
