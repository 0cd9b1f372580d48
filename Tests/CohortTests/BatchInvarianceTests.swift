import Foundation
import XCTest
@testable import Cohort

/// A sample's arithmetic does not depend on the batch it is in (`RowBlocks`): products over a
/// batch's rows run in blocks of whole samples, and sums over the batch add block after block.
/// So micro-batches of b samples accumulate to the very bits of one batch of k·b, and 2 ranks
/// × b to those of 1 rank × 2b, whenever b·positions is a multiple of 16, on any kernel family.
///
/// Before this, OpenBLAS rounded a row by the call's shape and a sum over 64 rows differently
/// from two sums over 32; harmless until a ReLU pre-activation within that rounding of 0 took
/// the other side of the kink. W1 on 4 ranks, 32 × 2 accumulated against 64, parted at step 32
/// and drifted to 0.3 relative by step 60 on Cooperlake kernels (issue 27).
final class BatchInvarianceTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
    }

    /// Forward bits of every row and gradient bits of every parameter, for `batch` rows at once
    /// or in micro-batches of `micro`, the gradients of the micro-batches added up by backward.
    private func passes(_ model: Model, _ x: [Float], batch: Int, micro: Int) -> (outputs: [UInt32], gradients: [UInt32]) {
        let inputSize = model.inputShape.reduce(1, *)
        let outputSize = model.outputShape.reduce(1, *)
        model.parameters.zeroGradients()
        var outputs: [UInt32] = []
        for start in stride(from: 0, to: batch, by: micro) {
            let y = x.withUnsafeBufferPointer { model.forward($0.baseAddress! + start * inputSize, batch: micro, training: true) }
            let rows = Array(UnsafeBufferPointer(start: y, count: micro * outputSize))
            outputs += rows.map(\.bitPattern)
            // A loss gradient that depends on the row alone: dL/dy = y / 1000.
            let upstream = rows.map { $0 / 1000 }
            _ = upstream.withUnsafeBufferPointer { model.backward(outputGradient: $0.baseAddress!, batch: micro) }
        }
        let gradients = Array(model.parameters.gradients).map(\.bitPattern)
        return (outputs, gradients)
    }

    private func assertInvariant(_ layers: [LayerSpec], inputShape: [Int], batch: Int, micro: [Int], vocabulary: Int? = nil,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try Model(inputShape: inputShape, layers: layers, maxBatch: batch, seed: 5)
        var generator = Generator(seed: 9)
        let count = batch * inputShape.reduce(1, *)
        let x = (0..<count).map { _ in vocabulary.map { Float(generator.next() % UInt64($0)) } ?? generator.nextGaussian() }
        let whole = passes(model, x, batch: batch, micro: batch)
        for size in micro {
            let split = passes(model, x, batch: batch, micro: size)
            XCTAssertTrue(split.outputs == whole.outputs, "forward: \(batch / size) × \(size) differs from 1 × \(batch)", file: file, line: line)
            XCTAssertTrue(split.gradients == whole.gradients, "gradients: \(batch / size) × \(size) differ from 1 × \(batch)", file: file, line: line)
        }
    }

    func test_microBatchesGiveTheWholeBatchsBitsThroughDenseLayers() throws {
        // W1's shape: the product at batch 64 is above the 8 MFLOP at which it used to be cut.
        try assertInvariant([.dense(256, activation: .relu), .dense(128, activation: .relu), .dense(10)],
                            inputShape: [784], batch: 64, micro: [32, 16])
        // Sequences of 8 positions: a block is 2 samples (16 rows).
        try assertInvariant([.dense(24, activation: .gelu), .dense(6)], inputShape: [8, 12], batch: 8, micro: [4, 2])
    }

    /// An untied head: a tied one adds its gradient and the embedding's lookup gradient into the
    /// same table once per micro-batch, so k micro-batches add 2k partial sums where one batch
    /// adds 2 (equal to rounding, not to the bit: W6 accumulated is within a rounding of whole).
    func test_microBatchesGiveTheWholeBatchsBitsThroughALanguageModel() throws {
        let layers: [LayerSpec] = [.family(EmbeddingOptions(vocabulary: 40, dimension: 32)), .dense(32, activation: .relu),
                                   .family(LanguageModelHeadOptions(tied: false, units: 40))]
        try assertInvariant(layers, inputShape: [16], batch: 8, micro: [4, 1], vocabulary: 40)
    }

    /// A BERT encoder over padded texts: each sample's products cover its real tokens only, so
    /// its bits do not depend on the lengths of the samples beside it, and padding costs nothing:
    /// any split, down to one sample (a dense head on the pooled rows splits at 16-row blocks).
    func test_microBatchesGiveTheWholeBatchsBitsThroughAPaddedEncoder() throws {
        let layers: [LayerSpec] = [.family(BertEmbeddingsOptions(vocabulary: 30, dimension: 32, maxLength: 24)),
                                   .family(EncoderBlockOptions(heads: 4, mlpRatio: 2)), .family(SequencePoolOptions(mode: .mean))]
        let (batch, length) = (8, 24)
        let model = try Model(inputShape: [length], layers: layers, maxBatch: batch, seed: 5)
        var generator = Generator(seed: 9)
        var x: [Float] = []
        for _ in 0..<batch {
            let real = 1 + Int(generator.next() % UInt64(length))
            x += (0..<length).map { $0 < real ? Float(1 + generator.next() % 29) : 0 }
        }
        let whole = passes(model, x, batch: batch, micro: batch)
        for size in [4, 1] {
            let split = passes(model, x, batch: batch, micro: size)
            XCTAssertTrue(split.outputs == whole.outputs, "forward: \(batch / size) × \(size) differs from 1 × \(batch)")
            XCTAssertTrue(split.gradients == whole.gradients, "gradients: \(batch / size) × \(size) differ from 1 × \(batch)")
        }
    }

    func test_anyThreadCountGivesTheSameBitsInRowBlocks() throws {
        let model = try Model(inputShape: [784], layers: [.dense(256, activation: .relu), .dense(10)], maxBatch: 72, seed: 5)
        var generator = Generator(seed: 9)
        let x = (0..<(72 * 784)).map { _ in generator.nextGaussian() }
        defer { LayerThreads.use(1) }
        LayerThreads.use(1)
        let one = passes(model, x, batch: 72, micro: 72)  // 4 blocks of 16 and a padded one of 8
        LayerThreads.use(3)
        let three = passes(model, x, batch: 72, micro: 72)
        XCTAssertTrue(one.outputs == three.outputs && one.gradients == three.gradients)
    }

    /// The reproducer of issue 27 at test size: a ReLU MLP on 4 ranks, 2 micro-batches of 16
    /// against one batch of 32, plain SGD: every parameter bitwise equal after 2 epochs (26
    /// steps), and 2 ranks × 16 bitwise equal to 1 rank × 32 (one block per rank: the
    /// all-reduce of two partial sums is the same single addition as the one rank's).
    func test_accumulatedAndSplitRunsEqualTheWholeBatchBitwise() throws {
        // 768 rows: whole optimizer steps only (a partial last step splits its rows otherwise).
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 768, seed: 1)
        let mlp = """
            - {type: dense, units: 64, activation: relu}
            - {type: dense, units: 32, activation: relu}
            - {type: dense, units: 4}
        """
        // Dropout draws its masks row by row in order, the same for micro-batches (not for ranks).
        let withDropout = mlp.replacingOnce("    - {type: dense, units: 32", with: "    - {type: dropout, rate: 0.2}\n    - {type: dense, units: 32")
        func run(_ name: String, ranks: Int, batch: Int, accumulate: Int, layers: String) throws -> [String: [Float]] {
            let path = "\(directory)/\(name).yaml"
            try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 2, batchSize: batch,
                            optimizer: "sgd", extra: "  accumulate_steps: \(accumulate)", layers: layers)
                .write(toFile: path, atomically: true, encoding: .utf8)
            let result = try runCohort(ranks: ranks, ["train", path], directory: directory)
            XCTAssertEqual(result.status, 0, result.output + result.error)
            return try checkpointParameters(try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first))
        }
        let whole = try run("whole", ranks: 4, batch: 32, accumulate: 1, layers: withDropout)
        XCTAssertTrue(try run("accumulated", ranks: 4, batch: 16, accumulate: 2, layers: withDropout) == whole,
                      "4 ranks: 16 × 2 differs from 32")
        let one = try run("one", ranks: 1, batch: 32, accumulate: 1, layers: mlp)
        XCTAssertTrue(try run("two", ranks: 2, batch: 16, accumulate: 1, layers: mlp) == one, "2 ranks × 16 differ from 1 rank × 32")
    }
}
