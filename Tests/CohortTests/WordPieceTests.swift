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
