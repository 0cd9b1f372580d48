import Foundation
import XCTest
@testable import Cohort

/// Language models end to end: token files from `TextPreparation`, a small GPT trained under
/// `mpirun`, resumed, evaluated and sampled by the built `cohort` executable.
final class SequenceTrainingTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        // 1,500 characters of a small grammar: 38 distinct, about 150 windows of 8 tokens.
        var generator = Generator(seed: 4)
        let words = ["and", "the", "lord", "said", "unto", "moses", "in", "beginning", "god", "created", "heaven", "earth"]
        var text = ""
        while text.count < 1_500 {
            text += words[generator.nextIndex(below: words.count)]
            text += generator.nextIndex(below: 6) == 0 ? ".\n" : " "
        }
        text += "ZQ:;!,\n"
        try text.write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        _ = try TextPreparation.prepare(inputs: ["\(directory)/corpus.txt"], outputDirectory: directory, tokenizer: .chars, validation: 0.2)
    }

    private func vocabulary() throws -> Int { try TokenCorpus(path: "\(directory)/train.h5").vocabulary.count }

    private func writeConfig(_ name: String, batchSize: Int, maxSteps: Int, dropout: Double = 0, vocabulary: Int? = nil,
                             maxLength: Int = 8, epochs: Int = 3, optimizer: String = "type: adamw",
                             layers: String? = nil, data: String = "", training: String = "") throws -> String {
        let vocabulary = try vocabulary ?? self.vocabulary()
        let path = "\(directory)/\(name).yaml"
        let text = """
        name: \(name)
        seed: 5
        run_dir: \(directory)/runs/\(name)
        data: {train: \(directory)/train.h5, test: \(directory)/val.h5, window: 8\(data)}
        model:
          layers:
        \(layers ?? """
            - {type: embedding, vocabulary: \(vocabulary), dim: 16}
            - {type: positional_embedding, max_length: \(maxLength)}
            - {type: transformer_block, heads: 2, dropout: \(dropout)}
            - {type: transformer_block, heads: 2, dropout: \(dropout)}
            - {type: layer_norm}
            - {type: lm_head}
        """)
        optimizer:
          \(optimizer)
          learning_rate: 0.003
          beta2: 0.99
          weight_decay: 0.1
          clip_grad_norm: 1.0
          schedule: {type: warmup_cosine, warmup_steps: 3, min_learning_rate: 0.0003}
        training: {epochs: \(epochs), batch_size: \(batchSize), eval_batch_size: 16, max_steps: \(maxSteps)\(training)}
        checkpoint: {every_epochs: 1}
        """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func run(ranks: Int, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runCohort(ranks: ranks, arguments, directory: directory)
        XCTAssertEqual(result.status, 0, "cohort \(arguments.first ?? "") failed:\n\(result.output)\n\(result.error)", file: file, line: line)
        return result
    }

    private func newestCheckpoint(_ name: String) throws -> String {
        try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/runs/\(name)/checkpoints").first, "no checkpoint in runs/\(name)")
    }

    func test_tokenWindowsCoverTheStreamOncePerEpochWithTargetsShiftedByOne() throws {
        let corpus = try TokenCorpus(path: "\(directory)/train.h5")
        let windows = try TokenWindows(corpus: corpus, length: 8, phase: .random, seed: 1)
        XCTAssertEqual(windows.rows, corpus.tokens.count / 8 - 1)
        var x = [Float](repeating: 0, count: windows.rows * 8)
        var y = [Int32](repeating: 0, count: windows.rows * 8)
        var phases = Set<Int>()
        for epoch in 0..<6 {
            try windows.load(rows: Array(0..<windows.rows)[...], epoch: epoch, x: &x, y: &y)
            let start = windows.start(epoch: epoch)
            phases.insert(start)
            XCTAssertEqual(x.map { Int($0) }, corpus.tokens[start..<(start + windows.rows * 8)].map { Int($0) }, "inputs of epoch \(epoch)")
            XCTAssertEqual(y.map { Int($0) }, corpus.tokens[(start + 1)..<(start + 1 + windows.rows * 8)].map { Int($0) })
        }
        XCTAssertGreaterThan(phases.count, 1, "the phase changes between epochs")
        let evaluation = try TokenWindows(corpus: corpus, length: 8, phase: .zero, seed: 1)
        XCTAssertEqual(evaluation.rows, (corpus.tokens.count - 1) / 8)
    }

    func test_prepareTextRefusesBadInputWithOneLineErrors() throws {
        try Data([0x61, 0x62, 0xff, 0x63]).write(to: URL(fileURLWithPath: "\(directory)/bad.txt"))
        XCTAssertThrowsError(try TextPreparation.prepare(inputs: ["\(directory)/bad.txt"], outputDirectory: "\(directory)/out",
                                                         tokenizer: .chars, validation: 0.1)) {
            XCTAssertEqual("\($0)", "\(directory)/bad.txt: not valid UTF-8 text (byte offset 2)")
        }
        _ = FileManager.default.createFile(atPath: "\(directory)/empty.txt", contents: Data())
        XCTAssertThrowsError(try TextPreparation.prepare(inputs: ["\(directory)/empty.txt"], outputDirectory: "\(directory)/out",
                                                         tokenizer: .bytes, validation: 0.1)) {
            XCTAssertTrue("\($0)".hasSuffix("empty.txt: the corpus is empty"), "\($0)")
        }
        let bytes = try TextPreparation.prepare(inputs: ["\(directory)/corpus.txt"], outputDirectory: "\(directory)/bytes",
                                                tokenizer: .bytes, validation: 0)
        let corpus = try TokenCorpus(path: bytes[0])
        XCTAssertEqual(corpus.vocabulary.count, 256)
        XCTAssertEqual(try corpus.decode(corpus.tokens.map(Int.init)), try String(contentsOfFile: "\(directory)/corpus.txt", encoding: .utf8))
    }

    /// With AdamW the key third of `qkv/bias` is left out of the comparison: its gradient is
    /// exactly zero in exact arithmetic (softmax ignores a shift shared by a row's scores), so
    /// what the ranks compute there is rounding noise, which Adam scales up to ±lr per step in
    /// any summation order (PyTorch's too). SGD with momentum checks every parameter.
    func test_twoRanksMatchOneRankWithDoubleBatchForAGPT() throws {
        // AdamW for 8 steps: after that the key bias' noise reaches the other parameters at ~1e-5.
        for (name, optimizer, steps) in [("adamw", "type: adamw", 8), ("sgd", "type: sgd\n  momentum: 0.9", 12)] {
            let two = try writeConfig("\(name)-two", batchSize: 4, maxSteps: steps, optimizer: optimizer)
            let one = try writeConfig("\(name)-one", batchSize: 8, maxSteps: steps, optimizer: optimizer)
            _ = try run(ranks: 2, ["train", two])
            _ = try run(ranks: 1, ["train", one])
            var twoRanks = try checkpointParameters(try newestCheckpoint("\(name)-two"))
            var oneRank = try checkpointParameters(try newestCheckpoint("\(name)-one"))
            if name == "adamw" {
                for key in twoRanks.keys where key.hasSuffix("attention/qkv/bias") {
                    let width = twoRanks[key]!.count / 3
                    twoRanks[key]!.replaceSubrange(width..<(2 * width), with: repeatElement(0, count: width))
                    oneRank[key]!.replaceSubrange(width..<(2 * width), with: repeatElement(0, count: width))
                }
            }
            XCTAssertLessThanOrEqual(maxRelativeDifference(twoRanks, oneRank), 1e-5, "\(name): 2 ranks × 4 windows vs 1 rank × 8")
        }
    }

    /// W5's shape in small: embedding → 2-layer LSTM (dropout 0 between) → dense over every step.
    func test_twoRanksMatchOneRankWithDoubleBatchForAnLSTM() throws {
        let layers = """
            - {type: embedding, vocabulary: \(try vocabulary()), dim: 8}
            - {type: lstm, hidden: 12, layers: 2}
            - {type: dense, units: \(try vocabulary())}
        """
        let two = try writeConfig("lstm-two", batchSize: 4, maxSteps: 12, optimizer: "type: adam", layers: layers)
        let one = try writeConfig("lstm-one", batchSize: 8, maxSteps: 12, optimizer: "type: adam", layers: layers)
        _ = try run(ranks: 2, ["train", two])
        _ = try run(ranks: 1, ["train", one])
        let difference = maxRelativeDifference(try checkpointParameters(try newestCheckpoint("lstm-two")),
                                               try checkpointParameters(try newestCheckpoint("lstm-one")))
        XCTAssertLessThanOrEqual(difference, 1e-5, "2 ranks × 4 windows vs 1 rank × 8")
        // Generation carries the LSTM's state from token to token.
        let text = try run(ranks: 1, ["generate", try newestCheckpoint("lstm-one"), "--prompt", "the", "--tokens", "30", "--greedy"]).output
        XCTAssertTrue(text.hasPrefix("the") && text.count > 30, text)
    }

    /// Dropout inside the blocks (attention weights, attention output, MLP): their generators
    /// are found through `sublayers` and restored, so the resumed run draws the same masks.
    /// The interrupted run computes its blocks again in backward (`training.recompute: blocks`),
    /// which changes no bit either.
    func test_resumeMidEpochWithDropoutIsBitwiseEqualAndGenerationRepeats() throws {
        let whole = try writeConfig("whole", batchSize: 4, maxSteps: 30, dropout: 0.1)
        let part = try writeConfig("part", batchSize: 4, maxSteps: 7, dropout: 0.1, training: ", recompute: blocks")
        _ = try run(ranks: 2, ["train", whole])
        let stopped = try run(ranks: 2, ["train", part])
        XCTAssertTrue(stopped.output.contains("stopped after 7 steps"), stopped.output)
        XCTAssertTrue(stopped.output.contains("computed again in backward"), stopped.output)
        let rest = try writeConfig("part", batchSize: 4, maxSteps: 30, dropout: 0.1, training: ", recompute: blocks")
        let resumed = try run(ranks: 2, ["train", rest, "--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 7"), resumed.output)
        let final = try newestCheckpoint("whole")
        XCTAssertEqual(try checkpointParameters(final), try checkpointParameters(try newestCheckpoint("part")))

        let greedy = ["generate", final, "--prompt", "the lord", "--tokens", "40", "--greedy"]
        let first = try run(ranks: 1, greedy).output
        XCTAssertEqual(try run(ranks: 1, greedy).output, first)
        XCTAssertEqual(try run(ranks: 1, ["generate", try newestCheckpoint("part"), "--prompt", "the lord", "--tokens", "40", "--greedy"]).output,
                       first, "greedy text from the resumed run's checkpoint")
        XCTAssertTrue(first.hasPrefix("the lord") && first.count > 40, first)
        let sampled = ["generate", final, "--tokens", "60", "--temperature", "0.8", "--top-k", "10", "--seed", "3"]
        XCTAssertEqual(try run(ranks: 1, sampled).output, try run(ranks: 1, sampled).output)
        XCTAssertNotEqual(try run(ranks: 1, sampled).output, try run(ranks: 1, sampled.dropLast() + ["4"]).output)
        // A context longer than the window: the cache is refilled, and the text goes on.
        XCTAssertGreaterThan(try run(ranks: 1, ["generate", final, "--tokens", "50", "--greedy"]).output.count, 50)
    }

    /// Sharded sampling: blocks of 8 windows dealt to the ranks, a 24-window shuffle buffer each,
    /// windows read from the file as they are needed. Every window of an epoch is read once,
    /// by one rank, and a mid-epoch resume is bitwise equal to the uninterrupted run.
    func test_shardedTokenWindowsAreReadOncePerEpochAndResumeBitwise() throws {
        let sharded = ", sampling: sharded, block_rows: 8, shuffle_buffer: 24"
        let windows = try TokenWindows(corpus: TokenCorpus(path: "\(directory)/train.h5"), length: 8, phase: .random, seed: 5).rows
        let steps = ShardedSampler(rows: windows, worldSize: 2, rank: 0, batchPerRank: 4, blockRows: 8, bufferRows: 24, seed: 5,
                                   dropRemainder: false).stepsPerEpoch(epoch: 0)
        let traced = try writeConfig("traced", batchSize: 4, maxSteps: steps, dropout: 0.1, data: sharded)
        try FileManager.default.createDirectory(atPath: "\(directory)/trace", withIntermediateDirectories: true)
        let tracedRun = try runCohort(ranks: 2, ["train", traced], environment: ["COHORT_TRACE_READS": "\(directory)/trace"], directory: directory)
        XCTAssertEqual(tracedRun.status, 0, tracedRun.error)
        let reads = try (0..<2).map { rank in
            try String(contentsOfFile: "\(directory)/trace/rank-\(rank).txt", encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
        }
        XCTAssertEqual(Set(reads[0]).intersection(reads[1]), [], "no window is read by both ranks")
        XCTAssertEqual((reads[0] + reads[1]).sorted(), Array(0..<windows), "every window once in the epoch")

        let whole = try writeConfig("sharded-whole", batchSize: 4, maxSteps: steps + 6, dropout: 0.1, data: sharded)
        _ = try run(ranks: 2, ["train", whole])
        _ = try run(ranks: 2, ["train", try writeConfig("sharded-part", batchSize: 4, maxSteps: 5, dropout: 0.1, data: sharded)])
        let rest = try writeConfig("sharded-part", batchSize: 4, maxSteps: steps + 6, dropout: 0.1, data: sharded)
        let resumed = try run(ranks: 2, ["train", rest, "--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("resumed at epoch 1, step 5"), resumed.output)
        XCTAssertEqual(try checkpointParameters(try newestCheckpoint("sharded-whole")), try checkpointParameters(try newestCheckpoint("sharded-part")))
    }

    /// A language model's checkpoint carries its vocabulary: generation needs nothing else.
    func test_generationNeedsOnlyTheCheckpoint() throws {
        let config = try writeConfig("alone", batchSize: 4, maxSteps: 3)
        _ = try run(ranks: 1, ["train", config])
        let checkpoint = try newestCheckpoint("alone")
        XCTAssertEqual(try Checkpoint.read(from: checkpoint).tokenizer, "chars")
        for split in ["train", "val"] {
            try FileManager.default.moveItem(atPath: "\(directory)/\(split).h5", toPath: "\(directory)/\(split).moved")
        }
        defer {
            for split in ["train", "val"] { try? FileManager.default.moveItem(atPath: "\(directory)/\(split).moved", toPath: "\(directory)/\(split).h5") }
        }
        let text = try run(ranks: 1, ["generate", checkpoint, "--prompt", "the", "--tokens", "10", "--greedy"]).output
        XCTAssertTrue(text.hasPrefix("the") && text.count > 10, text)
    }

    func test_inspectShowsATokenFile() throws {
        let corpus = try TokenCorpus(path: "\(directory)/train.h5")
        let output = try run(ranks: 1, ["inspect", "\(directory)/train.h5"]).output
        XCTAssertTrue(output.contains("token file: \(corpus.count) tokens, vocabulary \(corpus.vocabulary.count) (chars)"), output)
        XCTAssertTrue(output.contains("first 200 tokens: \"" + (try corpus.decode(corpus.tokens.prefix(3).map(Int.init)))), output)
    }

    func test_evaluateCoversTheWholeValidationSplitOnAnyRankCount() throws {
        let config = try writeConfig("evaluated", batchSize: 4, maxSteps: 5)
        let training = try run(ranks: 2, ["train", config])
        let checkpoint = try newestCheckpoint("evaluated")
        let one = try run(ranks: 1, ["evaluate", checkpoint]).output
        let two = try run(ranks: 2, ["evaluate", checkpoint]).output
        let figures = try XCTUnwrap(one.split(separator: "\n").first { $0.hasPrefix("loss ") }, one)
        XCTAssertTrue(two.contains(figures), "1 rank: \(figures)\n2 ranks: \(two)")
        let windows = (try TokenCorpus(path: "\(directory)/val.h5").tokens.count - 1) / 8
        XCTAssertTrue(one.contains("\(windows) windows, \(windows * 8) target tokens"), one)
        XCTAssertTrue(training.output.contains("evaluation after 5 steps: " + figures), training.output)
        // The run directory of a language model: a metrics row for the steps taken, the report of the evaluation.
        let csv = try String(contentsOfFile: "\(directory)/runs/evaluated/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.first.map(String.init), RunRecorder.languageModelCSVHeader)
        XCTAssertEqual(csv.count, 2, "\(csv)")
        XCTAssertTrue(csv[1].hasPrefix("1,5,"), "\(csv)")
        let report = try String(contentsOfFile: "\(directory)/runs/evaluated/report.json", encoding: .utf8)
        XCTAssertTrue(report.contains("\"global_step\": 5") && report.contains("\"tokens\": \(windows * 8)"), report)
    }

    func test_badSequenceInputGivesOneLineErrors() throws {
        func fails(_ arguments: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let result = try runCohort(ranks: 1, arguments, directory: directory)
            XCTAssertEqual(result.status, 1, result.output + result.error, file: file, line: line)
            let lines = result.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }
            XCTAssertEqual(lines.count, 1, result.error, file: file, line: line)
            XCTAssertTrue(result.error.contains(message), "expected '\(message)' in:\n\(result.error)", file: file, line: line)
        }
        let vocabulary = try vocabulary()
        try fails(["train", try writeConfig("wrong-vocabulary", batchSize: 4, maxSteps: 2, vocabulary: vocabulary + 2)],
                  "its vocabulary has \(vocabulary) tokens, but embedding_1 has vocabulary \(vocabulary + 2)")
        try fails(["train", try writeConfig("short-table", batchSize: 4, maxSteps: 2, maxLength: 6)],
                  "sequences of 8 tokens are longer than its table (max_length 6)")
        try fails(["train", try writeConfig("huge-batch", batchSize: 5_000, maxSteps: 2)], "fewer than one global batch")
        let config = try writeConfig("prompted", batchSize: 4, maxSteps: 2)
        _ = try run(ranks: 1, ["train", config])
        try fails(["generate", try newestCheckpoint("prompted"), "--prompt", "the lørd"], "character \"ø\" (U+00F8) is not in the vocabulary")
    }

    /// A token id the vocabulary does not have is named with its position, whether the stream is
    /// kept in memory (in the narrowest type that holds the vocabulary) or read window by window.
    func test_anIdOutsideTheVocabularyIsNamed() throws {
        // 32-bit ids narrowed as they are read, and 8-bit ids read as they are.
        for (vocabulary, bad, narrowFile) in [(3, UInt32(300), false), (300, UInt32(70_000), false), (3, UInt32(200), true)] {
            let path = "\(directory)/bad-\(vocabulary)-\(narrowFile).h5"
            let file = try HDF5File.create(path)
            var ids = (0..<3_000).map { UInt32($0 % 3) }
            ids[2_345] = bad
            if narrowFile { try file.write("tokens", ids.map(UInt8.init)) } else { try file.write("tokens", ids) }
            try file.setAttribute("vocabulary", (0..<vocabulary).map { "t\($0)" })
            file.close()
            XCTAssertThrowsError(try TokenCorpus(path: path)) { error in
                XCTAssertTrue("\(error)".contains("token 2345 has id \(bad), outside the vocabulary of \(vocabulary)"), "\(error)")
            }
            let streamed = try TokenCorpus(path: path, cache: false)
            XCTAssertThrowsError(try streamed.withTokens(start: 2_000, length: 500) { _ in }) { error in
                XCTAssertTrue("\(error)".contains("token 2345 has id \(bad)"), "\(error)")
            }
        }
        // In memory, narrow or not, the windows are the ids the file holds.
        let corpus = try TokenCorpus(path: "\(directory)/train.h5")
        let streamed = try TokenCorpus(path: "\(directory)/train.h5", cache: false)
        let cached = try corpus.withTokens(start: 17, length: 100) { Array(UnsafeBufferPointer(start: $0, count: 100)) }
        XCTAssertEqual(cached, try streamed.withTokens(start: 17, length: 100) { Array(UnsafeBufferPointer(start: $0, count: 100)) })
        // The data fingerprint checkpoints record does not depend on how the stream is held.
        XCTAssertEqual(try TokenWindows(corpus: corpus, length: 8, phase: .zero, seed: 1).fingerprint(),
                       try TokenWindows(corpus: streamed, length: 8, phase: .zero, seed: 1).fingerprint())
    }
}
