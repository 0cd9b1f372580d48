import XCTest
@testable import Cohort

/// The Transformer blocks of a model share one set of backward buffers (`BlockGradients`):
/// the same bits as blocks with buffers of their own, in less memory.
final class BlockGradientsTests: XCTestCase {
    private func gpt(blocks: Int, dropout: Float, shared: Bool, batch: Int, length: Int, vocabulary: Int,
                     recompute: Bool = false) throws -> Model {
        let block = LayerSpec.family(TransformerBlockOptions(heads: 2, dropout: dropout))
        return try Model(inputShape: [length], layers: [
            .family(EmbeddingOptions(vocabulary: vocabulary, dimension: 16)), .family(PositionalEmbeddingOptions(maxLength: length)),
        ] + Array(repeating: block, count: blocks) + [
            .family(LayerNormOptions()), .family(LanguageModelHeadOptions()),
        ], maxBatch: batch, seed: 7, shareBlockGradients: shared, recomputeBlocks: recompute)
    }

    /// Two micro-batches of forward and backward (the second accumulating onto the first),
    /// with dropout drawing the same masks in both models: every parameter's gradient.
    private func gradients(of model: Model, batch: Int, length: Int, vocabulary: Int) -> [UInt32] {
        var generator = Generator(seed: 11, streams: 1)
        var gradient = [Float](repeating: 0, count: batch * length * vocabulary)
        model.parameters.zeroGradients()
        for _ in 0..<2 {
            let ids = (0..<(batch * length)).map { _ in Float(Int(generator.nextUnitFloat() * Float(vocabulary)) % vocabulary) }
            let targets = (0..<(batch * length)).map { _ in Int32(Int(generator.nextUnitFloat() * Float(vocabulary)) % vocabulary) }
            let logits = model.forward(ids, batch: batch, training: true)
            _ = Loss.softmaxCrossEntropy(smoothing: 0).evaluate(outputs: logits, labels: targets, batch: batch * length, width: vocabulary,
                                                                gradient: &gradient, gradientScale: 1 / Float(batch * length))
            model.backward(outputGradient: gradient, batch: batch)
        }
        return model.parameters.gradients.map(\.bitPattern)
    }

    func test_sharedBackwardBuffersGiveTheSameGradientsInLessMemory() throws {
        let (batch, length, vocabulary) = (3, 8, 13)
        for dropout: Float in [0, 0.2] {
            let own = try gpt(blocks: 3, dropout: dropout, shared: false, batch: batch, length: length, vocabulary: vocabulary)
            let shared = try gpt(blocks: 3, dropout: dropout, shared: true, batch: batch, length: length, vocabulary: vocabulary)
            let expected = gradients(of: own, batch: batch, length: length, vocabulary: vocabulary)
            let actual = gradients(of: shared, batch: batch, length: length, vocabulary: vocabulary)
            XCTAssertTrue(expected.contains { $0 != 0 })
            let differing = zip(own.parameters.entries.map(\.name), own.parameters.entries).filter { name, entry in
                expected[entry.offset..<(entry.offset + entry.count)] != actual[entry.offset..<(entry.offset + entry.count)]
            }.map(\.0)
            XCTAssertTrue(differing.isEmpty, "dropout \(dropout): \(differing.count) parameters' gradients differ: \(differing.prefix(4))")
            XCTAssertLessThan(shared.layerBufferBytes, own.layerBufferBytes)
        }
        // A block more costs only its forward activations: its backward buffers are the others'.
        let two = try gpt(blocks: 2, dropout: 0, shared: true, batch: batch, length: length, vocabulary: vocabulary).layerBufferBytes
        let three = try gpt(blocks: 3, dropout: 0, shared: true, batch: batch, length: length, vocabulary: vocabulary).layerBufferBytes
        let four = try gpt(blocks: 4, dropout: 0, shared: true, batch: batch, length: length, vocabulary: vocabulary).layerBufferBytes
        let ownTwo = try gpt(blocks: 2, dropout: 0, shared: false, batch: batch, length: length, vocabulary: vocabulary).layerBufferBytes
        let ownThree = try gpt(blocks: 3, dropout: 0, shared: false, batch: batch, length: length, vocabulary: vocabulary).layerBufferBytes
        XCTAssertEqual(four - three, three - two)
        XCTAssertLessThan(three - two, ownThree - ownTwo)
    }

    /// Activation checkpointing (`training.recompute: blocks`): each block runs its forward
    /// again in backward, with the dropout masks of its first forward, and keeps only its output.
    func test_recomputedBlocksGiveTheSameGradientsKeepingOnlyTheirOutputs() throws {
        let (batch, length, vocabulary) = (3, 8, 13)
        for dropout: Float in [0, 0.2] {
            let kept = try gpt(blocks: 3, dropout: dropout, shared: true, batch: batch, length: length, vocabulary: vocabulary)
            let recomputed = try gpt(blocks: 3, dropout: dropout, shared: true, batch: batch, length: length, vocabulary: vocabulary,
                                     recompute: true)
            let expected = gradients(of: kept, batch: batch, length: length, vocabulary: vocabulary)
            let actual = gradients(of: recomputed, batch: batch, length: length, vocabulary: vocabulary)
            XCTAssertTrue(expected.contains { $0 != 0 })
            let differing = kept.parameters.entries.filter { entry in
                expected[entry.offset..<(entry.offset + entry.count)] != actual[entry.offset..<(entry.offset + entry.count)]
            }.map(\.name)
            XCTAssertTrue(differing.isEmpty, "dropout \(dropout): \(differing.count) parameters' gradients differ: \(differing.prefix(4))")
            // The generators continue where the forward left them: the next step's masks are the same too.
            XCTAssertEqual(kept.randomizedLayers.map(\.generator), recomputed.randomizedLayers.map(\.generator))
            XCTAssertLessThan(recomputed.layerBufferBytes, kept.layerBufferBytes)
        }
        // A block more costs only its output, batch × T × C floats (and the one-float
        // placeholders of the gradient buffers its dense layers do not use).
        let sizes = try (2...4).map { blocks in
            try gpt(blocks: blocks, dropout: 0.2, shared: true, batch: batch, length: length, vocabulary: vocabulary, recompute: true)
                .layerBufferBytes
        }
        let output = batch * length * 16 * MemoryLayout<Float>.size
        XCTAssertTrue((output...(output + 64)).contains(sizes[2] - sizes[1]), "a block more costs \(sizes[2] - sizes[1]) bytes")
        XCTAssertEqual(sizes[1] - sizes[0], sizes[2] - sizes[1])
        XCTAssertThrowsError(try Model(inputShape: [4], layers: [.dense(3)], recomputeBlocks: true)) { error in
            XCTAssertTrue("\(error)".contains("no transformer_block"), "\(error)")
        }
    }
}
