import Foundation
import XCTest
@testable import Cohort

/// `training.threads`: layer work cut into parts by the problem's shape alone (GEMMs along their
/// longer output side, attention by row and head), each part computed by one thread with
/// single-threaded OpenBLAS. So a run ends bit for bit the same with 1, 2 or 3 threads.
final class LayerThreadsTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
    }

    private func train(_ name: String, config: String, threads: Int) throws -> [String: [UInt32]] {
        let path = "\(directory)/\(name)-\(threads).yaml"
        try config.replacingOnce("RUN", with: "\(directory)/runs/\(name)-\(threads)").replacingOnce("THREADS", with: "\(threads)")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runCohort(ranks: 1, ["train", path], directory: directory)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        let newest = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)-\(threads)/checkpoints").first)
        return try Checkpoint.read(from: newest).tensors.filter { !$0.key.hasPrefix("callbacks/") }.mapValues { $0.values.map(\.bitPattern) }
    }

    func test_anyThreadCountGivesTheSameBits() throws {
        let images = try writeSyntheticDataset("\(directory)/images.h5", rows: 256, height: 12, width: 12, seed: 2)
        // Products above the 8 MFLOP cut: the 512-wide dense layers at batch 64, the convolution.
        let imageConfig = """
        name: t
        seed: 3
        run_dir: RUN
        data: {train: \(images)}
        model:
          layers:
            - {type: conv2d, filters: 32, kernel: 3, padding: same, activation: relu}
            - {type: flatten}
            - {type: dense, units: 512, activation: relu}
            - {type: dense, units: 512, activation: gelu}
            - {type: dense, units: 4}
        optimizer: {type: adamw}
        training: {epochs: 1, batch_size: 64, max_steps: 3, threads: THREADS}
        """
        let text = (0..<4_000).map { "the lord said unto moses \($0 % 97) " }.joined()
        try text.write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        _ = try TextPreparation.prepare(inputs: ["\(directory)/corpus.txt"], outputDirectory: "\(directory)/tokens", tokenizer: .chars, validation: 0)
        let vocabulary = try TokenCorpus(path: "\(directory)/tokens/train.h5").vocabulary.count
        let textConfig = """
        name: t
        seed: 3
        run_dir: RUN
        data: {train: \(directory)/tokens/train.h5, window: 64}
        model:
          layers:
            - {type: embedding, vocabulary: \(vocabulary), dim: 128}
            - {type: positional_embedding, max_length: 64}
            - {type: transformer_block, heads: 4}
            - {type: lstm, hidden: 128}
            - {type: lm_head, tie_embeddings: false, units: \(vocabulary)}
        loss: softmax_cross_entropy
        optimizer: {type: adamw}
        training: {epochs: 1, batch_size: 16, max_steps: 3, threads: THREADS}
        """
        for (name, config) in [("image", imageConfig), ("text", textConfig)] {
            let one = try train(name, config: config, threads: 1)
            XCTAssertFalse(one.isEmpty)
            for threads in [2, 3] {
                let other = try train(name, config: config, threads: threads)
                let differing = one.keys.filter { one[$0] != other[$0] }.sorted()
                XCTAssertTrue(differing.isEmpty && one.count == other.count, "\(name), \(threads) threads: \(differing.count) tensors differ from 1 thread's: \(differing.prefix(4))")
            }
        }
    }
}
