/// Every dataset name a checkpoint holds, in one place: the writer, the readers, the importers
/// and the exporters use these; docs/formats.md documents them and `CheckpointSchemaTests`
/// compares the document with written files.
public enum CheckpointSchema {
    /// `parameters/<layer>/<parameter>`: a parameter's values, its true shape.
    public static func parameter(_ name: String) -> String { parametersPrefix + name }
    public static let parametersPrefix = "parameters/"
    /// `buffers/<layer>/<buffer>`: batch norm's running statistics.
    public static func buffer(_ name: String) -> String { "buffers/" + name }
    /// `optimizer/<slot>/<layer>/<parameter>`: Adam's moments or SGD's momentum.
    public static func optimizerSlot(_ slot: String, _ name: String) -> String { "optimizer/\(slot)/\(name)" }
    /// `state/<name>`: uint64 words (every rank's dropout generators).
    public static let statePrefix = "state/"
    /// `metrics/<name>`: float64 per finished epoch, the epoch in progress, the callbacks' state.
    public static let metricsPrefix = "metrics/"
    /// Keys under `metrics/` (and `callbacks/best_weights` among the tensors) for the callbacks.
    public static let earlyStoppingState = "callbacks/early_stopping"
    public static let plateauState = "callbacks/reduce_lr_on_plateau"
    public static let bestWeights = "callbacks/best_weights"
    /// The input standardization the model was trained with.
    public static let normalizationMean = "normalization/mean"
    public static let normalizationStd = "normalization/std"
    /// An imported model's Hugging Face tokenizer.json, as bytes.
    public static let tokenizerJSON = "tokenizer/json"
    /// Tensors of an imported model no layer holds (BERT's pooler), kept for the export.
    public static let huggingFacePrefix = "huggingface/"
}
