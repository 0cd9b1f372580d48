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

    /// Keys of a GPT-2 `config.json` that do not change what the model computes.
    static let inertGPT2Keys: Set<String> = [
        "architectures", "model_type", "n_ctx", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
        "summary_activation", "summary_first_dropout", "summary_proj_to_labels", "summary_type", "summary_use_proj",
        "task_specific_params", "torch_dtype", "dtype", "transformers_version", "use_cache", "_name_or_path",
        "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class", "prefix", "id2label", "label2id",
        "_attn_implementation_autoset", "tie_word_embeddings",
    ]

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

    private static func importGPT2(_ config: [String: Any], directory: String, readingWeights: Bool) throws -> Imported {
        let configPath = "\(directory)/config.json"
        let json = ConfigJSON(values: config, path: configPath)
        let used: Set<String> = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                                 "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "scale_attn_weights",
                                 "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"]
        try json.refuseUnknown(used: used, inert: inertGPT2Keys, family: "gpt2")
        let (vocabulary, positions, width) = (try json.int("vocab_size"), try json.int("n_positions"), try json.int("n_embd"))
        let (layers, heads) = (try json.int("n_layer"), try json.int("n_head"))
        let inner = try json.int("n_inner", default: 4 * width)
        guard vocabulary > 0, positions > 0, width > 0, layers > 0, heads > 0, width % heads == 0 else {
            throw CohortError("\(configPath): vocab_size, n_positions, n_embd, n_layer and n_head must be positive, n_embd a multiple of n_head")
        }
        guard inner % width == 0 else {
            throw CohortError("\(configPath): n_inner \(inner) is not a multiple of n_embd \(width), which Cohort's block needs (mlp_ratio)")
        }
        let activation = config["activation_function"] as? String ?? "gelu_new"
        let kind: ActivationKind
        switch activation {
        case "gelu_new", "gelu_pytorch_tanh": kind = .geluTanh
        case "gelu": kind = .gelu
        default: throw CohortError("\(configPath): activation_function '\(activation)' is not implemented by Cohort (gelu_new, gelu_pytorch_tanh, gelu)")
        }
        try json.require("scale_attn_weights", true, default: true)
        try json.require("scale_attn_by_inverse_layer_idx", false, default: false)
        try json.require("reorder_and_upcast_attn", false, default: false)
        try json.require("add_cross_attention", false, default: false)
        let (residual, attentionDropout, embedding) = (try json.double("resid_pdrop", default: 0.1), try json.double("attn_pdrop", default: 0.1),
                                                        try json.double("embd_pdrop", default: 0.1))
        guard residual == attentionDropout else {
            throw CohortError("\(configPath): attn_pdrop \(attentionDropout) differs from resid_pdrop \(residual); Cohort's block has one dropout rate")
        }
        let epsilon = Float(try json.double("layer_norm_epsilon", default: 1e-5))
        let tied = config["tie_word_embeddings"] as? Bool ?? true

        var specs: [LayerSpec] = [LayerSpec(EmbeddingOptions(vocabulary: vocabulary, dimension: width)),
                                  LayerSpec(PositionalEmbeddingOptions(maxLength: positions))]
        if embedding > 0 { specs.append(.dropout(Float(embedding))) }
        specs += (0..<layers).map { _ in
            LayerSpec(TransformerBlockOptions(heads: heads, dropout: Float(residual), bias: true, mlpRatio: inner / width,
                                              activation: kind, epsilon: epsilon))
        }
        specs.append(LayerSpec(LayerNormOptions(epsilon: epsilon)))
        specs.append(LayerSpec(LanguageModelHeadOptions(tied: tied, units: tied ? nil : vocabulary)))
        var checkpoint = importedCheckpoint(directory, layers: specs, window: positions, data: "data/REPLACE-WITH-TOKENS/train.h5")
        let summary = "gpt2: \(layers) blocks, \(heads) heads, width \(width), vocabulary \(vocabulary), \(positions) positions, \(activation), \(tied ? "tied" : "untied") head"
        guard readingWeights else { return Imported(checkpoint: checkpoint, notes: [summary]) }

        // The tensors, by their GPT2Model names (GPT2LMHeadModel prefixes them with `transformer.`).
        let read = try weights(in: directory, droppingPrefix: "transformer.")
        let weightsPath = read.path
        var tensors = read.tensors
        var mapped: [String: (shape: [Int], values: [Float])] = [:]
        var notes: [String] = []
        func take(_ source: String, as target: String, shape: [Int]) throws {
            guard let tensor = tensors.removeValue(forKey: source) else {
                throw CohortError("\(weightsPath): no tensor '\(source)', which \(configPath) implies")
            }
            guard tensor.shape == shape else {
                throw CohortError("\(weightsPath): '\(source)' has shape \(tensor.shape), \(configPath) implies \(shape)")
            }
            mapped[CheckpointSchema.parameter(target)] = (shape, tensor.values)
        }
        try take("wte.weight", as: "embedding_1/weight", shape: [vocabulary, width])
        try take("wpe.weight", as: "positional_embedding_1/weight", shape: [positions, width])
        for index in 0..<layers {
            let (source, target) = ("h.\(index)", "transformer_block_\(index + 1)")
            for norm in ["ln_1", "ln_2"] {
                try take("\(source).\(norm).weight", as: "\(target)/\(norm)/weight", shape: [width])
                try take("\(source).\(norm).bias", as: "\(target)/\(norm)/bias", shape: [width])
            }
            try take("\(source).attn.c_attn.weight", as: "\(target)/attention/qkv/weight", shape: [width, 3 * width])
            try take("\(source).attn.c_attn.bias", as: "\(target)/attention/qkv/bias", shape: [3 * width])
            try take("\(source).attn.c_proj.weight", as: "\(target)/attention/proj/weight", shape: [width, width])
            try take("\(source).attn.c_proj.bias", as: "\(target)/attention/proj/bias", shape: [width])
            try take("\(source).mlp.c_fc.weight", as: "\(target)/fc/weight", shape: [width, inner])
            try take("\(source).mlp.c_fc.bias", as: "\(target)/fc/bias", shape: [inner])
            try take("\(source).mlp.c_proj.weight", as: "\(target)/proj/weight", shape: [inner, width])
            try take("\(source).mlp.c_proj.bias", as: "\(target)/proj/bias", shape: [width])
            // The causal mask, stored as buffers by older versions: Cohort's attention builds its own.
            for buffer in ["\(source).attn.bias", "\(source).attn.masked_bias"] where tensors.removeValue(forKey: buffer) != nil {
                if index == 0 { notes.append("h.N.attn.bias / masked_bias: causal-mask buffers, not needed (Cohort's attention is causal)") }
            }
        }
        try take("ln_f.weight", as: "layer_norm_1/weight", shape: [width])
        try take("ln_f.bias", as: "layer_norm_1/bias", shape: [width])
        if let head = tensors.removeValue(forKey: "lm_head.weight") {
            guard head.shape == [vocabulary, width] else {
                throw CohortError("\(weightsPath): 'lm_head.weight' has shape \(head.shape), \(configPath) implies \([vocabulary, width])")
            }
            if tied {
                guard head.values == mapped[CheckpointSchema.parameter("embedding_1/weight")]?.values else {
                    throw CohortError("\(weightsPath): 'lm_head.weight' differs from 'wte.weight' but \(configPath) ties them (tie_word_embeddings)")
                }
            } else {
                mapped[CheckpointSchema.parameter("lm_head_1/weight")] = ([width, vocabulary], transposed(head.values, rows: vocabulary, columns: width))
            }
        } else if !tied {
            throw CohortError("\(weightsPath): no 'lm_head.weight', and \(configPath) does not tie it to wte (tie_word_embeddings false)")
        }
        if let stray = tensors.keys.sorted().first {
            throw CohortError("\(weightsPath): tensor '\(stray)' has no place in a gpt2 model of \(configPath)")
        }

        checkpoint.tensors = mapped
        let parameters = mapped.values.reduce(0) { $0 + $1.values.count }
        notes.insert(summary + "; \(parameters) parameters", at: 0)
        return Imported(checkpoint: checkpoint, notes: notes)
    }

    /// A Cohort checkpoint of a gpt2-shaped model (embedding, positional_embedding, optional
    /// dropout, transformer blocks alike, layer_norm, lm_head) as a Hugging Face directory's
    /// `config.json` and `model.safetensors` (GPT2LMHeadModel's names, the head tied or not).
    public static func exportGPT2(_ checkpoint: Checkpoint) throws -> (config: Data, weights: Data) {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        var layers = config.layers[...]
        func refuse(_ why: String) -> CohortError {
            CohortError("--format huggingface: the model is not gpt2-shaped (\(why)); its layers: \(config.layers.map(\.type).joined(separator: ", "))")
        }
        guard let embedding = layers.popFirst()?.options as? EmbeddingOptions else { throw refuse("it does not start with an embedding") }
        guard let positional = layers.popFirst()?.options as? PositionalEmbeddingOptions else {
            throw refuse("no positional_embedding after the embedding")
        }
        var embeddingDropout: Float = 0
        if let dropout = layers.first?.options as? DropoutOptions { embeddingDropout = dropout.rate; layers.removeFirst() }
        var blocks: [TransformerBlockOptions] = []
        while let block = layers.first?.options as? TransformerBlockOptions { blocks.append(block); layers.removeFirst() }
        guard let block = blocks.first, blocks.allSatisfy({ $0.yaml == block.yaml }), block.bias else {
            throw refuse("its transformer blocks are missing, differ from each other or have no biases")
        }
        guard let norm = layers.popFirst()?.options as? LayerNormOptions, let head = layers.popFirst()?.options as? LanguageModelHeadOptions,
              layers.isEmpty else {
            throw refuse("it does not end with layer_norm and lm_head")
        }
        let width = embedding.dimension
        let inner = block.mlpRatio * width
        // A float32 setting as the decimal it was written as (1e-05, not 9.99999974e-06).
        func decimal(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }
        var json: [String: Any] = [
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": embedding.vocabulary,
            "n_positions": positional.maxLength, "n_embd": width, "n_layer": blocks.count, "n_head": block.heads,
            "activation_function": block.activation == .geluTanh ? "gelu_new" : "gelu",
            "resid_pdrop": decimal(block.dropout), "attn_pdrop": decimal(block.dropout), "embd_pdrop": decimal(embeddingDropout),
            "layer_norm_epsilon": decimal(norm.epsilon), "scale_attn_weights": true, "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false, "add_cross_attention": false, "tie_word_embeddings": head.tied,
            "n_inner": inner == 4 * width ? NSNull() : inner as Any,
        ]
        if block.epsilon != norm.epsilon { throw refuse("its blocks' layer norms and the last differ in epsilon") }
        json["torch_dtype"] = "float32"
        // GPT2Config's defaults (50256) lie outside a vocabulary other than GPT-2's own.
        (json["bos_token_id"], json["eos_token_id"]) = (NSNull(), NSNull())
        var tensors: [SafetensorsExport.Tensor] = []
        func put(_ target: String, _ source: String) throws {
            guard let tensor = checkpoint.tensors[CheckpointSchema.parameter(source)] else { throw CohortError("the checkpoint has no parameters/\(source)") }
            var (shape, values) = (tensor.shape, tensor.values)
            if target == "lm_head.weight" { (shape, values) = ([shape[1], shape[0]], transposed(values, rows: shape[0], columns: shape[1])) }
            tensors.append(SafetensorsExport.Tensor(name: target, dtype: "F32", shape: shape,
                                                    bytes: values.withUnsafeBufferPointer { Data(buffer: $0) }))
        }
        try put("transformer.wte.weight", "embedding_1/weight")
        try put("transformer.wpe.weight", "positional_embedding_1/weight")
        for index in 0..<blocks.count {
            let (target, source) = ("transformer.h.\(index)", "transformer_block_\(index + 1)")
            for part in ["weight", "bias"] {
                try put("\(target).ln_1.\(part)", "\(source)/ln_1/\(part)")
                try put("\(target).ln_2.\(part)", "\(source)/ln_2/\(part)")
                try put("\(target).attn.c_attn.\(part)", "\(source)/attention/qkv/\(part)")
                try put("\(target).attn.c_proj.\(part)", "\(source)/attention/proj/\(part)")
                try put("\(target).mlp.c_fc.\(part)", "\(source)/fc/\(part)")
                try put("\(target).mlp.c_proj.\(part)", "\(source)/proj/\(part)")
            }
        }
        try put("transformer.ln_f.weight", "layer_norm_1/weight")
        try put("transformer.ln_f.bias", "layer_norm_1/bias")
        if !head.tied { try put("lm_head.weight", "lm_head_1/weight") }
        let configData = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])
        let weights = try SafetensorsExport.encode(tensors.sorted { $0.name < $1.name }, metadata: ["format": "pt"])
        return (configData, weights)
    }

    /// Keys of a BERT `config.json` that do not change what the model computes.
    static let inertBERTKeys: Set<String> = [
        "architectures", "model_type", "_name_or_path", "initializer_range", "gradient_checkpointing", "use_cache",
        "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "output_attentions",
        "output_hidden_states", "return_dict", "tokenizer_class", "classifier_dropout", "_attn_implementation_autoset",
        "tie_word_embeddings", "id2label", "label2id", "problem_type", "directionality", "pooler_fc_size",
        "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type",
    ]

    private static func importBERT(_ config: [String: Any], directory: String, readingWeights: Bool) throws -> Imported {
        let configPath = "\(directory)/config.json"
        let json = ConfigJSON(values: config, path: configPath)
        let used: Set<String> = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                                 "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                                 "layer_norm_eps", "pad_token_id", "position_embedding_type", "is_decoder", "add_cross_attention",
                                 "chunk_size_feed_forward", "num_labels"]
        try json.refuseUnknown(used: used, inert: inertBERTKeys, family: "bert")
        let architectures = config["architectures"] as? [String] ?? ["BertModel"]
        if let other = architectures.first(where: { $0 != "BertModel" && $0 != "BertForSequenceClassification" }) {
            throw CohortError("\(configPath): architectures \(other): Cohort imports BertModel and BertForSequenceClassification (add another head with model.add_layers)")
        }
        // BertForSequenceClassification: the [CLS] pooler (dense + tanh), dropout, and a linear classifier.
        let labels = architectures.contains("BertForSequenceClassification")
            ? try (config["id2label"] as? [String: Any])?.count ?? json.int("num_labels", default: 2) : nil
        let (vocabulary, width, layers) = (try json.int("vocab_size"), try json.int("hidden_size"), try json.int("num_hidden_layers"))
        let (heads, inner, positions) = (try json.int("num_attention_heads"), try json.int("intermediate_size"), try json.int("max_position_embeddings", default: 512))
        let (types, pad) = (try json.int("type_vocab_size", default: 2), try json.int("pad_token_id", default: 0))
        guard vocabulary > 0, width > 0, layers > 0, heads > 0, width % heads == 0, inner > 0, positions > 0, types > 0,
              (0..<vocabulary).contains(pad) else {
            throw CohortError("\(configPath): vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings and type_vocab_size must be positive, hidden_size a multiple of num_attention_heads, pad_token_id a token")
        }
        guard inner % width == 0 else {
            throw CohortError("\(configPath): intermediate_size \(inner) is not a multiple of hidden_size \(width), which Cohort's block needs (mlp_ratio)")
        }
        let activation = config["hidden_act"] as? String ?? "gelu"
        let kind: ActivationKind
        switch activation {
        case "gelu": kind = .gelu
        case "gelu_new", "gelu_pytorch_tanh": kind = .geluTanh
        case "relu": kind = .relu
        default: throw CohortError("\(configPath): hidden_act '\(activation)' is not implemented by Cohort (gelu, gelu_new, relu)")
        }
        try json.require("position_embedding_type", "absolute", default: "absolute")
        try json.require("is_decoder", false, default: false)
        try json.require("add_cross_attention", false, default: false)
        try json.require("chunk_size_feed_forward", 0, default: 0)
        let (hiddenDropout, attentionDropout) = (try json.double("hidden_dropout_prob", default: 0.1), try json.double("attention_probs_dropout_prob", default: 0.1))
        guard hiddenDropout == attentionDropout else {
            throw CohortError("\(configPath): attention_probs_dropout_prob \(attentionDropout) differs from hidden_dropout_prob \(hiddenDropout); Cohort's block has one dropout rate")
        }
        let epsilon = Float(try json.double("layer_norm_eps", default: 1e-12))
        // With a tokenizer, its [SEP] marks the second segment of a sentence pair (token type 1).
        let tokenizerText = try? String(contentsOfFile: "\(directory)/tokenizer.json", encoding: .utf8)
        let tokenizer = try tokenizerText.map { _ in try WordPiece(tokenizerJSON: "\(directory)/tokenizer.json") }
        var specs: [LayerSpec] = [LayerSpec(BertEmbeddingsOptions(vocabulary: vocabulary, dimension: width, maxLength: positions, tokenTypes: types,
                                                                  epsilon: epsilon, padID: pad, sepID: types >= 2 ? tokenizer?.separator : nil,
                                                                  dropout: Float(hiddenDropout)))]
        specs += (0..<layers).map { _ in
            LayerSpec(EncoderBlockOptions(heads: heads, mlpRatio: inner / width, epsilon: epsilon, dropout: Float(hiddenDropout), activation: kind))
        }
        var notes: [String] = []
        // A sentence-transformers directory says how its sentence embeddings pool the tokens.
        let poolingPath = "\(directory)/1_Pooling/config.json"
        if let labels {
            guard labels > 0 else { throw CohortError("\(configPath): num_labels must be positive") }
            let dropout = (config["classifier_dropout"] as? Double) ?? hiddenDropout
            specs += [LayerSpec(SequencePoolOptions(mode: .first)), .dense(width, activation: .tanh, initializer: .normal),
                      LayerSpec(DropoutOptions(rate: Float(dropout))), .dense(labels, initializer: .normal)]
            notes.append("BertForSequenceClassification: pooler (sequence_pool first, dense \(width) tanh), dropout \(dropout), classifier (dense \(labels))")
        } else if let data = FileManager.default.contents(atPath: poolingPath),
           let pooling = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            if pooling["pooling_mode_mean_tokens"] as? Bool == true {
                specs.append(LayerSpec(SequencePoolOptions(mode: .mean)))
                notes.append("\(poolingPath): mean pooling (sequence_pool mean)")
            } else if pooling["pooling_mode_cls_token"] as? Bool == true {
                specs.append(LayerSpec(SequencePoolOptions(mode: .first)))
                notes.append("\(poolingPath): the first token's vector (sequence_pool first)")
            } else {
                throw CohortError("\(poolingPath): only mean or cls_token pooling is implemented by Cohort")
            }
        }
        var checkpoint = importedCheckpoint(directory, layers: specs, window: min(positions, 128), data: "data/REPLACE-WITH-TEXT/train.h5")
        let summary = "bert: \(layers) encoder blocks, \(heads) heads, width \(width), feed-forward \(inner), vocabulary \(vocabulary), \(positions) positions, \(types) token types, \(activation), epsilon \(epsilon)"
        if let text = tokenizerText {
            checkpoint.tokenizerJSON = text
            notes.append("\(directory)/tokenizer.json: WordPiece, stored in the checkpoint")
        }
        guard readingWeights else { return Imported(checkpoint: checkpoint, notes: [summary] + notes) }

        let read = try weights(in: directory, droppingPrefix: "bert.")
        let weightsPath = read.path
        var tensors = read.tensors
        var mapped: [String: (shape: [Int], values: [Float])] = [:]
        func tensor(_ source: String, shape: [Int]) throws -> [Float] {
            // Older checkpoints name a layer norm's scale and shift gamma and beta.
            let legacy = source.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma")
                .replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
            guard let found = tensors.removeValue(forKey: source) ?? tensors.removeValue(forKey: legacy) else {
                throw CohortError("\(weightsPath): no tensor '\(source)', which \(configPath) implies")
            }
            guard found.shape == shape else {
                throw CohortError("\(weightsPath): '\(source)' has shape \(found.shape), \(configPath) implies \(shape)")
            }
            return found.values
        }
        func take(_ source: String, as target: String, shape: [Int]) throws {
            mapped[CheckpointSchema.parameter(target)] = (shape, try tensor(source, shape: shape))
        }
        /// A torch Linear's [out, in] weight as Cohort's [in, out].
        func takeLinear(_ source: String, as target: String, inputs: Int, outputs: Int) throws {
            let values = try tensor("\(source).weight", shape: [outputs, inputs])
            mapped[CheckpointSchema.parameter("\(target)/weight")] = ([inputs, outputs], transposed(values, rows: outputs, columns: inputs))
            try take("\(source).bias", as: "\(target)/bias", shape: [outputs])
        }
        try take("embeddings.word_embeddings.weight", as: "bert_embeddings_1/word/weight", shape: [vocabulary, width])
        try take("embeddings.position_embeddings.weight", as: "bert_embeddings_1/position/weight", shape: [positions, width])
        try take("embeddings.token_type_embeddings.weight", as: "bert_embeddings_1/token_type/weight", shape: [types, width])
        try take("embeddings.LayerNorm.weight", as: "bert_embeddings_1/ln/weight", shape: [width])
        try take("embeddings.LayerNorm.bias", as: "bert_embeddings_1/ln/bias", shape: [width])
        if let ids = tensors.removeValue(forKey: "embeddings.position_ids") {
            guard ids.values.enumerated().allSatisfy({ Float($0.offset) == $0.element }) else {
                throw CohortError("\(weightsPath): embeddings.position_ids is not 0, 1, 2, …; Cohort implements absolute positions only")
            }
            notes.append("embeddings.position_ids: the positions 0…\(ids.values.count - 1), implied")
        }
        for index in 0..<layers {
            let (source, target) = ("encoder.layer.\(index)", "encoder_block_\(index + 1)")
            // q, k and v, each [out, in], side by side in Cohort's fused [in, 3·out] projection.
            var qkv = [Float](repeating: 0, count: width * 3 * width)
            var bias: [Float] = []
            for (part, name) in ["query", "key", "value"].enumerated() {
                let weight = try tensor("\(source).attention.self.\(name).weight", shape: [width, width])
                for input in 0..<width {
                    for output in 0..<width { qkv[input * 3 * width + part * width + output] = weight[output * width + input] }
                }
                bias += try tensor("\(source).attention.self.\(name).bias", shape: [width])
            }
            mapped[CheckpointSchema.parameter("\(target)/attention/qkv/weight")] = ([width, 3 * width], qkv)
            mapped[CheckpointSchema.parameter("\(target)/attention/qkv/bias")] = ([3 * width], bias)
            try takeLinear("\(source).attention.output.dense", as: "\(target)/attention/proj", inputs: width, outputs: width)
            try take("\(source).attention.output.LayerNorm.weight", as: "\(target)/ln_1/weight", shape: [width])
            try take("\(source).attention.output.LayerNorm.bias", as: "\(target)/ln_1/bias", shape: [width])
            try takeLinear("\(source).intermediate.dense", as: "\(target)/fc", inputs: width, outputs: inner)
            try takeLinear("\(source).output.dense", as: "\(target)/proj", inputs: inner, outputs: width)
            try take("\(source).output.LayerNorm.weight", as: "\(target)/ln_2/weight", shape: [width])
            try take("\(source).output.LayerNorm.bias", as: "\(target)/ln_2/bias", shape: [width])
        }
        if let labels {
            try takeLinear("pooler.dense", as: "dense_1", inputs: width, outputs: width)
            try takeLinear("classifier", as: "dense_2", inputs: width, outputs: labels)
        }
        for part in ["weight", "bias"] {
            if let pooler = tensors.removeValue(forKey: "pooler.dense.\(part)") {
                mapped[CheckpointSchema.huggingFacePrefix + "pooler.dense.\(part)"] = (pooler.shape, pooler.values)
            }
        }
        if mapped[CheckpointSchema.huggingFacePrefix + "pooler.dense.weight"] != nil {
            notes.append("pooler.dense: BertModel's [CLS] pooler, not used by these layers; kept for the export")
        }
        if let stray = tensors.keys.sorted().first {
            throw CohortError("\(weightsPath): tensor '\(stray)' has no place in a bert model of \(configPath)")
        }
        checkpoint.tensors = mapped
        let parameters = mapped.filter { $0.key.hasPrefix(CheckpointSchema.parametersPrefix) }.values.reduce(0) { $0 + $1.values.count }
        return Imported(checkpoint: checkpoint, notes: [summary + "; \(parameters) parameters"] + notes)
    }

    /// The files of a Hugging Face directory for a checkpoint's model: GPT-2-shaped models as
    /// `GPT2LMHeadModel`, BERT-family ones as `BertModel` (see `exportBERT`).
    public static func export(_ checkpoint: Checkpoint) throws -> [(name: String, bytes: Data)] {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "the checkpoint's config")
        if config.layers.first?.options is BertEmbeddingsOptions { return try exportBERT(checkpoint, layers: config.layers) }
        let (json, weights) = try exportGPT2(checkpoint)
        return [("config.json", json), ("model.safetensors", weights)]
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
        let (width, inner) = (embeddings.dimension, block.mlpRatio * embeddings.dimension)
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
        let prefix = classifier == nil ? "" : "bert."
        func decimal(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }
        var json: [String: Any] = [
            "model_type": "bert", "architectures": [classifier == nil ? "BertModel" : "BertForSequenceClassification"],
            "vocab_size": embeddings.vocabulary, "hidden_size": width,
            "num_hidden_layers": blocks.count, "num_attention_heads": block.heads, "intermediate_size": inner,
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
        for index in 0..<blocks.count {
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
        if classifier != nil {
            try putLinear("pooler.dense", "dense_1")
            try putLinear("classifier", "dense_2")
        }
        for part in ["weight", "bias"] where classifier == nil {
            if let pooler = checkpoint.tensors[CheckpointSchema.huggingFacePrefix + "pooler.dense.\(part)"] { put("pooler.dense.\(part)", pooler.shape, pooler.values) }
        }
        var files: [(name: String, bytes: Data)] = [
            ("config.json", try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])),
            ("model.safetensors", try SafetensorsExport.encode(tensors.sorted { $0.name < $1.name }, metadata: ["format": "pt"])),
        ]
        if let tokenizer = checkpoint.tokenizerJSON { files.append(("tokenizer.json", Data(tokenizer.utf8))) }
        if classifier == nil, let pool = head.first?.options as? SequencePoolOptions {
            let pooling: [String: Any] = ["word_embedding_dimension": width, "pooling_mode_mean_tokens": pool.mode == .mean,
                                          "pooling_mode_cls_token": pool.mode == .first, "pooling_mode_max_tokens": false]
            files.append(("1_Pooling/config.json", try JSONSerialization.data(withJSONObject: pooling, options: [.sortedKeys, .prettyPrinted])))
        }
        return files
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
