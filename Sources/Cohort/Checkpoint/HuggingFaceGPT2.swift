import Foundation

/// The GPT-2 family (`GPT2Model`, `GPT2LMHeadModel`): import and export (see `HuggingFace`).
extension HuggingFace {
    /// Keys of a GPT-2 `config.json` that do not change what the model computes.
    static let inertGPT2Keys: Set<String> = [
        "architectures", "model_type", "n_ctx", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
        "summary_activation", "summary_first_dropout", "summary_proj_to_labels", "summary_type", "summary_use_proj",
        "task_specific_params", "torch_dtype", "dtype", "transformers_version", "use_cache", "_name_or_path",
        "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class", "prefix", "id2label", "label2id",
        "_attn_implementation_autoset", "tie_word_embeddings",
    ]

    static func importGPT2(_ config: [String: Any], directory: String, readingWeights: Bool) throws -> Imported {
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

        var notes: [String] = []
        let weights = try gpt2Weights(directory: directory, vocabulary: vocabulary, positions: positions, width: width, inner: inner,
                                      layers: layers, tied: tied, notes: &notes)
        checkpoint.tensors = weights.mapped
        notes.insert(summary + "; \(weights.parameterCount) parameters", at: 0)
        return Imported(checkpoint: checkpoint, notes: notes)
    }

    /// The weights of a GPT-2 model under Cohort's names (GPT2LMHeadModel prefixes GPT2Model's
    /// with `transformer.`; its Conv1D weights are [in, out] already): an untied head transposed,
    /// a tied one checked equal to the embedding.
    private static func gpt2Weights(directory: String, vocabulary: Int, positions: Int, width: Int, inner: Int, layers: Int, tied: Bool,
                                    notes: inout [String]) throws -> WeightMapping {
        var weights = try WeightMapping(directory: directory, droppingPrefix: "transformer.")
        try weights.take("wte.weight", as: "embedding_1/weight", shape: [vocabulary, width])
        try weights.take("wpe.weight", as: "positional_embedding_1/weight", shape: [positions, width])
        for index in 0..<layers {
            let (source, target) = ("h.\(index)", "transformer_block_\(index + 1)")
            for norm in ["ln_1", "ln_2"] {
                try weights.take("\(source).\(norm).weight", as: "\(target)/\(norm)/weight", shape: [width])
                try weights.take("\(source).\(norm).bias", as: "\(target)/\(norm)/bias", shape: [width])
            }
            for (from, to, inputs, outputs) in [("attn.c_attn", "attention/qkv", width, 3 * width), ("attn.c_proj", "attention/proj", width, width),
                                                ("mlp.c_fc", "fc", width, inner), ("mlp.c_proj", "proj", inner, width)] {
                try weights.take("\(source).\(from).weight", as: "\(target)/\(to)/weight", shape: [inputs, outputs])
                try weights.take("\(source).\(from).bias", as: "\(target)/\(to)/bias", shape: [outputs])
            }
            // The causal mask, stored as buffers by older versions: Cohort's attention builds its own.
            for buffer in ["\(source).attn.bias", "\(source).attn.masked_bias"] where weights.remove(buffer) != nil {
                if index == 0 { notes.append("h.N.attn.bias / masked_bias: causal-mask buffers, not needed (Cohort's attention is causal)") }
            }
        }
        try weights.take("ln_f.weight", as: "layer_norm_1/weight", shape: [width])
        try weights.take("ln_f.bias", as: "layer_norm_1/bias", shape: [width])
        if weights.has("lm_head.weight") {
            let head = try weights.tensor("lm_head.weight", shape: [vocabulary, width])
            if tied {
                guard head == weights.mapped[CheckpointSchema.parameter("embedding_1/weight")]?.values else {
                    throw CohortError("\(weights.weightsPath): 'lm_head.weight' differs from 'wte.weight' but \(weights.configPath) ties them (tie_word_embeddings)")
                }
            } else {
                weights.put("lm_head_1/weight", [width, vocabulary], transposed(head, rows: vocabulary, columns: width))
            }
        } else if !tied {
            throw CohortError("\(weights.weightsPath): no 'lm_head.weight', and \(weights.configPath) does not tie it to wte (tie_word_embeddings false)")
        }
        try weights.refuseLeftovers(family: "gpt2")
        return weights
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
}
