import Foundation

/// Byte-level BPE as GPT-2 and Hugging Face `tokenizers` define it (`ByteLevel` pre-tokenizer
/// with its regex, no prefix space; `BPE` model; `ByteLevel` decoder): text is split into
/// pre-tokens by GPT-2's pattern, each pre-token's UTF-8 bytes are written as 256 printable
/// characters (`bytes_to_unicode`), and merges join adjacent symbols by rank. Token ids 0-255 are
/// the bytes in byte order, then one id per merge in training order. `tokenizerJSON` writes the
/// Hugging Face `tokenizer.json` that `tokenizers.Tokenizer.from_file` reads, and
/// `init(tokenizerJSON:)` reads one (any byte-level BPE, its own ids).
public struct BytePairEncoding: Sendable {
    /// Token strings (byte-level characters), by id.
    public let vocabulary: [String]
    /// Merges in rank order, as (left, right) token strings.
    public let merges: [(String, String)]
    private let ids: [String: Int]
    private let ranks: [Pair: Int]

    struct Pair: Hashable { let left: Int, right: Int }

    /// GPT-2's `bytes_to_unicode`: printable bytes as themselves, the rest shifted past U+00FF.
    static let byteCharacters: [Character] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var characters = [Character](repeating: " ", count: 256)
        var next = 0
        for byte in 0..<256 {
            if printable.contains(byte) {
                characters[byte] = Character(UnicodeScalar(UInt8(byte)))
            } else {
                characters[byte] = Character(UnicodeScalar(UInt32(256 + next))!)
                next += 1
            }
        }
        printable.removeAll()
        return characters
    }()
    static let characterBytes: [Character: UInt8] = Dictionary(uniqueKeysWithValues: byteCharacters.enumerated().map { ($1, UInt8($0)) })

    public init(vocabulary: [String], merges: [(String, String)]) throws {
        self.vocabulary = vocabulary
        self.merges = merges
        var ids: [String: Int] = [:]
        for (id, token) in vocabulary.enumerated() where ids[token] == nil { ids[token] = id }
        self.ids = ids
        var ranks: [Pair: Int] = [:]
        for (rank, (left, right)) in merges.enumerated() {
            guard let l = ids[left], let r = ids[right], ids[left + right] != nil else {
                throw CohortError("BPE merge \(rank) '\(left) \(right)' joins tokens that are not in the vocabulary")
            }
            if ranks[Pair(left: l, right: r)] == nil { ranks[Pair(left: l, right: r)] = rank }
        }
        self.ranks = ranks
        for character in Self.byteCharacters where ids[String(character)] == nil {
            throw CohortError("a byte-level BPE vocabulary needs all 256 byte tokens; '\(character)' is missing")
        }
    }

    // MARK: Pre-tokenization

    /// GPT-2's pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
    /// applied as the regex engine would, over Unicode scalars; each piece as its UTF-8 bytes.
    public static func preTokenize(_ text: String) -> [[UInt8]] {
        let scalars = Array(text.unicodeScalars)
        func isLetter(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
            default: return false
            }
        }
        func isNumber(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .decimalNumber, .letterNumber, .otherNumber: return true
            default: return false
            }
        }
        func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
        let classes: [(Unicode.Scalar) -> Bool] = [isLetter, isNumber, { !isSpace($0) && !isLetter($0) && !isNumber($0) }]
        let contractions = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }
        var pieces: [[UInt8]] = []
        var start = 0
        let count = scalars.count
        while start < count {
            var end = start
            if scalars[start] == "'" {
                for letters in contractions where start + 1 + letters.count <= count
                    && Array(scalars[(start + 1)..<(start + 1 + letters.count)]) == letters {
                    end = start + 1 + letters.count
                    break
                }
            }
            if end == start {
                // ` ?X+` for the three classes in order: with the space when one leads, else without.
                for klass in classes {
                    if scalars[start] == " ", start + 1 < count, klass(scalars[start + 1]) {
                        end = start + 1
                        while end < count && klass(scalars[end]) { end += 1 }
                        break
                    }
                    if klass(scalars[start]) {
                        end = start
                        while end < count && klass(scalars[end]) { end += 1 }
                        break
                    }
                }
            }
            if end == start {
                // `\s+(?!\S)`: a run of whitespace gives its last one to what follows; else `\s+`.
                var cursor = start
                while cursor < count && isSpace(scalars[cursor]) { cursor += 1 }
                end = cursor == count || cursor - start == 1 ? cursor : cursor - 1
            }
            var bytes: [UInt8] = []
            for scalar in scalars[start..<end] { UTF8.encode(scalar) { bytes.append($0) } }
            pieces.append(bytes)
            start = end
        }
        return pieces
    }

    /// A pre-token's symbols: one byte-level token id per UTF-8 byte.
    private func byteSymbols(_ piece: [UInt8]) -> [Int] {
        piece.map { ids[String(Self.byteCharacters[Int($0)])]! }
    }

    // MARK: Encoding and decoding

    /// Applies the merges to one pre-token: the lowest-ranked adjacent pair first (leftmost on
    /// a tie), until none applies.
    private func merge(_ symbols: [Int]) -> [Int] {
        var symbols = symbols
        while symbols.count > 1 {
            var best = Int.max, position = -1
            for i in 0..<(symbols.count - 1) {
                if let rank = ranks[Pair(left: symbols[i], right: symbols[i + 1])], rank < best { (best, position) = (rank, i) }
            }
            guard position >= 0 else { break }
            let (left, right) = merges[best]
            let merged = ids[left + right]!
            var next: [Int] = []
            next.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i < symbols.count - 1, symbols[i] == ids[left]!, symbols[i + 1] == ids[right]!, best == ranks[Pair(left: symbols[i], right: symbols[i + 1])] {
                    next.append(merged)
                    i += 2
                } else {
                    next.append(symbols[i])
                    i += 1
                }
            }
            symbols = next
        }
        return symbols
    }

    /// The token ids of `text`.
    public func encode(_ text: String) -> [Int] {
        var cache: [[UInt8]: [Int]] = [:]
        var result: [Int] = []
        result.reserveCapacity(text.utf8.count / 3)
        for piece in Self.preTokenize(text) {
            if let known = cache[piece] { result += known; continue }
            let ids = merge(byteSymbols(piece))
            cache[piece] = ids
            result += ids
        }
        return result
    }

    /// The bytes one token stands for.
    public func rawBytes(_ id: Int) -> [UInt8] {
        guard vocabulary.indices.contains(id) else { return [] }
        return vocabulary[id].compactMap { Self.characterBytes[$0] }
    }

    /// The text of token ids (byte sequences that are not UTF-8 become U+FFFD).
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids where vocabulary.indices.contains(id) {
            for character in vocabulary[id] { if let byte = Self.characterBytes[character] { bytes.append(byte) } }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: Training

    /// Learns `vocabularySize − 256` merges from `text`: pre-tokens are counted, and each step
    /// merges the most frequent adjacent pair of symbols within pre-tokens (ties: the pair whose
    /// token strings sort first), as `tokenizers`' BpeTrainer does on a byte-level alphabet.
    public static func train(_ text: String, vocabularySize: Int) throws -> BytePairEncoding {
        guard vocabularySize >= 256 else { throw CohortError("--vocab \(vocabularySize): a byte-level BPE has at least the 256 byte tokens") }
        var vocabulary = byteCharacters.map { String($0) }
        var wordCounts: [[UInt8]: Int] = [:]
        for piece in preTokenize(text) { wordCounts[piece, default: 0] += 1 }
        var words: [[Int]] = []
        var counts: [Int] = []
        // In a fixed order (the dictionary's is not), so that training is deterministic.
        for (piece, count) in wordCounts.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            words.append(piece.map(Int.init))
            counts.append(count)
        }
        var pairCounts: [Pair: Int] = [:]
        var wherePair: [Pair: Set<Int>] = [:]
        for (w, word) in words.enumerated() where word.count > 1 {
            for i in 0..<(word.count - 1) {
                let pair = Pair(left: word[i], right: word[i + 1])
                pairCounts[pair, default: 0] += counts[w]
                wherePair[pair, default: []].insert(w)
            }
        }
        var merges: [(String, String)] = []
        while vocabulary.count < vocabularySize {
            var best: Pair?
            var bestCount = 0
            for (pair, count) in pairCounts where count > 0 {
                if count > bestCount || (count == bestCount && best.map { (vocabulary[pair.left], vocabulary[pair.right]) < (vocabulary[$0.left], vocabulary[$0.right]) } ?? true) {
                    (best, bestCount) = (pair, count)
                }
            }
            guard let pair = best else { break }  // nothing left to merge
            let merged = vocabulary.count
            vocabulary.append(vocabulary[pair.left] + vocabulary[pair.right])
            merges.append((vocabulary[pair.left], vocabulary[pair.right]))
            for w in wherePair[pair] ?? [] {
                let word = words[w]
                // Take the word's pairs out, merge, put them back.
                for i in 0..<(word.count - 1) { pairCounts[Pair(left: word[i], right: word[i + 1])]! -= counts[w] }
                var next: [Int] = []
                var i = 0
                while i < word.count {
                    if i < word.count - 1, word[i] == pair.left, word[i + 1] == pair.right { next.append(merged); i += 2 } else { next.append(word[i]); i += 1 }
                }
                words[w] = next
                if next.count > 1 {
                    for j in 0..<(next.count - 1) {
                        let p = Pair(left: next[j], right: next[j + 1])
                        pairCounts[p, default: 0] += counts[w]
                        wherePair[p, default: []].insert(w)
                    }
                }
            }
            pairCounts[pair] = nil
            wherePair[pair] = nil
        }
        return try BytePairEncoding(vocabulary: vocabulary, merges: merges)
    }

    // MARK: tokenizer.json

    /// The Hugging Face `tokenizer.json` of this BPE (ByteLevel pre-tokenizer and decoder).
    public var tokenizerJSON: String {
        let vocab = vocabulary.enumerated().map { [$0.element: $0.offset] }.reduce(into: [String: Int]()) { $0.merge($1) { a, _ in a } }
        let object: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": [], "normalizer": NSNull(),
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "post_processor": NSNull(),
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges.map { [$0.0, $0.1] }] as [String: Any],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads a Hugging Face `tokenizer.json` of a byte-level BPE (merges as "a b" or ["a", "b"]).
    public init(tokenizerJSON data: Data, source: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let model = object["model"] as? [String: Any], (model["type"] as? String) == "BPE",
              let vocab = model["vocab"] as? [String: Int], let rawMerges = model["merges"] as? [Any] else {
            throw CohortError("\(source): not a tokenizer.json of a BPE model")
        }
        if let pre = object["pre_tokenizer"] as? [String: Any], (pre["type"] as? String) != "ByteLevel" || (pre["add_prefix_space"] as? Bool) == true {
            throw CohortError("\(source): Cohort reads byte-level BPE with the ByteLevel pre-tokenizer and no prefix space")
        }
        guard let size = vocab.values.max().map({ $0 + 1 }), size == vocab.count, vocab.values.allSatisfy({ $0 >= 0 }) else {
            throw CohortError("\(source): the vocabulary's ids are not 0..<\(vocab.count)")
        }
        var vocabulary = [String](repeating: "", count: size)
        for (token, id) in vocab { vocabulary[id] = token }
        let merges: [(String, String)] = try rawMerges.enumerated().map { index, merge in
            if let text = merge as? String {
                let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
                if parts.count == 2 { return (parts[0], parts[1]) }
            } else if let pair = merge as? [String], pair.count == 2 {
                return (pair[0], pair[1])
            }
            throw CohortError("\(source): merge \(index) is neither \"a b\" nor [\"a\", \"b\"]")
        }
        try self.init(vocabulary: vocabulary, merges: merges)
    }
}
