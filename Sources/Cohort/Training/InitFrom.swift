import Foundation

/// `model.init_from`: where the weights come from and which of them a new run loads.
extension FineTuning.InitFrom {
    /// `model.init_from.checkpoint`: a checkpoint file, or a directory of them (its newest that verifies).
    func sourceCheckpoint() throws -> (path: String, checkpoint: Checkpoint) {
        let path = checkpoint
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CohortError("model.init_from.checkpoint: \(path): no such file or directory")
        }
        guard isDirectory.boolValue else { return (path, try Checkpoint.read(from: path)) }
        var reasons: [String] = []
        for candidate in Trainer.checkpoints(in: path) {
            do {
                return (candidate, try Checkpoint.read(from: candidate))
            } catch let error as CohortError {
                reasons.append(error.message)
            }
        }
        throw CohortError("model.init_from.checkpoint: \(path): no checkpoint that verifies\(reasons.isEmpty ? "" : " (" + reasons.joined(separator: "; ") + ")")")
    }

    /// Copies the tensors `from` selects out of `source` into `model` by name and shape;
    /// returns the lines saying what was loaded, skipped and left freshly initialized.
    func load(into model: Model, from source: Checkpoint) throws -> [String] {
        let from = self
        let parameters = model.parameters
        let all = parameters.entries.map { (CheckpointSchema.parameter($0.name), $0, parameters.values.baseAddress! + $0.offset) }
            + parameters.bufferEntries.map { (CheckpointSchema.buffer($0.name), $0, parameters.buffers.baseAddress! + $0.offset) }
        let names = all.map { $0.1.name }
        let wanted = try from.layers.map { try FineTuning.select($0, from: names, key: "model.init_from.layers") } ?? Set(names)
        let skipped = try FineTuning.select(from.skip, from: names, key: "model.init_from.skip")
        var loaded: [String] = [], mismatched: [String] = [], fresh: [String] = []
        for (stored, entry, pointer) in all {
            guard wanted.contains(entry.name), !skipped.contains(entry.name) else { fresh.append(entry.name); continue }
            guard let tensor = source.tensors[stored] else { fresh.append("\(entry.name) (not in the checkpoint)"); continue }
            guard tensor.shape == entry.shape else {
                mismatched.append("\(entry.name) (\(tensor.shape) there, \(entry.shape) here)")
                continue
            }
            pointer.update(from: tensor.values, count: entry.count)
            loaded.append(entry.name)
        }
        let list = { (items: [String]) in items.isEmpty ? "none" : items.joined(separator: ", ") }
        return ["init_from \(from.checkpoint): loaded \(loaded.count) tensors: \(list(loaded))",
                "init_from: skipped for their shape \(mismatched.count): \(list(mismatched)); initialized fresh \(fresh.count): \(list(fresh))"]
    }
}

/// What `model.init_from` brings before the model is built: the checkpoint (a Cohort one, or a
/// published model imported), and what rides along in every checkpoint of the run for the export
/// (BERT's unused pooler, the tokenizer.json).
struct InitSource {
    let from: FineTuning.InitFrom
    let path: String
    let checkpoint: Checkpoint
    var carried: [String: (shape: [Int], values: [Float])] {
        checkpoint.tensors.filter { $0.key.hasPrefix(CheckpointSchema.huggingFacePrefix) }
    }

    init?(_ fineTuning: FineTuning) throws {
        guard let from = fineTuning.initFrom else { return nil }
        self.from = from
        (path, checkpoint) = from.huggingface ? (from.checkpoint, try HuggingFace.importModel(from: from.checkpoint).checkpoint)
            : try from.sourceCheckpoint()
    }

    /// A model started from another run's weights keeps that run's input normalization unless
    /// the config gives its own: the loaded layers expect it. Returns the line saying so.
    func lendNormalization(to data: inout DataConfig) -> String? {
        guard let stored = checkpoint.normalization, data.normalize == .standardize, data.mean == nil else { return nil }
        (data.mean, data.std) = (stored.mean, stored.std)
        return "init_from \(from.checkpoint): standardizing with its training statistics (mean \(stored.mean), std \(stored.std))"
    }

    /// Whether init_from overwrites the weight `name` of this shape whole (no layers or skip
    /// lists): such weights need no random values first.
    func willLoad(name: String, shape: [Int]) -> Bool {
        from.layers == nil && from.skip.isEmpty && checkpoint.tensors[CheckpointSchema.parameter(name)]?.shape == shape
    }
}

extension FineTuning {
    /// Fixes the parameters `model.freeze` names: returns them, the contiguous ranges of the flat
    /// buffer that still train (nil when nothing is frozen) and the line saying so.
    func freeze(in model: Model) throws -> (frozen: Set<String>, trainableSpans: [Range<Int>]?, line: String?) {
        let entries = model.parameters.entries
        let frozen = try FineTuning.select(freeze, from: entries.map(\.name), key: "model.freeze")
        guard !frozen.isEmpty else { return ([], nil, nil) }
        model.freeze(frozen, batchNormInference: frozenBatchNorm == .inference)
        let spans = FrozenSpansSum.spans(of: entries.filter { !frozen.contains($0.name) })
        let count = entries.filter { frozen.contains($0.name) }.reduce(0) { $0 + $1.count }
        return (frozen, spans, "frozen: \(count) of \(model.parameters.count) parameters (\(frozen.count) tensors); batch norm among them: "
                    + (frozenBatchNorm == .inference ? "running statistics, fixed" : "batch statistics"))
    }
}
