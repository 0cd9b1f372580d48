import Foundation
import XCTest
@testable import Cohort

/// Published models in and out: a GPT-2 written by `transformers` (Tests/Fixtures/huggingface,
/// from make_huggingface_fixtures.py) imported as a Cohort model gives `transformers`' logits,
/// loss and gradients; exported back it is the same weights, bit for bit; what Cohort does not
/// implement is refused by name.
final class HuggingFaceTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/huggingface").path
    private var directory = ""

    override func setUpWithError() throws { directory = try temporaryDirectory(self) }

    /// The imported model for sequences of `length`, its parameters restored from `checkpoint`.
    private func model(_ checkpoint: Checkpoint, length: Int, batch: Int) throws -> Model {
        let config = try TrainConfig.parse(text: checkpoint.config, file: "imported")
        let model = try Model(inputShape: [length], layers: config.layers, maxBatch: batch, seed: 0)
        try checkpoint.restoreModel(model, source: "imported")
        return model
    }

    func test_anImportedGPT2GivesTransformersLogitsLossAndGradients() throws {
        let imported = try HuggingFace.importModel(from: "\(Self.fixtures)/gpt2-tiny")
        XCTAssertTrue(imported.notes[0].hasPrefix("gpt2: 2 blocks, 4 heads, width 32, vocabulary 256, 32 positions, gelu_new, tied head"),
                      imported.notes.joined(separator: "\n"))
        let expected = try HDF5File.open("\(Self.fixtures)/gpt2-tiny-expected.h5")
        let (ids, shape): ([Int64], [Int]) = try expected.read("ids")
        let targets: [Int64] = try expected.read("targets").values
        let logits: [Float] = try expected.read("logits").values
        let (batch, length, vocabulary) = (shape[0], shape[1], 256)
        let model = try model(imported.checkpoint, length: length, batch: batch)

        let tokenIds = ids.map(Float.init)  // alive until backward, which reads it again
        let output = model.forward(tokenIds, batch: batch, training: false)
        let cohort = Array(UnsafeBufferPointer(start: output, count: batch * length * vocabulary))
        let difference = maxAbsoluteDifference(["logits": cohort], ["logits": logits])
        print("imported gpt2: logits within \(difference) of transformers'")
        XCTAssertLessThanOrEqual(difference, 1e-5)

        // One training step's loss and gradients (dropout is off in the fixture).
        let tokens = batch * length
        model.parameters.zeroGradients()
        let trained = model.forward(tokenIds, batch: batch, training: true)
        var gradient = [Float](repeating: 0, count: tokens * vocabulary)
        let totals = Loss.softmaxCrossEntropy(smoothing: 0).evaluate(outputs: trained, labels: targets.map(Int32.init), batch: tokens,
                                                                     width: vocabulary, gradient: &gradient, gradientScale: 1 / Float(tokens))
        let loss: [Double] = try expected.read("loss").values
        XCTAssertEqual(totals.lossSum / Double(tokens), loss[0], accuracy: 1e-5)
        model.backward(outputGradient: gradient, batch: batch)
        let names = ["wte.weight": "embedding_1/weight", "wpe.weight": "positional_embedding_1/weight", "h.1.attn.c_attn.weight":
                     "transformer_block_2/attention/qkv/weight", "h.0.mlp.c_fc.bias": "transformer_block_1/fc/bias",
                     "h.0.mlp.c_proj.weight": "transformer_block_1/proj/weight", "h.1.ln_1.weight": "transformer_block_2/ln_1/weight",
                     "ln_f.bias": "layer_norm_1/bias"]
        for (torchName, cohortName) in names {
            let reference: [Float] = try expected.read("gradients/\(torchName)").values
            let entry = try XCTUnwrap(model.parameters.entries.first { $0.name == cohortName })
            let ours = Array(model.parameters.gradients[entry.offset..<(entry.offset + entry.count)])
            let scale = max(reference.map(abs).max() ?? 0, 1e-6)
            let relative = maxAbsoluteDifference(["g": ours], ["g": reference]) / scale
            XCTAssertLessThanOrEqual(relative, 1e-4, "\(torchName) → \(cohortName): \(relative) of its largest element")
        }
    }

    func test_exportingAnImportedGPT2GivesTheSameWeightsBitForBit() throws {
        let source = "\(Self.fixtures)/gpt2-tiny"
        let imported = try HuggingFace.importModel(from: source)
        let (config, weights) = try HuggingFace.exportGPT2(imported.checkpoint)
        let path = "\(directory)/model.safetensors"
        try weights.write(to: URL(fileURLWithPath: path))
        let original = try SafetensorsFile.read("\(source)/model.safetensors").tensors
        let exported = try SafetensorsFile.read(path).tensors
        XCTAssertEqual(Set(exported.keys), Set(original.keys))
        for (name, tensor) in original {
            XCTAssertEqual(exported[name]?.shape, tensor.shape, name)
            XCTAssertTrue(exported[name]?.values.elementsEqual(tensor.values) { $0.bitPattern == $1.bitPattern } == true, name)
        }
        let written = try XCTUnwrap(JSONSerialization.jsonObject(with: config) as? [String: Any])
        let read = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(source)/config.json"))) as? [String: Any])
        for key in ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "activation_function", "layer_norm_epsilon", "model_type"] {
            XCTAssertEqual("\(written[key] ?? "none")", "\(read[key] ?? "none")", key)
        }
        // And it imports again to the same checkpoint tensors.
        let again = "\(directory)/again"
        try FileManager.default.createDirectory(atPath: again, withIntermediateDirectories: true)
        try config.write(to: URL(fileURLWithPath: "\(again)/config.json"))
        try weights.write(to: URL(fileURLWithPath: "\(again)/model.safetensors"))
        let reimported = try HuggingFace.importModel(from: again)
        XCTAssertEqual(reimported.checkpoint.tensors.keys.sorted(), imported.checkpoint.tensors.keys.sorted())
        for (name, tensor) in imported.checkpoint.tensors { XCTAssertEqual(reimported.checkpoint.tensors[name]?.values, tensor.values, name) }
    }

    func test_whatCohortDoesNotImplementIsRefusedByName() throws {
        let source = "\(Self.fixtures)/gpt2-tiny"
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(source)/config.json"))) as? [String: Any])
        let weights = try Data(contentsOf: URL(fileURLWithPath: "\(source)/model.safetensors"))
        func refusal(_ change: (inout [String: Any]) -> Void, weights: Data? = nil) throws -> String {
            let variant = "\(directory)/variant-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: variant, withIntermediateDirectories: true)
            var edited = config
            change(&edited)
            try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: "\(variant)/config.json"))
            try (weights ?? Data(contentsOf: URL(fileURLWithPath: "\(source)/model.safetensors"))).write(to: URL(fileURLWithPath: "\(variant)/model.safetensors"))
            do {
                _ = try HuggingFace.importModel(from: variant)
                return "imported"
            } catch let error as CohortError {
                return error.message
            }
        }
        XCTAssertTrue(try refusal { $0["rotary_dim"] = 16 }.contains("rotary_dim is a setting Cohort does not implement for gpt2"))
        XCTAssertTrue(try refusal { $0["scale_attn_by_inverse_layer_idx"] = true }.contains("scale_attn_by_inverse_layer_idx true is not implemented"))
        XCTAssertTrue(try refusal { $0["activation_function"] = "relu" }.contains("activation_function 'relu' is not implemented"))
        XCTAssertTrue(try refusal { $0["model_type"] = "llama" }.contains("model_type 'llama' is not a family Cohort imports"))
        XCTAssertTrue(try refusal { $0["n_layer"] = 3 }.contains("no tensor 'h.2.ln_1.weight'"))
        XCTAssertTrue(try refusal { $0["n_embd"] = 64 }.contains("'wte.weight' has shape [256, 32]"))
        XCTAssertTrue(try refusal { $0["n_layer"] = 1 }.contains("tensor 'h.1.attn.c_attn.bias' has no place in a gpt2 model"))
        // init_from names one source; without model.layers the published model's own are used.
        let both = "data: {train: t.h5, window: 8}\nmodel:\n  init_from: {huggingface: \(source), checkpoint: c.h5}\n"
        XCTAssertThrowsError(try TrainConfig.parse(text: both, file: "both.yaml")) {
            XCTAssertTrue("\($0)".contains("init_from takes checkpoint (a Cohort checkpoint) or huggingface (a model directory), one of them"), "\($0)")
        }
        let published = try TrainConfig.parse(text: "data: {train: t.h5, window: 8}\nmodel:\n  init_from: {huggingface: \(source)}\n",
                                              file: "published.yaml").resolvingPublishedModel()
        XCTAssertEqual(published.layers.map(\.type), ["embedding", "positional_embedding", "transformer_block", "transformer_block",
                                                      "layer_norm", "lm_head"])
        XCTAssertEqual(try TrainConfig.parse(text: published.text, file: "stored").layers, published.layers, "the stored text lists the layers")
        // A header that claims more bytes than the file holds.
        var damaged = weights
        damaged.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        XCTAssertTrue(try refusal({ _ in }, weights: damaged).contains("not a safetensors file"))
        var truncated = weights.prefix(weights.count - 100)
        truncated.append(Data())
        XCTAssertTrue(try refusal({ _ in }, weights: truncated).contains("does not fit its data_offsets"))
    }

    /// The whole path through the command line: `model.init_from: {huggingface: DIR}` with the
    /// model's own layers, fine-tuned 20 steps on 2 ranks over byte tokens, exported with
    /// `--format huggingface` and imported again to the very parameters the run ended with.
    func test_aPublishedGPT2FineTunedOnTwoRanksExportsAndImportsBack() throws {
        let text = (0..<400).map { "In the beginning \($0 % 7) was the word, and the word was \($0 % 13).\n" }.joined()
        try text.write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        let prepared = try runCohort(ranks: 1, ["prepare", "text", "--input", "\(directory)/corpus.txt", "--out", "\(directory)/tokens",
                                                "--tokenizer", "bytes"], directory: directory)
        XCTAssertEqual(prepared.status, 0, prepared.error)
        let config = """
            name: gpt2-tiny-finetune
            seed: 1
            run_dir: \(directory)/runs/finetune
            data: {train: \(directory)/tokens/train.h5, test: \(directory)/tokens/val.h5, window: 16}
            model:
              init_from: {huggingface: \(Self.fixtures)/gpt2-tiny}
            optimizer: {type: adamw, learning_rate: 0.001, weight_decay: 0.01, clip_grad_norm: 1.0}
            training: {epochs: 1, batch_size: 4, max_steps: 20}
            """
        try config.write(toFile: "\(directory)/finetune.yaml", atomically: true, encoding: .utf8)
        let trained = try runCohort(ranks: 2, ["train", "\(directory)/finetune.yaml"], directory: directory)
        XCTAssertEqual(trained.status, 0, trained.output + trained.error)
        XCTAssertTrue(trained.output.contains("init_from: reading \(Self.fixtures)/gpt2-tiny"), trained.output)
        XCTAssertTrue(trained.output.contains("stopped after 20 steps"), trained.output)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/finetune/checkpoints").first)

        let exported = try runCohort(ranks: 1, ["export", checkpoint, "--format", "huggingface", "--out", "\(directory)/exported"],
                                     directory: directory)
        XCTAssertEqual(exported.status, 0, exported.error)
        let again = try runCohort(ranks: 1, ["export", checkpoint, "--format", "huggingface", "--out", "\(directory)/exported"],
                                  directory: directory)
        XCTAssertEqual(again.status, 1, "an export never writes over a model directory")
        XCTAssertTrue(again.error.contains("exists and is not an empty directory"), again.error)
        let imported = try runCohort(ranks: 1, ["import", "huggingface", "\(directory)/exported", "--out", "\(directory)/imported.h5"],
                                     directory: directory)
        XCTAssertEqual(imported.status, 0, imported.error)
        let trainedParameters = try checkpointParameters(checkpoint)
        let importedParameters = try checkpointParameters("\(directory)/imported.h5")
        XCTAssertEqual(trainedParameters.keys.sorted(), importedParameters.keys.sorted())
        XCTAssertTrue(trainedParameters == importedParameters, "export then import is bitwise for the weights")
        XCTAssertFalse(trainedParameters == (try HuggingFace.importModel(from: "\(Self.fixtures)/gpt2-tiny").checkpoint.tensors
            .mapValues(\.values)), "the run trained the model")
    }

    /// Half-precision safetensors (F16, BF16) read as float32; an unknown dtype is refused by name.
    func test_halfPrecisionTensorsAreReadAndOtherDtypesRefused() throws {
        let values: [Float] = [1, -2.5, 0.333251953125, 65504]
        let f16 = values.map { Float16($0).bitPattern }
        let bf16 = values.map { UInt16($0.bitPattern >> 16) }
        let tensors = [SafetensorsExport.Tensor(name: "a", dtype: "F16", shape: [2, 2], bytes: f16.withUnsafeBufferPointer { Data(buffer: $0) }),
                       SafetensorsExport.Tensor(name: "b", dtype: "BF16", shape: [4], bytes: bf16.withUnsafeBufferPointer { Data(buffer: $0) })]
        let path = "\(directory)/half.safetensors"
        try SafetensorsExport.encode(tensors, metadata: [:]).write(to: URL(fileURLWithPath: path))
        let read = try SafetensorsFile.read(path).tensors
        XCTAssertEqual(read["a"]?.shape, [2, 2])
        XCTAssertEqual(read["a"]?.values, values.map { Float(Float16($0)) })
        XCTAssertEqual(read["b"]?.values, values.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) })
        let int8 = [SafetensorsExport.Tensor(name: "q", dtype: "I8", shape: [4], bytes: Data([1, 2, 3, 4]))]  // quantized weights
        try SafetensorsExport.encode(int8, metadata: [:]).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SafetensorsFile.read(path)) {
            XCTAssertTrue("\($0)".contains("tensor 'q' is I8; Cohort reads F32, F16, BF16, I64 and I32"), "\($0)")
        }
    }

    /// `cohort import` never writes over a file; `cohort tokenize` prints tokenizers' ids.
    func test_importRefusesAnExistingFileAndTokenizePrintsIds() throws {
        let existing = "\(directory)/existing.h5"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: existing))
        let refused = try runCohort(ranks: 1, ["import", "huggingface", "\(Self.fixtures)/gpt2-tiny", "--out", existing], directory: directory)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("exists; choose a new file"), refused.error)
        XCTAssertEqual(try String(contentsOfFile: existing, encoding: .utf8), "keep me")
        let refusedBERT = try runCohort(ranks: 1, ["import", "huggingface", "\(Self.fixtures)/wordpiece-kjv", "--out", "\(directory)/x.h5"],
                                        directory: directory)
        XCTAssertEqual(refusedBERT.status, 1)
        XCTAssertTrue(refusedBERT.error.contains("config.json: no such file"), refusedBERT.error)

        try "In the beginning God created the heaven and the earth.\nCafé naïve\n".write(toFile: "\(directory)/lines.txt", atomically: true, encoding: .utf8)
        let tokenized = try runCohort(ranks: 1, ["tokenize", "--tokenizer", "\(Self.fixtures)/wordpiece-kjv/tokenizer.json",
                                                 "--input", "\(directory)/lines.txt", "--max-length", "8"], directory: directory)
        XCTAssertEqual(tokenized.status, 0, tokenized.error)
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/wordpiece-kjv/expected.json")))
            as? [String: Any])
        let lines = try XCTUnwrap(expected["lines"] as? [String])
        let ids = try XCTUnwrap(expected["ids"] as? [[Int]])
        let first = try XCTUnwrap(lines.firstIndex(of: "In the beginning God created the heaven and the earth."))
        let printed = tokenized.output.split(separator: "\n").map { $0.split(separator: " ").compactMap { Int($0) } }
        XCTAssertEqual(printed.count, 2)
        XCTAssertEqual(printed.first, Array(ids[first].prefix(7)) + [ids[first].last!], "truncated to 8 with [SEP] kept")
    }

    /// BERT: `bert_embeddings` and post-LN `encoder_block`s with the padding mask give
    /// transformers' last hidden state, its mean over the real tokens and the gradients of that
    /// mean, for a batch whose second row is padded.
    func test_anImportedBERTGivesTransformersHiddenStatesPoolingAndGradients() throws {
        let imported = try HuggingFace.importModel(from: "\(Self.fixtures)/bert-tiny")
        XCTAssertTrue(imported.notes[0].hasPrefix("bert: 2 encoder blocks, 4 heads, width 32, feed-forward 64, vocabulary 64"), imported.notes.joined(separator: "\n"))
        XCTAssertTrue(imported.notes.contains { $0.hasPrefix("pooler.dense: ") }, imported.notes.joined(separator: "\n"))
        let expected = try HDF5File.open("\(Self.fixtures)/bert-tiny-expected.h5")
        let (ids, shape): ([Int64], [Int]) = try expected.read("ids")
        let hidden: [Float] = try expected.read("hidden").values
        let pooled: [Float] = try expected.read("pooled").values
        let probe: [Float] = try expected.read("probe").values
        let (batch, length, width) = (shape[0], shape[1], 32)
        let tokens = ids.map(Float.init)

        let encoder = try model(imported.checkpoint, length: length, batch: batch)
        let states = Array(UnsafeBufferPointer(start: encoder.forward(tokens, batch: batch, training: false), count: batch * length * width))
        // The real positions' states: at padded ones Cohort computes no attention or MLP (they
        // hold the padding's embedding through the residual path), transformers computes both.
        var real: [Int] = []
        for b in 0..<batch {
            let row = Array(ids[(b * length)..<((b + 1) * length)])
            let count = (row.lastIndex { $0 != 0 } ?? 0) + 1
            real += (0..<count).map { b * length + $0 }
        }
        XCTAssertLessThan(real.count, batch * length, "the fixture pads a row")
        let pick = { (values: [Float]) in real.flatMap { values[($0 * width)..<(($0 + 1) * width)] } }
        let difference = maxAbsoluteDifference(["hidden": pick(states)], ["hidden": pick(hidden)])
        print("imported bert: hidden states within \(difference) of transformers'")
        XCTAssertLessThanOrEqual(difference, 1e-5)

        let config = try TrainConfig.parse(text: imported.checkpoint.config, file: "imported")
        let pooling = try Model(inputShape: [length], layers: config.layers + [LayerSpec(SequencePoolOptions(mode: .mean))], maxBatch: batch, seed: 0)
        try imported.checkpoint.restoreModel(pooling, source: "imported")
        pooling.parameters.zeroGradients()
        let means = Array(UnsafeBufferPointer(start: pooling.forward(tokens, batch: batch, training: true), count: batch * width))
        XCTAssertLessThanOrEqual(maxAbsoluteDifference(["pooled": means], ["pooled": pooled]), 1e-5)
        pooling.backward(outputGradient: probe, batch: batch)
        let names = ["embeddings.word_embeddings.weight": "bert_embeddings_1/word/weight",
                     "embeddings.position_embeddings.weight": "bert_embeddings_1/position/weight",
                     "embeddings.token_type_embeddings.weight": "bert_embeddings_1/token_type/weight",
                     "embeddings.LayerNorm.weight": "bert_embeddings_1/ln/weight",
                     "encoder.layer.0.attention.output.LayerNorm.bias": "encoder_block_1/ln_1/bias",
                     "encoder.layer.1.output.LayerNorm.weight": "encoder_block_2/ln_2/weight",
                     "encoder.layer.1.attention.self.value.bias": "encoder_block_2/attention/qkv/bias"]
        for (torchName, cohortName) in names {
            var reference: [Float] = try expected.read("gradients/\(torchName)").values
            let entry = try XCTUnwrap(pooling.parameters.entries.first { $0.name == cohortName })
            var ours = Array(pooling.parameters.gradients[entry.offset..<(entry.offset + entry.count)])
            if torchName.hasSuffix("value.bias") { ours = Array(ours[(2 * width)...]) }
            if reference.count != ours.count { reference = Array(reference.prefix(ours.count)) }
            let scale = max(reference.map(abs).max() ?? 0, 1e-6)
            let relative = maxAbsoluteDifference(["g": ours], ["g": reference]) / scale
            XCTAssertLessThanOrEqual(relative, 1e-4, "\(torchName) → \(cohortName): \(relative) of its largest element")
        }
    }

    /// Sentence pairs: a model imported with its tokenizer takes `[SEP]` (id 3) as the end of
    /// segment A, so `bert_embeddings` gives the rest token type 1 and the real positions'
    /// states equal transformers' with `token_type_ids`; `cohort prepare text-classification
    /// --text-pair` writes the pairs and a 2-rank fine-tuning run reads them.
    func test_sentencePairsTakeTokenTypeOneAfterTheFirstSeparator() throws {
        let source = "\(directory)/bert-with-tokenizer"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: "\(Self.fixtures)/bert-tiny/\(file)", toPath: "\(source)/\(file)")
        }
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/bert-tiny-tokenizer.json", toPath: "\(source)/tokenizer.json")
        let imported = try HuggingFace.importModel(from: source)
        XCTAssertTrue(imported.checkpoint.config.contains("sep_id: 3"), imported.checkpoint.config)
        let expected = try HDF5File.open("\(Self.fixtures)/bert-tiny-pairs.h5")
        let (ids, shape): ([Int64], [Int]) = try expected.read("ids")
        let types: [Int64] = try expected.read("types").values
        let hidden: [Float] = try expected.read("hidden").values
        let (batch, length, width) = (shape[0], shape[1], 32)
        let encoder = try model(imported.checkpoint, length: length, batch: batch)
        let states = Array(UnsafeBufferPointer(start: encoder.forward(ids.map(Float.init), batch: batch, training: false), count: batch * length * width))
        let real = ids.indices.filter { index in ids[(index / length * length)..<((index / length + 1) * length)].dropFirst(index % length).contains { $0 != 0 } }
        XCTAssertTrue(real.contains { types[$0] == 1 } && real.count < ids.count, "the fixture has type-1 and padded positions")
        let pick = { (values: [Float]) in real.flatMap { values[($0 * width)..<(($0 + 1) * width)] } }
        let difference = maxAbsoluteDifference(["hidden": pick(states)], ["hidden": pick(hidden)])
        print("imported bert, sentence pairs: hidden states within \(difference) of transformers'")
        XCTAssertLessThanOrEqual(difference, 1e-5)

        var lines = ""
        for index in 0..<64 {
            let (premise, hypothesis) = (["in the beginning god created the heaven", "jesus wept"][index % 2], ["and the earth", "let there be light"][index / 2 % 2])
            lines += #"{"premise": "\#(premise)", "hypothesis": "\#(hypothesis)", "label": "\#(index / 2 % 2 == 0 ? "entails" : "neutral")"}"# + "\n"
        }
        try lines.write(toFile: "\(directory)/pairs.jsonl", atomically: true, encoding: .utf8)
        let prepared = try runCohort(ranks: 1, ["prepare", "text-classification", "--input", "\(directory)/pairs.jsonl", "--text", "premise",
                                                "--text-pair", "hypothesis", "--label", "label", "--tokenizer", "\(source)/tokenizer.json",
                                                "--max-length", "12", "--out", "\(directory)/pairs.h5"], directory: directory)
        XCTAssertEqual(prepared.status, 0, prepared.error)
        let file = try HDF5File.open("\(directory)/pairs.h5")
        let written: [Int32] = try file.read("ids").values
        let tokenizer = try WordPiece(tokenizerJSON: "\(source)/tokenizer.json")
        let pair = tokenizer.encodePair("in the beginning god created the heaven", "and the earth", maxLength: 12)
        XCTAssertEqual(written[0..<pair.count].map(Int.init), pair)
        XCTAssertEqual(pair.filter { $0 == 3 }.count, 2, "[SEP] twice")
        let config = """
            name: pairs
            seed: 0
            run_dir: \(directory)/runs/pairs
            data: {train: \(directory)/pairs.h5, features: ids, labels: labels, normalize: none}
            model:
              init_from: {huggingface: \(source)}
              add_layers:
                - {type: sequence_pool, mode: first}
                - {type: dense, units: 2, init: normal}
            optimizer: {type: adamw, learning_rate: 0.001}
            training: {epochs: 2, batch_size: 8}
            """
        try config.write(toFile: "\(directory)/pairs.yaml", atomically: true, encoding: .utf8)
        let trained = try runCohort(ranks: 2, ["train", "\(directory)/pairs.yaml"], directory: directory)
        XCTAssertEqual(trained.status, 0, trained.output + trained.error)
        // The same pairs with a model imported without its tokenizer (no sep_id): refused, not trained as one text.
        try config.replacingOccurrences(of: "huggingface: \(source)}", with: "huggingface: \(Self.fixtures)/bert-tiny}")
            .replacingOccurrences(of: "runs/pairs", with: "runs/no-sep").write(toFile: "\(directory)/no-sep.yaml", atomically: true, encoding: .utf8)
        let refused = try runCohort(ranks: 1, ["train", "\(directory)/no-sep.yaml"], directory: directory)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("pairs.h5: holds sentence pairs whose first text ends at id 3, but bert_embeddings_1 has no sep_id"),
                      refused.error)
    }

    /// `BertForSequenceClassification`: the encoder, then its [CLS] pooler (dense + tanh), dropout
    /// and classifier as Cohort layers, giving transformers' logits; the export writes the same
    /// architecture back with the same tensors, bit for bit.
    func test_aSequenceClassifierGivesTransformersLogitsAndExportsBack() throws {
        let source = "\(Self.fixtures)/bert-tiny-classifier"
        let imported = try HuggingFace.importModel(from: source)
        XCTAssertTrue(imported.notes.contains { $0.hasPrefix("BertForSequenceClassification: pooler") }, imported.notes.joined(separator: "\n"))
        let expected = try HDF5File.open("\(Self.fixtures)/bert-tiny-classifier.h5")
        let (ids, shape): ([Int64], [Int]) = try expected.read("ids")
        let logits: [Float] = try expected.read("logits").values
        let classifier = try model(imported.checkpoint, length: shape[1], batch: shape[0])
        XCTAssertEqual(classifier.outputShape, [3])
        let ours = Array(UnsafeBufferPointer(start: classifier.forward(ids.map(Float.init), batch: shape[0], training: false), count: logits.count))
        let difference = maxAbsoluteDifference(["logits": ours], ["logits": logits])
        print("imported BertForSequenceClassification: logits within \(difference) of transformers'")
        XCTAssertLessThanOrEqual(difference, 1e-5)

        let files = try HuggingFace.export(imported.checkpoint)
        let written = try XCTUnwrap(JSONSerialization.jsonObject(with: files[0].bytes) as? [String: Any])
        XCTAssertEqual(written["architectures"] as? [String], ["BertForSequenceClassification"])
        XCTAssertEqual(written["num_labels"] as? Int, 3)
        let path = "\(directory)/classifier.safetensors"
        try files[1].bytes.write(to: URL(fileURLWithPath: path))
        let original = try SafetensorsFile.read("\(source)/model.safetensors").tensors
        let exported = try SafetensorsFile.read(path).tensors
        XCTAssertEqual(Set(exported.keys), Set(original.keys).subtracting(["bert.embeddings.position_ids"]))
        for (name, tensor) in exported {
            XCTAssertTrue(original[name]?.values.elementsEqual(tensor.values) { $0.bitPattern == $1.bitPattern } == true, name)
        }
    }

    /// A sentence-transformers directory (bert-tiny with a WordPiece tokenizer and mean pooling)
    /// through the command line: `cohort import` then `cohort embed` give the embeddings
    /// sentence-transformers' encode computes (the fixture script computes them its way).
    func test_importedSentenceModelEmbedsAsSentenceTransformers() throws {
        let model = "\(directory)/sentence-model"
        try FileManager.default.createDirectory(atPath: "\(model)/1_Pooling", withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: "\(Self.fixtures)/bert-tiny/\(file)", toPath: "\(model)/\(file)")
        }
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/bert-tiny-tokenizer.json", toPath: "\(model)/tokenizer.json")
        try #"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#.write(toFile: "\(model)/1_Pooling/config.json",
                                                                                       atomically: true, encoding: .utf8)
        let imported = try runCohort(ranks: 1, ["import", "huggingface", model, "--out", "\(directory)/sentence.h5"], directory: directory)
        XCTAssertEqual(imported.status, 0, imported.error)
        XCTAssertTrue(imported.output.contains("mean pooling (sequence_pool mean)"), imported.output)
        let expected = try HDF5File.open("\(Self.fixtures)/bert-tiny-sentences.h5")
        let texts = try expected.stringsAttribute("texts")
        try (texts.joined(separator: "\n") + "\n").write(toFile: "\(directory)/texts.txt", atomically: true, encoding: .utf8)
        let embedded = try runCohort(ranks: 1, ["embed", "\(directory)/sentence.h5", "--data", "\(directory)/texts.txt",
                                                "--out", "\(directory)/embeddings.h5", "--max-length", "16", "--batch-size", "4"],
                                     directory: directory)
        XCTAssertEqual(embedded.status, 0, embedded.error)
        let ours: [Float] = try HDF5File.open("\(directory)/embeddings.h5").read("embeddings").values
        let reference: [Float] = try expected.read("embeddings").values
        XCTAssertEqual(ours.count, texts.count * 32)
        let difference = maxAbsoluteDifference(["e": ours], ["e": reference])
        print("cohort embed: within \(difference) of the sentence-transformers computation")
        XCTAssertLessThanOrEqual(difference, 1e-5)
    }

    /// BERT export then import: the same tensors bit for bit (q, k, v split again, Linear
    /// weights [out, in] again, the pooler carried), and the config's numbers.
    func test_exportingAnImportedBERTGivesTheSameTensorsBitForBit() throws {
        let source = "\(Self.fixtures)/bert-tiny"
        let imported = try HuggingFace.importModel(from: source)
        let files = try HuggingFace.export(imported.checkpoint)
        XCTAssertEqual(files.map(\.name), ["config.json", "model.safetensors"])
        let path = "\(directory)/bert.safetensors"
        try files[1].bytes.write(to: URL(fileURLWithPath: path))
        let original = try SafetensorsFile.read("\(source)/model.safetensors").tensors
        let exported = try SafetensorsFile.read(path).tensors
        XCTAssertEqual(Set(exported.keys), Set(original.keys).subtracting(["embeddings.position_ids"]))
        for (name, tensor) in exported {
            XCTAssertEqual(original[name]?.shape, tensor.shape, name)
            XCTAssertTrue(original[name]?.values.elementsEqual(tensor.values) { $0.bitPattern == $1.bitPattern } == true, name)
        }
        let written = try XCTUnwrap(JSONSerialization.jsonObject(with: files[0].bytes) as? [String: Any])
        let read = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(source)/config.json"))) as? [String: Any])
        for key in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                    "layer_norm_eps", "max_position_embeddings", "type_vocab_size", "pad_token_id", "model_type"] {
            XCTAssertEqual("\(written[key] ?? "none")", "\(read[key] ?? "none")", key)
        }
    }

    /// Fine-tuning a published encoder for text classification, end to end on 2 ranks: labelled
    /// texts (JSON lines and CSV) through `cohort prepare text-classification`, bert-tiny with
    /// `model.add_layers` (mean pooling, a dense head), the per-class report, and the export of
    /// the encoder with the pooler the run carried.
    func test_textClassificationFineTunesAPublishedEncoderOnTwoRanks() throws {
        let tokenizer = "\(Self.fixtures)/bert-tiny-tokenizer.json"
        let phrases = ["in the beginning god created the heaven", "and god said let there be light", "jesus wept"]
        var jsonl = "", csv = "text,label\n"
        for index in 0..<96 {
            let label = ["genesis", "light", "gospel"][index % 3]
            let text = phrases[index % 3] + (index % 2 == 0 ? " and the earth" : "")
            jsonl += #"{"text": "\#(text)", "label": "\#(label)"}"# + "\n"
            if index < 30 { csv += "\"\(text), again\",\(label)\n" }
        }
        try jsonl.write(toFile: "\(directory)/train.jsonl", atomically: true, encoding: .utf8)
        try csv.write(toFile: "\(directory)/test.csv", atomically: true, encoding: .utf8)
        let train = try runCohort(ranks: 1, ["prepare", "text-classification", "--input", "\(directory)/train.jsonl", "--text", "text",
                                             "--label", "label", "--tokenizer", tokenizer, "--max-length", "16", "--out", "\(directory)/train.h5"],
                                  directory: directory)
        XCTAssertEqual(train.status, 0, train.error)
        XCTAssertTrue(train.output.contains("96 texts, 3 classes (genesis, gospel, light)"), train.output)
        let test = try runCohort(ranks: 1, ["prepare", "text-classification", "--input", "\(directory)/test.csv", "--text", "text",
                                            "--label", "label", "--tokenizer", tokenizer, "--max-length", "16", "--classes", "genesis,gospel,light",
                                            "--out", "\(directory)/test.h5"], directory: directory)
        XCTAssertEqual(test.status, 0, test.error)
        let file = try HDF5File.open("\(directory)/train.h5")
        XCTAssertEqual(try file.dataset("ids").shape, [96, 16])
        XCTAssertEqual(try file.stringsAttribute("class_names"), ["genesis", "gospel", "light"])
        let lengths: [Int32] = try file.read("lengths").values
        let ids: [Int32] = try file.read("ids").values
        let encoded = try WordPiece(tokenizerJSON: tokenizer).encode(phrases[1], maxLength: 16)
        XCTAssertEqual(Int(lengths[1]), encoded.count)
        XCTAssertEqual(ids[16..<(16 + encoded.count)].map(Int.init), encoded)
        XCTAssertTrue(ids[(16 + encoded.count)..<32].allSatisfy { $0 == 0 }, "padded with [PAD]")

        let config = """
            name: topics
            seed: 0
            run_dir: \(directory)/runs/topics
            data: {train: \(directory)/train.h5, test: \(directory)/test.h5, features: ids, labels: labels, normalize: none}
            model:
              init_from: {huggingface: \(Self.fixtures)/bert-tiny}
              add_layers:
                - {type: sequence_pool, mode: mean}
                - {type: dense, units: 3, init: normal}
            optimizer: {type: adamw, learning_rate: 0.001, weight_decay: 0.01, clip_grad_norm: 1.0, schedule: {type: linear_warmup, warmup_steps: 3}}
            training: {epochs: 4, batch_size: 8}
            """
        try config.write(toFile: "\(directory)/topics.yaml", atomically: true, encoding: .utf8)
        let trained = try runCohort(ranks: 2, ["train", "\(directory)/topics.yaml"], directory: directory)
        XCTAssertEqual(trained.status, 0, trained.output + trained.error)
        XCTAssertTrue(trained.output.contains("genesis") && trained.output.contains("precision"), trained.output)
        let losses = trained.output.split(separator: "\n").compactMap { line -> Double? in
            guard line.hasPrefix("epoch "), let range = line.range(of: "loss ") else { return nil }
            return Double(line[range.upperBound...].prefix { !$0.isWhitespace && $0 != "," })
        }
        XCTAssertGreaterThan(losses.count, 1, trained.output)
        XCTAssertLessThan(losses.last ?? .infinity, losses.first ?? 0, "the loss goes down: \(losses)")
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/topics/checkpoints").first)
        XCTAssertNotNil(try Checkpoint.read(from: checkpoint).tensors["huggingface/pooler.dense.weight"], "the pooler rides along")
        let exported = try runCohort(ranks: 1, ["export", checkpoint, "--format", "huggingface", "--out", "\(directory)/exported"], directory: directory)
        XCTAssertEqual(exported.status, 0, exported.error)
        XCTAssertNotNil(try SafetensorsFile.read("\(directory)/exported/model.safetensors").tensors["pooler.dense.weight"])
    }
}
