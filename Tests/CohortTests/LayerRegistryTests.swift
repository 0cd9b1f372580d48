import Foundation
import XCTest
@testable import Cohort

/// Every registered layer family, checked the same way: a family added to `LayerRegistry`
/// without a working backward pass, YAML keys that read back, or parameters that survive a
/// checkpoint fails here instead of failing silently in a run.
final class LayerRegistryTests: XCTestCase {
    func test_everyFamilyMatchesFiniteDifferences() throws {
        for family in LayerRegistry.families {
            let specimen = family.specimen
            let failures = testRun?.failureCount ?? 0
            try checkModel(specimen.layers, inputShape: specimen.inputShape, batch: 2, vocabulary: specimen.vocabulary)
            if (testRun?.failureCount ?? 0) > failures { XCTFail("\(family.type): the specimen's gradients above") }
        }
    }

    func test_everyFamilyRoundTripsThroughYAML() throws {
        for family in LayerRegistry.families {
            for spec in family.specimen.layers {
                let flow = spec.yamlFlow
                let text = "data: {train: t.h5}\nmodel:\n  layers:\n    - \(flow)\n"
                let parsed = try TrainConfig.parse(text: text, file: "\(family.type).yaml")
                XCTAssertEqual(parsed.layers, [spec], "\(family.type): \(flow)")
            }
        }
    }

    func test_everyFamilyRoundTripsThroughACheckpoint() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cohort-registry-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for family in LayerRegistry.families {
            let specimen = family.specimen
            let saved = try Model(inputShape: specimen.inputShape, layers: specimen.layers, maxBatch: 2, seed: 1)
            let count = 2 * specimen.inputShape.reduce(1, *)
            let x = (0..<count).map { Float($0 % (specimen.vocabulary ?? 3)) }
            _ = saved.forward(x, batch: 2, training: true)  // moves running statistics off their initial values
            var checkpoint = Checkpoint(position: .init(epoch: 0, stepInEpoch: 0, globalStep: 0, samplesSeen: 0),
                                        worldSize: 1, batchSize: 2, optimizerSteps: 0, config: "")
            for entry in saved.parameters.entries {
                checkpoint.tensors["parameters/\(entry.name)"] =
                    (entry.shape, Array(UnsafeBufferPointer(start: saved.parameters.values(of: entry), count: entry.count)))
            }
            for entry in saved.parameters.bufferEntries {
                checkpoint.tensors["buffers/\(entry.name)"] = (entry.shape, Array(saved.parameters.buffers[entry.offset..<(entry.offset + entry.count)]))
            }
            let path = "\(directory)/\(family.type).h5"
            try checkpoint.writeAtomically(to: path)
            let restored = try Model(inputShape: specimen.inputShape, layers: specimen.layers, maxBatch: 2, seed: 2)
            XCTAssertNotEqual(Array(restored.parameters.values), Array(saved.parameters.values), "\(family.type): seeds differ")
            try Checkpoint.read(from: path).restoreModel(restored, source: path)
            let outputs = 2 * saved.outputShape.reduce(1, *)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: restored.forward(x, batch: 2, training: false), count: outputs)),
                           Array(UnsafeBufferPointer(start: saved.forward(x, batch: 2, training: false), count: outputs)),
                           "\(family.type): outputs after the round trip")
        }
    }

    /// Every family has an ONNX form (launch/check-export.sh runs the shipped models' graphs in
    /// onnxruntime); a family without one would make `cohort export --format onnx` refuse its models.
    func test_everyFamilyHasAnONNXForm() throws {
        for family in LayerRegistry.families {
            let specimen = family.specimen
            let model = try Model(inputShape: specimen.inputShape, layers: specimen.layers, maxBatch: 1, seed: 1)
            var tensors: [String: (shape: [Int], values: [Float])] = [:]
            for entry in model.parameters.entries {
                tensors[entry.name] = (entry.shape, Array(UnsafeBufferPointer(start: model.parameters.values(of: entry), count: entry.count)))
            }
            for entry in model.parameters.bufferEntries {
                tensors[entry.name] = (entry.shape, Array(model.parameters.buffers[entry.offset..<(entry.offset + entry.count)]))
            }
            var graph = OnnxGraph { tensors[$0] }
            let (_, shape) = try graph.stack(specimen.layers, "input", specimen.inputShape, prefix: "")
            XCTAssertEqual(shape, model.outputShape, "\(family.type): the ONNX form's output shape")
            XCTAssertFalse(graph.nodes.isEmpty, "\(family.type)")
        }
    }

    /// Generators of dropouts inside containers are found through `sublayers`, so they reach
    /// the checkpoint (a mid-epoch resume through them is tested under mpirun in SequenceTrainingTests).
    func test_dropoutsInsideContainersAreFound() throws {
        let model = try Model(inputShape: [4, 8], layers: [.family(TransformerBlockOptions(heads: 2, dropout: 0.1)),
                                                           .family(TransformerBlockOptions(heads: 2))], maxBatch: 2)
        XCTAssertEqual(model.randomizedLayers.map(\.name),
                       ["transformer_block_1/attention/weight_dropout", "transformer_block_1/attention/output_dropout",
                        "transformer_block_1/dropout"])
    }

    func test_tiedHeadSharesTheEmbeddingParameter() throws {
        let model = try Model(inputShape: [3], layers: [.family(EmbeddingOptions(vocabulary: 7, dimension: 4)),
                                                        .family(LanguageModelHeadOptions())], maxBatch: 1)
        XCTAssertEqual(model.parameters.entries.map(\.name), ["embedding_1/weight"])
        XCTAssertEqual(model.outputShape, [3, 7])
    }

    func test_sequenceShapesAreCheckedWithOneLineErrors() {
        XCTAssertThrowsError(try Model(inputShape: [9, 4], layers: [.family(PositionalEmbeddingOptions(maxLength: 8))])) {
            XCTAssertTrue("\($0)".contains("longer than its table (max_length 8)"), "\($0)")
        }
        XCTAssertThrowsError(try Model(inputShape: [4, 6], layers: [.family(AttentionOptions(heads: 4))])) {
            XCTAssertTrue("\($0)".contains("not a multiple of heads"), "\($0)")
        }
        XCTAssertThrowsError(try Model(inputShape: [4], layers: [.family(LanguageModelHeadOptions())])) {
            XCTAssertTrue("\($0)".contains("needs an embedding layer before it"), "\($0)")
        }
    }

    func test_denseActsOnTheLastAxisOfASequence() throws {
        let model = try Model(inputShape: [3, 4], layers: [.dense(5)], maxBatch: 2)
        XCTAssertEqual(model.outputShape, [3, 5])
        XCTAssertEqual(model.parameters.entries.first?.shape, [4, 5])
        try checkModel([.dense(5, activation: .relu), .dense(2)], inputShape: [3, 4], batch: 2)
    }
}

/// The config reference cannot drift from the registry: every registered family and each of
/// its keys is documented in configs/README.md.
final class ConfigReferenceTests: XCTestCase {
    func test_everyRegisteredFamilyAndKeyIsDocumented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let reference = try String(contentsOf: root.appendingPathComponent("configs/README.md"), encoding: .utf8)
        for family in LayerRegistry.families {
            // The row whose first cell names the family's type (`max_pool`, `avg_pool` share one).
            let row = reference.split(separator: "\n").first {
                $0.hasPrefix("| ") && ($0.split(separator: "|").first ?? "").contains("`\(family.type)`")
            }
            let line = try XCTUnwrap(row, "configs/README.md has no row for \(family.type)")
            for type in family.types {
                XCTAssertTrue(reference.contains("`\(type)`"), "configs/README.md does not name the layer type \(type)")
            }
            for spec in family.specimen.layers where Swift.type(of: spec.options) == family {
                for key in spec.options.yaml.keys {
                    XCTAssertTrue(line.contains("`\(key)`"), "configs/README.md: \(family.type) does not document \(key)")
                }
            }
        }
    }
}
