import Foundation
import XCTest
@testable import Cohort

/// BERT's WordPiece against Hugging Face `tokenizers`: a tokenizer it trained on the KJV text
/// and its ids for every 80th KJV line and for lines that exercise each rule (accents, CJK,
/// punctuation, control characters, words over 100 characters, truncation), committed by
/// Tests/Fixtures/make_wordpiece_fixtures.py. Benchmarks/check_wordpiece.py compares every line.
final class WordPieceTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/huggingface/wordpiece-kjv").path

    func test_idsEqualTokenizersOnKJVLinesAndEdgeCases() throws {
        let tokenizer = try WordPiece(tokenizerJSON: "\(Self.fixtures)/tokenizer.json")
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/expected.json")))
            as? [String: Any])
        let lines = try XCTUnwrap(expected["lines"] as? [String])
        let ids = try XCTUnwrap(expected["ids"] as? [[Int]])
        let truncated = try XCTUnwrap(expected["ids_max_length_16"] as? [[Int]])
        XCTAssertGreaterThan(lines.count, 300)
        var differing = 0
        for (index, line) in lines.enumerated() {
            let ours = tokenizer.encode(line)
            if ours != ids[index] {
                differing += 1
                if differing <= 5 { XCTFail("line \(index) \(line.debugDescription): \(ours) against tokenizers' \(ids[index])") }
            }
            XCTAssertEqual(tokenizer.encode(line, maxLength: 16), truncated[index], "line \(index), truncated to 16")
        }
        XCTAssertEqual(differing, 0, "of \(lines.count) lines")
    }

    /// Sentence pairs: `[CLS] a [SEP] b [SEP]`, cut by longest_first truncation at 8 to 512 ids,
    /// and the token types `bert_embeddings` derives from the first `[SEP]` equal tokenizers'.
    func test_sentencePairsEqualTokenizersWithTheirTokenTypes() throws {
        let tokenizer = try WordPiece(tokenizerJSON: "\(Self.fixtures)/tokenizer.json")
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/expected.json")))
            as? [String: Any])
        let pairs = try XCTUnwrap(expected["pairs"] as? [[String: Any]])
        XCTAssertEqual(pairs.count, 200)
        let separator = try XCTUnwrap(tokenizer.separator)
        var truncated = 0
        for (index, pair) in pairs.enumerated() {
            let (first, second) = (try XCTUnwrap(pair["first"] as? String), try XCTUnwrap(pair["second"] as? String))
            let maxLength = try XCTUnwrap(pair["max_length"] as? Int)
            let ids = tokenizer.encodePair(first, second, maxLength: maxLength)
            XCTAssertEqual(ids, try XCTUnwrap(pair["ids"] as? [Int]), "pair \(index) at \(maxLength)")
            let firstSeparator = ids.firstIndex(of: separator) ?? ids.count
            let types = ids.indices.map { $0 > firstSeparator ? 1 : 0 }
            XCTAssertEqual(types, try XCTUnwrap(pair["types"] as? [Int]), "pair \(index) types")
            if ids.count == maxLength { truncated += 1 }
        }
        XCTAssertGreaterThan(truncated, 50, "the fixture exercises truncation")
    }

    func test_whatItDoesNotImplementIsRefusedByName() throws {
        let directory = try temporaryDirectory(self)
        let text = try String(contentsOfFile: "\(Self.fixtures)/tokenizer.json", encoding: .utf8)
        let variants = [("\"type\": \"BertPreTokenizer\"", "\"type\": \"Whitespace\"", "pre_tokenizer.type Whitespace is not implemented"),
                        ("\"type\": \"BertNormalizer\"", "\"type\": \"NFKC\"", "normalizer.type NFKC is not implemented"),
                        ("\"type\": \"WordPiece\"", "\"type\": \"Unigram\"", "not WordPiece")]
        for (original, replacement, message) in variants {
            XCTAssertTrue(text.contains(original), original)
            let path = "\(directory)/tokenizer-\(UUID().uuidString).json"
            try text.replacingOccurrences(of: original, with: replacement).write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try WordPiece(tokenizerJSON: path)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }
}
