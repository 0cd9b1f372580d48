import Foundation
import XCTest
@testable import Cohort

/// `training.state: node_shared`: the parameters and optimizer moments live once per node in
/// shared memory and each rank updates its own slice. The arithmetic is the replicas' own (every
/// rank still clips the whole summed gradient; each element is updated by the same kernel), so
/// a run equals the `replicated` run bit for bit.
final class NodeSharedStateTests: XCTestCase {
    private var directory = ""
    private var train = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        train = try writeSyntheticDataset("\(directory)/train.h5", rows: 203, seed: 1)
    }

    private let layers = """
        - {type: dense, units: 24, activation: relu}
        - {type: dropout, rate: 0.2}
        - {type: dense, units: 16}
        - {type: batch_norm}
        - {type: relu}
        - {type: dense, units: 4}
    """

    /// Trains on `ranks` ranks and returns the newest checkpoint's tensors and the run's output.
    private func run(_ name: String, ranks: Int, state: String, optimizer: String = "adamw", extra: String = "",
                     accumulate: Int = 2, arguments: [String] = [], config text: String? = nil) throws -> (tensors: [String: [Float]], output: String) {
        let path = "\(directory)/\(name).yaml"
        let config = text ?? smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 2, batchSize: 8,
                                         optimizer: optimizer, extra: "  state: \(state)\n  accumulate_steps: \(accumulate)\n\(extra)", layers: layers)
            .replacingOnce("  learning_rate: 0.01\n", with: "  learning_rate: 0.01\n  clip_grad_norm: 0.5\n  momentum: 0.9\n")
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runCohort(ranks: ranks, ["train", path] + arguments, directory: directory)
        XCTAssertEqual(result.status, 0, result.output + result.error)
        let newest = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first)
        let checkpoint = try Checkpoint.read(from: newest)
        return (checkpoint.tensors.mapValues(\.values), result.output)
    }

    private func assertBitwiseEqual(_ a: [String: [Float]], _ b: [String: [Float]], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Set(a.keys), Set(b.keys), file: file, line: line)
        XCTAssertTrue(a.keys.contains { $0.hasPrefix("optimizer/") }, "the optimizer state is compared too", file: file, line: line)
        for (name, values) in a {
            XCTAssertEqual(values.map(\.bitPattern), b[name]?.map(\.bitPattern), "\(name) differs", file: file, line: line)
        }
    }

    /// 3 ranks: slices of unequal length; AdamW with clipping, dropout, batch norm, 2 micro-batches.
    func test_sharedStateEqualsReplicasBitwiseWithAdamWAndSGD() throws {
        let shared = try run("shared", ranks: 3, state: "node_shared")
        XCTAssertTrue(shared.output.contains("model state once per node (3 ranks, each updating a slice)"), shared.output)
        XCTAssertTrue(shared.output.contains("memory per node at the end (PSS, shared pages counted once): model state"), shared.output)
        let replicated = try run("replicated", ranks: 3, state: "replicated")
        XCTAssertFalse(replicated.output.contains("model state once per node"), replicated.output)
        assertBitwiseEqual(shared.tensors, replicated.tensors)

        let sgdShared = try run("sgd-shared", ranks: 2, state: "node_shared", optimizer: "sgd")
        let sgdReplicated = try run("sgd-replicated", ranks: 2, state: "replicated", optimizer: "sgd")
        XCTAssertNotNil(sgdShared.tensors.keys.first { $0.hasPrefix("optimizer/momentum/") })
        assertBitwiseEqual(sgdShared.tensors, sgdReplicated.tensors)
    }

    /// With one micro-batch per step the node's ranks add into one gradient sum during backward,
    /// bucket by bucket in node-rank order (`NodeGradientSum`): the same bits as replicas'
    /// gradients summed after backward, with 3 ranks (one without rows in the last step),
    /// clipping scaled slice by slice, dropout and batch norm; and for a GPT whose output head
    /// writes its tied embedding's gradient first and the embedding last.
    func test_oneGradientSumPerNodeEqualsReplicasBitwise() throws {
        let shared = try run("sum-shared", ranks: 3, state: "node_shared", accumulate: 1)
        XCTAssertTrue(shared.output.contains("; gradients once per node (each rank adds its own in turn during backward)"), shared.output)
        let replicated = try run("sum-replicated", ranks: 3, state: "replicated", accumulate: 1)
        XCTAssertFalse(replicated.output.contains("gradients once per node"), replicated.output)
        assertBitwiseEqual(shared.tensors, replicated.tensors)

        let text = (0..<600).map { "in the beginning \($0 % 37) was the word " }.joined()
        try text.write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        _ = try TextPreparation.prepare(inputs: ["\(directory)/corpus.txt"], outputDirectory: "\(directory)/tokens", tokenizer: .chars, validation: 0)
        let vocabulary = try TokenCorpus(path: "\(directory)/tokens/train.h5").vocabulary.count
        func gpt(_ name: String, _ state: String) -> String {
            """
            name: t
            seed: 5
            run_dir: \(directory)/runs/\(name)
            data: {train: \(directory)/tokens/train.h5, window: 16}
            model:
              layers:
                - {type: embedding, vocabulary: \(vocabulary), dim: 32}
                - {type: positional_embedding, max_length: 16}
                - {type: transformer_block, heads: 2, dropout: 0.1}
                - {type: transformer_block, heads: 2}
                - {type: layer_norm}
                - {type: lm_head, tie_embeddings: true}
            loss: softmax_cross_entropy
            optimizer: {type: adamw, learning_rate: 0.003, weight_decay: 0.1, clip_grad_norm: 0.05}
            training: {epochs: 1, batch_size: 4, max_steps: 6, state: \(state)}
            """
        }
        let gptShared = try run("gpt-shared", ranks: 3, state: "node_shared", config: gpt("gpt-shared", "node_shared"))
        XCTAssertTrue(gptShared.output.contains("gradients once per node"), gptShared.output)
        let gptReplicated = try run("gpt-replicated", ranks: 3, state: "replicated", config: gpt("gpt-replicated", "replicated"))
        assertBitwiseEqual(gptShared.tensors, gptReplicated.tensors)
    }

    /// A run stopped and resumed in node_shared mode, at another rank count, ends where an
    /// uninterrupted replicated run ends.
    func test_resumeIntoSharedStateIsBitwise() throws {
        let whole = try run("whole", ranks: 2, state: "replicated", extra: "  max_steps: 9")
        _ = try run("part", ranks: 2, state: "node_shared", extra: "  max_steps: 5")
        let resumed = try run("part", ranks: 2, state: "node_shared", extra: "  max_steps: 9", arguments: ["--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 5"), resumed.output)
        assertBitwiseEqual(whole.tensors, resumed.tensors)
    }

    /// Early stopping that puts back the best epoch's weights writes them into the node's one
    /// copy (each rank its slice, then a node barrier): the same bits as replicas.
    func test_restoringTheBestWeightsIntoSharedState() throws {
        let stop = "callbacks: {early_stopping: {monitor: train_loss, patience: 1, min_delta: 100, restore_best_weights: true}}\n"
        let shared = try run("best-shared", ranks: 2, state: "node_shared", extra: stop)
        XCTAssertTrue(shared.output.contains("early_stopping: restored the weights of epoch 1"), shared.output)
        let replicated = try run("best-replicated", ranks: 2, state: "replicated", extra: stop)
        assertBitwiseEqual(shared.tensors, replicated.tensors)
    }

    /// With one process there is nothing to share: the run says nothing of it and trains as always.
    func test_oneRankKeepsItsOwnState() throws {
        let one = try run("one", ranks: 1, state: "node_shared")
        XCTAssertFalse(one.output.contains("model state once per node"), one.output)
        let replicated = try run("one-replicated", ranks: 1, state: "replicated")
        assertBitwiseEqual(one.tensors, replicated.tensors)
    }
}

/// `training.overlap_all_reduce`: buckets of the gradient buffer, from the last layers' to the
/// first's, summed with `MPI_Iallreduce` as backward finishes them. The same sums as one
/// `MPI_Allreduce` (2 ranks: a + b in any order), so the run is bit for bit the blocking one.
final class OverlappedAllReduceTests: XCTestCase {
    func test_bucketsFollowLayerBoundariesFromTheEnd() {
        // Layers' parameter starts: 0 (embedding), none (an activation), 100, 400, none (a tied head).
        let plan = OverlappedBucketSum.plan(starts: [0, nil, 100, 400, nil], count: 1000, bucketFloats: 500)
        XCTAssertEqual(plan.buckets, [400..<1000, 0..<400])
        XCTAssertEqual(plan.finalFrom, [0, 100, 100, 400, 1000])
        let fine = OverlappedBucketSum.plan(starts: [0, nil, 100, 400, nil], count: 1000, bucketFloats: 1)
        XCTAssertEqual(fine.buckets, [400..<1000, 100..<400, 0..<100])
    }

    func test_overlappedRunEqualsTheBlockingRunBitwise() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 203, seed: 1)
        func run(_ name: String, overlap: Bool) throws -> [String: [UInt32]] {
            let path = "\(directory)/\(name).yaml"
            try smallConfig(train: train, test: nil, runDirectory: "\(directory)/runs/\(name)", epochs: 2, batchSize: 8, optimizer: "adamw",
                            extra: "  all_reduce: mpi\n  overlap_all_reduce: \(overlap)\n  bucket_mb: 0.001\n  accumulate_steps: 2\n",
                            layers: "    - {type: dense, units: 24, activation: relu}\n    - {type: dense, units: 16, activation: tanh}\n    - {type: dense, units: 4}\n")
                .write(toFile: path, atomically: true, encoding: .utf8)
            let result = try runCohort(ranks: 2, ["train", path], directory: directory)
            XCTAssertEqual(result.status, 0, result.output + result.error)
            XCTAssertEqual(result.output.contains("gradient all-reduce: MPI_Iallreduce of 2 buckets started during backward"), overlap, result.output)
            let newest = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first)
            return try checkpointParameters(newest).mapValues { $0.map(\.bitPattern) }
        }
        XCTAssertEqual(try run("overlapped", overlap: true), try run("blocking", overlap: false))
    }
}
