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
