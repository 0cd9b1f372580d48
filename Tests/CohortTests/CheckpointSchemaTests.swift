import Foundation
import XCTest
@testable import Cohort

/// docs/formats.md is the checkpoint schema's documentation: this test writes checkpoints that
/// between them hold every group (an image model with batch norm, dropout, standardized input,
/// callbacks and a mid-epoch stop; a byte-level BPE language model; an imported BERT encoder with
/// its tokenizer and pooler) and compares every dataset and attribute with the document, both
/// ways: nothing written that is not documented, nothing documented that is never written.
final class CheckpointSchemaTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The documented dataset paths as patterns, and the documented attribute names.
    private func documented() throws -> (datasets: [(text: String, pattern: NSRegularExpression)], attributes: Set<String>) {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/formats.md"), encoding: .utf8)
        let section = try XCTUnwrap(text.components(separatedBy: "## Checkpoints").dropFirst().first?.components(separatedBy: "\n## ").first)
        var paths: [String] = []
        for line in section.split(separator: "\n") {
            // The layout block's lines, and the rows of "What else is in the file".
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("/") {
                let field = trimmed.split(separator: " ", maxSplits: 1)[0]
                paths += trimmed.hasPrefix("/normalization/mean,") ? ["/normalization/mean", "/normalization/std"] : [String(field)]
            } else if trimmed.hasPrefix("| `/") {
                let cell = trimmed.dropFirst(2).split(separator: "|")[0]
                paths += cell.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
            }
        }
        let datasets = try paths.map { path -> (String, NSRegularExpression) in
            // <name> stands for one or more path components; a|b at the end for alternatives.
            var pattern = NSRegularExpression.escapedPattern(for: String(path.dropFirst())).replacingOccurrences(of: "\\|", with: "|")
            pattern = pattern.replacingOccurrences(of: "<[^>]+>", with: ".+", options: .regularExpression)
            if let bar = pattern.lastIndex(of: "|"), let slash = pattern[..<bar].lastIndex(where: { $0 == "/" || $0 == "." }) {
                pattern = String(pattern[...slash]) + "(" + pattern[pattern.index(after: slash)...] + ")"
            }
            return (path, try NSRegularExpression(pattern: "^" + pattern + "$"))
        }
        let table = try XCTUnwrap(section.components(separatedBy: "| attribute | meaning |").dropFirst().first)
        var attributes = Set<String>()
        for line in table.split(separator: "\n").dropFirst() {
            guard line.hasPrefix("| `") else { break }
            let cell = line.dropFirst(2).split(separator: "|")[0]
            for name in cell.split(separator: ",") { attributes.insert(name.trimmingCharacters(in: CharacterSet(charactersIn: " `"))) }
        }
        return (datasets, attributes)
    }

    private func checkpoints(_ directory: String) throws -> [String] {
        let train = try writeSyntheticDataset("\(directory)/images.h5", rows: 96, seed: 3)
        var written: [String] = []
        func run(_ name: String, _ config: String, ranks: Int = 1) throws {
            try config.write(toFile: "\(directory)/\(name).yaml", atomically: true, encoding: .utf8)
            let result = try runCohort(ranks: ranks, ["train", "\(directory)/\(name).yaml"], directory: directory)
            XCTAssertEqual(result.status, 0, result.output + result.error)
            written += Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints")
        }
        let layers = """
                - {type: conv2d, filters: 4, kernel: 3}
                - {type: batch_norm}
                - {type: flatten}
                - {type: dropout, rate: 0.2}
                - {type: dense, units: 4}
            """
        try run("images", smallConfig(train: train, test: train, runDirectory: "\(directory)/runs/images", epochs: 2, batchSize: 16,
                                      extra: "  max_steps: 9\ncallbacks:\n  early_stopping: {monitor: train_loss, patience: 5, restore_best_weights: true}\n"
                                          + "  reduce_lr_on_plateau: {monitor: train_loss, patience: 2}\n", layers: layers)
                .replacingOnce("  train: \(train)", with: "  train: \(train)\n  normalize: standardize"))

        try String(repeating: "the cat sat on the mat and the dog sat on the log. ", count: 60)
            .write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        let prepared = try runCohort(ranks: 1, ["prepare", "text", "--input", "\(directory)/corpus.txt", "--out", "\(directory)/tokens",
                                                "--tokenizer", "bpe", "--vocab", "270"], directory: directory)
        XCTAssertEqual(prepared.status, 0, prepared.error)
        try run("language", """
            name: language
            run_dir: \(directory)/runs/language
            data: {train: \(directory)/tokens/train.h5, test: \(directory)/tokens/val.h5, window: 8}
            model:
              layers:
                - {type: embedding, vocabulary: 270, dim: 16}
                - {type: positional_embedding, max_length: 8}
                - {type: transformer_block, heads: 2}
                - {type: lm_head}
            optimizer: {type: sgd, learning_rate: 0.01, momentum: 0.9}
            training: {epochs: 1, batch_size: 8, max_steps: 3}
            """)

        let fixtures = Self.root.appendingPathComponent("Tests/Fixtures/huggingface").path
        let model = "\(directory)/bert"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] { try FileManager.default.copyItem(atPath: "\(fixtures)/bert-tiny/\(file)", toPath: "\(model)/\(file)") }
        try FileManager.default.copyItem(atPath: "\(fixtures)/bert-tiny-tokenizer.json", toPath: "\(model)/tokenizer.json")
        try (0..<32).map { #"{"text": "\#(["jesus wept", "and god said"][$0 % 2])", "label": "\#($0 % 2)"}"# }.joined(separator: "\n")
            .write(toFile: "\(directory)/texts.jsonl", atomically: true, encoding: .utf8)
        let texts = try runCohort(ranks: 1, ["prepare", "text-classification", "--input", "\(directory)/texts.jsonl", "--text", "text", "--label", "label",
                                             "--tokenizer", "\(model)/tokenizer.json", "--max-length", "8", "--out", "\(directory)/texts.h5"], directory: directory)
        XCTAssertEqual(texts.status, 0, texts.error)
        try run("bert", """
            name: bert
            run_dir: \(directory)/runs/bert
            data: {train: \(directory)/texts.h5, features: ids, labels: labels, normalize: none}
            model:
              init_from: {huggingface: \(model)}
              add_layers: [{type: sequence_pool, mode: mean}, {type: dense, units: 2}]
            optimizer: {type: adamw, learning_rate: 0.001}
            training: {epochs: 1, batch_size: 8, max_steps: 2}
            """)
        return written
    }

    func test_everyDatasetAndAttributeWrittenIsDocumentedAndEveryDocumentedOneIsWritten() throws {
        let directory = try temporaryDirectory(self)
        let (datasets, attributes) = try documented()
        XCTAssertGreaterThan(datasets.count, 10, datasets.map(\.text).joined(separator: ", "))
        XCTAssertGreaterThan(attributes.count, 15, attributes.sorted().joined(separator: ", "))
        var seenPatterns = Set<String>(), seenAttributes = Set<String>()
        for path in try checkpoints(directory) {
            let file = try HDF5File.open(path)
            for name in try file.stringsAttribute("datasets") {
                let range = NSRange(name.startIndex..., in: name)
                let matches = datasets.filter { $0.pattern.firstMatch(in: name, range: range) != nil }
                XCTAssertFalse(matches.isEmpty, "\(path): dataset /\(name) is not in docs/formats.md")
                seenPatterns.formUnion(matches.map(\.text))
            }
            for name in file.attributeNames() {
                XCTAssertTrue(attributes.contains(name), "\(path): attribute \(name) is not in docs/formats.md")
                seenAttributes.insert(name)
            }
        }
        XCTAssertEqual(Set(datasets.map(\.text)).subtracting(seenPatterns), [], "documented datasets no checkpoint here holds")
        XCTAssertEqual(attributes.subtracting(seenAttributes), [], "documented attributes no checkpoint here holds")
    }

    /// Every shipped config's checkpoint, as `cohort train` would write it before its first step,
    /// holds only documented datasets and attributes. The configs' data are stood in for by
    /// synthetic files of the same kind (images of 28 × 28, tables, token files of the model's
    /// vocabulary, sentence-classification ids), their published model by the tiny BERT fixture
    /// (with sentence-transformers' mean pooling, as all-MiniLM-L6-v2 has), the fine-tune's
    /// source by the checkpoint of the run it names, written just before, and the widths of
    /// gpt-100m and kjv-char-gpt-medium by 96.
    func test_aCheckpointOfEveryShippedConfigHoldsOnlyDocumentedNames() throws {
        let directory = try temporaryDirectory(self)
        let (datasets, attributes) = try documented()
        let configs = Self.root.appendingPathComponent("configs").path
        // The fine-tune starts from the 8-class run's checkpoint: that run first.
        let names = try FileManager.default.contentsOfDirectory(atPath: configs).filter { $0.hasSuffix(".yaml") }
            .map { String($0.dropLast(5)) }.sorted { ($0.hasSuffix("finetune") ? 1 : 0, $0) < ($1.hasSuffix("finetune") ? 1 : 0, $1) }
        XCTAssertGreaterThanOrEqual(names.count, 16)
        for name in names {
            let path = "\(configs)/\(name).yaml"
            // The two widest GPTs' blocks cut to 96 wide (the names are the same; a debug build takes 20 s to initialize gpt-100m's weights).
            let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "dim: 768", with: "dim: 96")
                .replacingOccurrences(of: "dim: 384", with: "dim: 96")
            let shipped = try TrainConfig.parse(text: text, file: path)
            var overrides = ["run_dir=\(directory)/runs/\(name)", "tensorboard=false"]
            overrides += try standInData(for: shipped, name: name, directory: directory)
            if let from = shipped.fineTuning.initFrom {
                overrides.append(from.huggingface ? "model.init_from.huggingface=\(try standInBERT(directory))"
                                 : "model.init_from.checkpoint=\(directory)/runs/\(URL(fileURLWithPath: from.checkpoint).deletingLastPathComponent().lastPathComponent)/checkpoints")
            }
            let trainer = try Trainer(config: try TrainConfig.parse(text: text, file: path, overrides: overrides), communicator: SingleProcess())
            trainer.log = { _ in }
            trainer.synchronizeInitialState()
            try trainer.saveCheckpoint()
            let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: trainer.checkpointDirectory).first, name)
            let file = try HDF5File.open(checkpoint)
            for dataset in try file.stringsAttribute("datasets") {
                let range = NSRange(dataset.startIndex..., in: dataset)
                XCTAssertTrue(datasets.contains { $0.pattern.firstMatch(in: dataset, range: range) != nil },
                              "\(name): dataset /\(dataset) is not in docs/formats.md")
            }
            for attribute in file.attributeNames() {
                XCTAssertTrue(attributes.contains(attribute), "\(name): attribute \(attribute) is not in docs/formats.md")
            }
            file.close()
        }
    }

    /// `--set` lines that point a shipped config at synthetic files of its data's kind.
    private func standInData(for config: TrainConfig, name: String, directory: String) throws -> [String] {
        let (train, test) = ("\(directory)/\(name)-train.h5", "\(directory)/\(name)-test.h5")
        let files = ["data.train=\(train)"] + (config.data.test == nil ? [] : ["data.test=\(test)"])
        if config.data.window != nil {
            let vocabulary = try XCTUnwrap((config.layers.first?.options as? EmbeddingOptions)?.vocabulary, name)
            for (path, seed) in [(train, 1), (test, 2)] { try writeTokens(path, vocabulary: vocabulary, count: 16_384, seed: UInt64(seed)) }
        } else if config.fineTuning.initFrom?.huggingface == true {
            let classes = try XCTUnwrap((config.addedLayers.last?.options as? DenseOptions)?.units, name)
            let model = try standInBERT(directory)
            try (0..<64).map { #"{"text": "\#(["jesus wept", "and god said", "in the beginning"][$0 % 3])", "label": "\#($0 % classes)"}"# }
                .joined(separator: "\n").write(toFile: "\(directory)/\(name).jsonl", atomically: true, encoding: .utf8)
            for out in [train, test] {
                let prepared = try runCohort(ranks: 1, ["prepare", "text-classification", "--input", "\(directory)/\(name).jsonl", "--text", "text",
                                                        "--label", "label", "--tokenizer", "\(model)/tokenizer.json", "--max-length", "8",
                                                        "--out", out], directory: directory)
                XCTAssertEqual(prepared.status, 0, prepared.error)
            }
        } else {
            let units = try XCTUnwrap((config.layers.last?.options as? DenseOptions)?.units, name)
            let classes = units == 1 ? 2 : units
            for (path, seed) in [(train, 3), (test, 4)] {
                if config.data.train.contains("tabular") {
                    try writeTable(path, rows: 128, columns: 8, classes: config.loss == .meanSquaredError ? nil : classes, seed: UInt64(seed))
                } else {
                    try writeSyntheticDataset(path, rows: 256, height: 28, width: 28, classes: classes, seed: UInt64(seed))
                }
            }
        }
        return files
    }

    /// The tiny BERT fixture as a published model directory, with its tokenizer and mean pooling.
    private func standInBERT(_ directory: String) throws -> String {
        let model = "\(directory)/stand-in-bert"
        guard !FileManager.default.fileExists(atPath: model) else { return model }
        let fixtures = Self.root.appendingPathComponent("Tests/Fixtures/huggingface").path
        try FileManager.default.createDirectory(atPath: "\(model)/1_Pooling", withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] { try FileManager.default.copyItem(atPath: "\(fixtures)/bert-tiny/\(file)", toPath: "\(model)/\(file)") }
        try FileManager.default.copyItem(atPath: "\(fixtures)/bert-tiny-tokenizer.json", toPath: "\(model)/tokenizer.json")
        try #"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#.write(toFile: "\(model)/1_Pooling/config.json", atomically: true, encoding: .utf8)
        return model
    }

    /// A token file (`cohort prepare text`'s format) of random ids below `vocabulary`.
    private func writeTokens(_ path: String, vocabulary: Int, count: Int, seed: UInt64) throws {
        var generator = Generator(seed: seed)
        let file = try HDF5File.create(path)
        try file.write("tokens", (0..<count).map { _ in UInt8(generator.nextIndex(below: vocabulary)) }, shape: [count])
        try file.setAttribute("vocabulary", (0..<vocabulary).map { "t\($0)" })
        try file.setAttribute("tokenizer", vocabulary == 256 ? "bytes" : "chars")
        try file.setAttribute("format", "cohort-tokens")
        try file.setAttribute("tokens_count", [Int64(count)])
        try file.flush()
        file.close()
    }

    /// A table (`cohort prepare csv`'s format): float features with their mean and std, and class
    /// ids, or float targets when `classes` is nil.
    private func writeTable(_ path: String, rows: Int, columns: Int, classes: Int?, seed: UInt64) throws {
        var generator = Generator(seed: seed)
        let file = try HDF5File.create(path)
        try file.write("features", (0..<(rows * columns)).map { _ in generator.nextUnitFloat() }, shape: [rows, columns])
        if let classes {
            try file.write("labels", (0..<rows).map { Int64($0 % classes) }, shape: [rows])
        } else {
            try file.write("labels", (0..<rows).map { _ in generator.nextUnitFloat() }, shape: [rows])
        }
        try file.setAttribute("mean", [Double](repeating: 0.5, count: columns))
        try file.setAttribute("std", [Double](repeating: 0.3, count: columns))
        try file.flush()
        file.close()
    }
}
