import Foundation

/// Sentence embeddings from a BERT-family checkpoint (`cohort embed`): each text tokenized with
/// the checkpoint's WordPiece (`[CLS] … [SEP]`, at most `maxLength` ids), a batch padded with the
/// model's pad id to its longest row, the model's pooled output, then divided by its L2 norm,
/// as sentence-transformers' `encode` gives them for all-MiniLM-L6-v2 (Transformer, mean
/// Pooling, Normalize).
public struct SentenceEmbedder {
    public let layers: [LayerSpec]
    public let tokenizer: WordPiece
    public let padID: Int
    public let width: Int
    public let maxLength: Int
    public let notes: [String]
    let checkpoint: Checkpoint

    public init(checkpoint: Checkpoint, source: String, tokenizer override: WordPiece? = nil, maxLength: Int) throws {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "\(source) (stored config)")
        guard let embeddings = config.layers.first?.options as? BertEmbeddingsOptions else {
            throw CohortError("\(source): embed needs a BERT-family model (its first layer is \(config.layers.first?.type ?? "none"), not bert_embeddings)")
        }
        var layers = config.layers
        var notes: [String] = []
        let probe = try Model(inputShape: [2], layers: layers, maxBatch: 1, seed: 0)
        if probe.outputShape.count == 2 {
            layers.append(LayerSpec(SequencePoolOptions(mode: .mean)))
            notes.append("the model gives a vector per token: mean pooling over the real tokens appended")
        }
        if let override {
            tokenizer = override
        } else if let json = checkpoint.tokenizerJSON {
            tokenizer = try WordPiece(json: Data(json.utf8), source: "\(source) (stored tokenizer.json)")
        } else {
            throw CohortError("\(source): holds no tokenizer.json; give one with --tokenizer")
        }
        guard maxLength >= 2 else { throw CohortError("--max-length must be at least 2 ([CLS] and [SEP]), got \(maxLength)") }
        (self.layers, self.padID, self.notes, self.checkpoint) = (layers, embeddings.padID, notes, checkpoint)
        self.maxLength = min(maxLength, embeddings.maxLength)
        width = try Model(inputShape: [2], layers: layers, maxBatch: 1, seed: 0).outputShape.reduce(1, *)
    }

    /// The normalized embeddings of `texts`, [texts.count × width], `batchSize` texts a forward pass.
    public func embed(_ texts: [String], batchSize: Int) throws -> [Float] {
        let encoded = texts.map { tokenizer.encode($0, maxLength: maxLength) }
        var result = [Float](repeating: 0, count: texts.count * width)
        var models: [Int: Model] = [:]
        for start in stride(from: 0, to: texts.count, by: batchSize) {
            let rows = encoded[start..<min(start + batchSize, texts.count)]
            let length = max(rows.map(\.count).max() ?? 1, 1)
            let model: Model
            if let built = models[length] {
                model = built
            } else {
                model = try Model(inputShape: [length], layers: layers, maxBatch: batchSize, seed: 0)
                try checkpoint.restoreModel(model, source: "the checkpoint")
                models[length] = model
            }
            var ids = [Float](repeating: Float(padID), count: rows.count * length)
            for (row, tokens) in rows.enumerated() {
                for (position, token) in tokens.enumerated() { ids[row * length + position] = Float(token) }
            }
            let output = model.forward(ids, batch: rows.count, training: false)
            for row in 0..<rows.count {
                let vector = output + row * width
                var squares: Float = 0
                for c in 0..<width { squares += vector[c] * vector[c] }
                let scale = 1 / max(squares.squareRoot(), 1e-12)
                for c in 0..<width { result[(start + row) * width + c] = vector[c] * scale }
            }
        }
        return result
    }
}
