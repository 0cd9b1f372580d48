import Foundation
import XCTest
@testable import Cohort

/// Byte-level BPE: GPT-2's pre-tokenization (expected pieces from `tokenizers` 0.23's ByteLevel
/// pre-tokenizer), training, exact round trips, tokenizer.json both ways, and a BPE language
/// model that trains and generates. (Benchmarks/check_bpe.py compares whole corpora with
/// `tokenizers` itself.)
final class BytePairEncodingTests: XCTestCase {
    func test_preTokenizationSplitsAsGPT2sPattern() {
        let cases: [(String, [String])] = [
            ("Hello  world!!\n\n don't 123abc", ["Hello", "Ġ", "Ġworld", "!!", "ĊĊ", "Ġdon", "'t", "Ġ123", "abc"]),
            ("x'S y'll  \t\nend   ", ["x", "'", "S", "Ġy", "'ll", "ĠĠĉ", "Ċ", "end", "ĠĠĠ"]),
            ("über ½ 日本。😀 a", ["Ã¼ber", "ĠÂ½", "ĠæĹ¥æľ¬", "ãĢĤðŁĺĢ", "Ġa"]),
        ]
        for (text, expected) in cases {
            let pieces = BytePairEncoding.preTokenize(text).map { String($0.map { BytePairEncoding.byteCharacters[Int($0)] }) }
            XCTAssertEqual(pieces, expected, String(reflecting: text))
        }
    }

    func test_trainingEncodingAndTokenizerJSONRoundTrip() throws {
        let text = String(repeating: "In the beginning God created the heaven and the earth. Ünïcödé 123, don't!\r\n", count: 40) + "and the end 😀"
        let bpe = try BytePairEncoding.train(text, vocabularySize: 300)
        XCTAssertEqual(bpe.vocabulary.count, 300)
        XCTAssertEqual(bpe.merges.count, 44)
        XCTAssertEqual(bpe.merges.first.map { "\($0.0) \($0.1)" }, "h e", "the most frequent pair first (in 'the', 'heaven', …)")
        let ids = bpe.encode(text)
        XCTAssertLessThan(ids.count, text.utf8.count / 2, "merges shorten the stream")
        XCTAssertEqual(bpe.decode(ids), text, "the text back exactly")
        let again = try BytePairEncoding(tokenizerJSON: Data(bpe.tokenizerJSON.utf8), source: "tokenizer.json")
        XCTAssertEqual(again.encode(text), ids)
        XCTAssertEqual(again.vocabulary, bpe.vocabulary)
        // Text the merges never saw still encodes, byte by byte where nothing merges.
        XCTAssertEqual(bpe.decode(bpe.encode("zqx ∑ \u{0}")), "zqx ∑ \u{0}")
        XCTAssertThrowsError(try BytePairEncoding(tokenizerJSON: Data("{\"model\": {\"type\": \"WordPiece\"}}".utf8), source: "wp.json")) {
            XCTAssertTrue("\($0)".contains("wp.json: not a tokenizer.json of a BPE model"), "\($0)")
        }
    }

    func test_aBPELanguageModelTrainsFromPreparedFilesAndGenerates() throws {
        let directory = try temporaryDirectory(self)
        let text = String(repeating: "the cat sat on the mat and the dog sat on the log. ", count: 60)
        try text.write(toFile: "\(directory)/corpus.txt", atomically: true, encoding: .utf8)
        let prepared = try runCohort(ranks: 1, ["prepare", "text", "--input", "\(directory)/corpus.txt", "--out", "\(directory)/tokens",
                                                "--tokenizer", "bpe", "--vocab", "270"], directory: directory)
        XCTAssertEqual(prepared.status, 0, prepared.error)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(directory)/tokens/tokenizer.json"))
        let corpus = try TokenCorpus(path: "\(directory)/tokens/train.h5")
        XCTAssertEqual(corpus.tokenizer, "bpe")
        XCTAssertEqual(corpus.vocabulary.count, 270)
        // The same tokenizer.json encodes the same text to the same ids.
        let reused = try runCohort(ranks: 1, ["prepare", "text", "--input", "\(directory)/corpus.txt", "--out", "\(directory)/again",
                                              "--tokenizer-file", "\(directory)/tokens/tokenizer.json"], directory: directory)
        XCTAssertEqual(reused.status, 0, reused.error)
        XCTAssertEqual(try TokenCorpus(path: "\(directory)/again/train.h5").tokens, corpus.tokens)

        try """
        name: bpe
        run_dir: \(directory)/run
        data: {train: \(directory)/tokens/train.h5, test: \(directory)/tokens/val.h5, window: 8}
        model:
          layers:
            - {type: embedding, vocabulary: 270, dim: 16}
            - {type: positional_embedding, max_length: 8}
            - {type: transformer_block, heads: 2}
            - {type: layer_norm}
            - {type: lm_head}
        optimizer: {type: adamw, learning_rate: 0.003}
        training: {epochs: 1, batch_size: 8, max_steps: 20}
        """.write(toFile: "\(directory)/bpe.yaml", atomically: true, encoding: .utf8)
        let trained = try runCohort(ranks: 2, ["train", "\(directory)/bpe.yaml"], directory: directory)
        XCTAssertEqual(trained.status, 0, trained.error)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        XCTAssertEqual(try Checkpoint.read(from: checkpoint).merges?.count, 14, "the merges travel with the model")
        let generated = try runCohort(ranks: 1, ["generate", checkpoint, "--prompt", "the cat", "--tokens", "12", "--greedy"], directory: directory)
        XCTAssertEqual(generated.status, 0, generated.error)
        XCTAssertTrue(generated.output.hasPrefix("the cat"), generated.output)
        XCTAssertGreaterThan(generated.output.count, "the cat".count + 5, generated.output)
    }

    /// A GPT-2-style tokenizer.json that `tokenizers` trained (Tests/Fixtures/make_bpe_fixtures.py):
    /// every sampled KJV line, W9 text and edge case gets tokenizers' ids and decodes back.
    func test_aTokenizersByteLevelBPEGivesItsIdsOnKJVLinesAndW9Texts() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/huggingface/bpe-kjv").path
        let tokenizer = try BytePairEncoding(tokenizerJSON: try Data(contentsOf: URL(fileURLWithPath: "\(directory)/tokenizer.json")),
                                             source: "bpe-kjv/tokenizer.json")
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(directory)/expected.json")))
            as? [String: Any])
        let lines = try XCTUnwrap(expected["lines"] as? [String])
        let ids = try XCTUnwrap(expected["ids"] as? [[Int]])
        XCTAssertGreaterThan(lines.count, 500)
        var differing = 0
        for (index, line) in lines.enumerated() where tokenizer.encode(line) != ids[index] {
            differing += 1
            if differing <= 5 { XCTFail("line \(index) \(line.debugDescription): \(tokenizer.encode(line)) against tokenizers' \(ids[index])") }
        }
        XCTAssertEqual(differing, 0, "of \(lines.count) lines")
    }
}
