import Foundation
import XCTest
@testable import Cohort

/// Cohort's sequence layers against PyTorch, through fixtures that
/// Tests/Fixtures/make_torch_fixtures.py writes (run by hand with PyTorch; CI only reads them):
/// outputs within 1e-5 and gradients within 1e-4 (norm-wise relative), and a tiny GPT's 10
/// AdamW steps within 1e-3 of PyTorch's losses (llm.c's test_gpt2.c makes the same check).
final class TorchParityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    /// ‖a − b‖∞ / ‖b‖∞
    private func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count, !b.isEmpty else { return .infinity }
        let scale = b.map(abs).max()!
        return zip(a, b).map { abs($0 - $1) }.max()! / max(scale, 1e-12)
    }

    private func load(_ model: Model, from file: HDF5File) throws {
        for entry in model.parameters.entries {
            let (values, shape): ([Float], [Int]) = try file.read("parameters/\(entry.name)")
            XCTAssertEqual(shape, entry.shape, entry.name)
            values.withUnsafeBufferPointer { model.parameters.values(of: entry).update(from: $0.baseAddress!, count: entry.count) }
        }
    }

    private func checkLayer(_ name: String, _ layers: [LayerSpec], ids: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        let fixture = try HDF5File.open("\(Self.fixtures)/torch_\(name).h5")
        let (x, inputShape): ([Float], [Int]) = try fixture.read("input")
        let batch = inputShape[0]
        let model = try Model(inputShape: Array(inputShape.dropFirst()), layers: layers, maxBatch: batch, seed: 1)
        model.computeInputGradient()
        try load(model, from: fixture)
        let expected: [Float] = try fixture.read("output").values
        let y = Array(UnsafeBufferPointer(start: model.forward(x, batch: batch, training: true), count: expected.count))
        XCTAssertLessThanOrEqual(relativeError(y, expected), 1e-5, "\(name): output", file: file, line: line)
        model.parameters.zeroGradients()
        let r: [Float] = try fixture.read("output_gradient").values
        let dx = model.backward(outputGradient: r, batch: batch)
        if !ids {
            let expectedDX: [Float] = try fixture.read("input_gradient").values
            XCTAssertLessThanOrEqual(relativeError(Array(UnsafeBufferPointer(start: dx, count: x.count)), expectedDX), 1e-4,
                                     "\(name): input gradient", file: file, line: line)
        }
        for entry in model.parameters.entries {
            let expectedGradient: [Float] = try fixture.read("gradients/\(entry.name)").values
            let gradient = Array(UnsafeBufferPointer(start: model.parameters.gradients(of: entry), count: entry.count))
            XCTAssertLessThanOrEqual(relativeError(gradient, expectedGradient), 1e-4, "\(name): gradient of \(entry.name)", file: file, line: line)
        }
    }

    func test_embeddingMatchesPyTorch() throws {
        try checkLayer("embedding", [.family(EmbeddingOptions(vocabulary: 7, dimension: 8))], ids: true)
    }

    func test_layerNormMatchesPyTorch() throws {
        try checkLayer("layer_norm", [.family(LayerNormOptions())])
    }

    func test_causalAttentionMatchesPyTorch() throws {
        try checkLayer("attention", [.family(AttentionOptions(heads: 2))])
    }

    func test_preLNTransformerBlockMatchesPyTorch() throws {
        try checkLayer("transformer_block", [.family(TransformerBlockOptions(heads: 2))])
    }

    func test_twoLayerLSTMMatchesPyTorch() throws {
        try checkLayer("lstm", [.family(LSTMOptions(hidden: 5, layers: 2))])
    }

    /// 40 units and a batch of 7: the recurrence's full panels (8 units forward, 32 backward),
    /// its partial ones and a partial tile of rows (6), which 5 units and 2 rows never reach.
    func test_wideLSTMMatchesPyTorchAcrossPanelsAndRowTiles() throws {
        try checkLayer("lstm_wide", [.family(LSTMOptions(hidden: 40))])
    }

    func test_tiedHeadMatchesPyTorch() throws {
        try checkLayer("tied_head", [.family(EmbeddingOptions(vocabulary: 7, dimension: 8)), .dense(8, activation: .tanh),
                                     .family(LanguageModelHeadOptions())], ids: true)
    }

    func test_tinyGPTTrainingTrajectoryMatchesPyTorch() throws {
        let fixture = try HDF5File.open("\(Self.fixtures)/torch_gpt_trajectory.h5")
        let (ids, shape): ([Float], [Int]) = try fixture.read("ids")
        let targets: [Int32] = try fixture.read("targets").values
        let expected: [Double] = try fixture.read("losses").values
        let (batch, length, vocabulary) = (shape[0], shape[1], 11)
        let model = try Model(inputShape: [length], layers: [
            .family(EmbeddingOptions(vocabulary: vocabulary, dimension: 16)), .family(PositionalEmbeddingOptions(maxLength: length)),
            .family(TransformerBlockOptions(heads: 2)), .family(TransformerBlockOptions(heads: 2)),
            .family(LayerNormOptions()), .family(LanguageModelHeadOptions()),
        ], maxBatch: batch, seed: 1)
        try load(model, from: fixture)
        let schedule = LearningRateSchedule(kind: .warmupCosine, baseRate: 3e-3, warmupSteps: 3, minimumRate: 3e-4)
        let optimizer = makeOptimizer(OptimizerConfig(kind: .adamw, learningRate: 3e-3, momentum: 0, nesterov: false, beta1: 0.9,
                                                      beta2: 0.99, epsilon: 1e-8, weightDecay: 0.1, decayBiasAndNorm: false,
                                                      clipNorm: 1, schedule: schedule), parameters: model.parameters)
        let tokens = batch * length
        var gradient = [Float](repeating: 0, count: tokens * vocabulary)
        var losses: [Double] = []
        for step in 0..<expected.count {
            model.parameters.zeroGradients()
            let logits = model.forward(ids, batch: batch, training: true)
            let totals = Loss.softmaxCrossEntropy(smoothing: 0).evaluate(outputs: logits, labels: targets, batch: tokens, width: vocabulary,
                                                                         gradient: &gradient, gradientScale: 1 / Float(tokens))
            losses.append(totals.lossSum / Double(tokens))
            model.backward(outputGradient: gradient, batch: batch)
            clipGradientNorm(model.parameters.gradients, maxNorm: 1)
            optimizer.step(parameters: model.parameters.values, gradients: UnsafeBufferPointer(model.parameters.gradients),
                           learningRate: schedule.rate(step: step, totalSteps: expected.count))
        }
        for (step, (loss, reference)) in zip(losses, expected).enumerated() {
            XCTAssertEqual(loss, reference, accuracy: 1e-3, "step \(step): Cohort \(losses), PyTorch \(expected)")
        }
        XCTAssertLessThan(losses.last!, losses.first! - 0.1, "the loss goes down")
    }
}
