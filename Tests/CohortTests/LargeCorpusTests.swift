import Foundation
import XCTest
@testable import Cohort

/// W8's guarantees on a corpus larger than a rank may hold: a 600 MiB byte-token file trained
/// by ranks each capped at 512 MiB (resident memory and page cache, `launch/memory-cap.sh`, a
/// memory cgroup), reading windows from the file in sharded mode; a run stopped mid-epoch and
/// resumed ends bitwise where an uninterrupted one does, at 1 and 2 ranks. The same run with the
/// corpus cached in memory is killed by the cap, so the cap bites. Needs root for the cgroup.
final class LargeCorpusTests: XCTestCase {
    private var directory = ""
    private let cap = "512"

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("the memory cap needs root for a cgroup") }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: capScript)
        probe.arguments = ["--check"]
        let reason = Pipe()
        probe.standardError = reason
        try probe.run()
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else {
            throw XCTSkip(String(decoding: reason.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        directory = try temporaryDirectory(self)
    }

    override func tearDownWithError() throws {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    private var capScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("launch/memory-cap.sh").path
    }

    private func config(_ name: String, train: String, cache: Bool, maxSteps: Int) -> String {
        """
        name: \(name)
        seed: 5
        run_dir: \(directory)/runs/\(name)
        data:
          train: \(train)
          window: 64
        \(cache ? "  cache: true\n  sampling: global" : "  cache: false\n  sampling: sharded\n  shuffle_buffer: 4096")
        model:
          layers:
            - {type: embedding, vocabulary: 256, dim: 32}
            - {type: positional_embedding, max_length: 64}
            - {type: transformer_block, heads: 2}
            - {type: layer_norm}
            - {type: lm_head, tie_embeddings: true}
        loss: softmax_cross_entropy
        optimizer: {type: adamw, learning_rate: 0.003, clip_grad_norm: 1.0}
        training: {epochs: 1, batch_size: 8, max_steps: \(maxSteps)}
        """
    }

    private func train(_ name: String, ranks: Int, corpus: String, cache: Bool = false, maxSteps: Int,
                       resume: Bool = false) throws -> ProcessResult {
        let path = "\(directory)/\(name)-\(maxSteps).yaml"
        try config(name, train: corpus, cache: cache, maxSteps: maxSteps).write(toFile: path, atomically: true, encoding: .utf8)
        return try runCohort(ranks: ranks, [cap, cohortExecutable(), "train", path] + (resume ? ["--resume", "auto"] : []),
                             directory: directory, executable: capScript)
    }

    private func parameters(_ name: String) throws -> [String: [UInt32]] {
        let newest = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first)
        return try checkpointParameters(newest).mapValues { $0.map(\.bitPattern) }
    }

    func test_aCorpusLargerThanTheCapTrainsAndResumesBitwise() throws {
        // 600 MiB of random bytes, prepared by the streaming byte path (8 MiB at a time).
        let text = "\(directory)/corpus.bin"
        let made = try runCohort(ranks: 1, ["if=/dev/urandom", "of=\(text)", "bs=8M", "count=75", "status=none"],
                                 directory: directory, executable: "/bin/dd")
        XCTAssertEqual(made.status, 0, made.error)
        _ = try TextPreparation.prepare(inputs: [text], outputDirectory: "\(directory)/tokens", tokenizer: .bytes, validation: 0)
        try FileManager.default.removeItem(atPath: text)
        let corpus = "\(directory)/tokens/train.h5"
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: corpus)[.size] as? Int)
        XCTAssertGreaterThan(size, 600 << 20, "the token file is larger than the cap")

        for ranks in [1, 2] {
            let whole = try train("whole-\(ranks)", ranks: ranks, corpus: corpus, maxSteps: 8)
            XCTAssertEqual(whole.status, 0, whole.output + whole.error)
            let peaks = whole.error.split(separator: "\n").filter { $0.hasPrefix("memory-cap: ") }
            XCTAssertEqual(peaks.count, ranks, whole.error)
            let part = try train("part-\(ranks)", ranks: ranks, corpus: corpus, maxSteps: 3)
            XCTAssertEqual(part.status, 0, part.output + part.error)
            let resumed = try train("part-\(ranks)", ranks: ranks, corpus: corpus, maxSteps: 8, resume: true)
            XCTAssertEqual(resumed.status, 0, resumed.output + resumed.error)
            XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 3"), resumed.output)
            XCTAssertEqual(try parameters("whole-\(ranks)"), try parameters("part-\(ranks)"), "\(ranks) rank(s): resume is bitwise")
        }

        // Holding the corpus in memory (global sampling, cached: 629 MB, a byte a token) does not
        // fit: the cap ends the job.
        let cached = try train("cached", ranks: 1, corpus: corpus, cache: true, maxSteps: 2)
        XCTAssertNotEqual(cached.status, 0, cached.output)
        XCTAssertTrue(cached.error.contains("137"), "killed (SIGKILL) by the cgroup's limit: \(cached.error)")
    }
}
