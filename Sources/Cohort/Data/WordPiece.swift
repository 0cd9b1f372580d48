import Foundation

/// BERT's tokenizer as Hugging Face `tokenizers` defines it in a `tokenizer.json`:
///
/// - `BertNormalizer`: clean text (drop U+0000, U+FFFD and control characters, every
///   whitespace character becomes a space), put spaces around CJK ideographs, strip accents
///   (NFD, then drop nonspacing marks; on by default when lower-casing), lower-case;
/// - `BertPreTokenizer`: split on whitespace, and every punctuation character (ASCII
///   punctuation and Unicode's P* categories) a word of its own;
/// - `WordPiece`: each word greedily as the longest vocabulary entries from the left, the
///   pieces after the first with the `##` prefix; a word longer than
///   `max_input_chars_per_word` (100) characters, or with any part not in the vocabulary, is
///   `[UNK]`;
/// - `TemplateProcessing` or `BertProcessing`: `[CLS] … [SEP]`, truncated to a maximum length
///   with its special tokens.
///
/// Characters are Unicode scalars, as `tokenizers`' Rust `char`s are.
public struct WordPiece: Sendable {
    public let vocabulary: [String: Int]
    public let unknown: Int
    public let prefix: String
    public let maxCharactersPerWord: Int
    public let lowercase: Bool
    public let stripAccents: Bool
    public let cleanText: Bool
    public let chineseCharacters: Bool
    /// `[CLS]` and `[SEP]` ids, when the file has a post-processor that adds them.
    public let classification: Int?
    public let separator: Int?
    /// `added_tokens` (`[CLS]`, `[MASK]`, …): found in the raw text before anything else and
    /// given their ids, longest first.
    public let addedTokens: [(text: String, id: Int)]

    /// Reads a `tokenizer.json`; what it uses that this implementation does not know is refused
    /// naming the file and the key.
    public init(tokenizerJSON path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw CohortError("\(path): cannot read") }
        try self.init(json: data, source: path)
    }

    /// The tokenizer a `tokenizer.json`'s bytes describe; errors name `source`.
    public init(json data: Data, source path: String) throws {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CohortError("\(path): not a JSON object")
        }
        guard let model = json["model"] as? [String: Any], model["type"] as? String == "WordPiece",
              let vocabulary = model["vocab"] as? [String: Int] else {
            throw CohortError("\(path): model.type is \((json["model"] as? [String: Any])?["type"] ?? "missing"), not WordPiece")
        }
        self.vocabulary = vocabulary
        addedTokens = ((json["added_tokens"] as? [[String: Any]]) ?? []).compactMap { token in
            guard let text = token["content"] as? String, let id = token["id"] as? Int, !text.isEmpty else { return nil }
            return (text, id)
        }.sorted { $0.text.count > $1.text.count }
        let unknownToken = model["unk_token"] as? String ?? "[UNK]"
        guard let unknown = vocabulary[unknownToken] else { throw CohortError("\(path): model.unk_token '\(unknownToken)' is not in the vocabulary") }
        self.unknown = unknown
        prefix = model["continuing_subword_prefix"] as? String ?? "##"
        maxCharactersPerWord = model["max_input_chars_per_word"] as? Int ?? 100
        let normalizer = json["normalizer"] as? [String: Any]
        guard normalizer == nil || normalizer?["type"] as? String == "BertNormalizer" else {
            throw CohortError("\(path): normalizer.type \(normalizer?["type"] ?? "?") is not implemented (BertNormalizer)")
        }
        lowercase = normalizer?["lowercase"] as? Bool ?? false
        stripAccents = normalizer?["strip_accents"] as? Bool ?? lowercase
        cleanText = normalizer?["clean_text"] as? Bool ?? false
        chineseCharacters = normalizer?["handle_chinese_chars"] as? Bool ?? false
        let pre = json["pre_tokenizer"] as? [String: Any]
        guard pre?["type"] as? String == "BertPreTokenizer" else {
            throw CohortError("\(path): pre_tokenizer.type \(pre?["type"] ?? "missing") is not implemented (BertPreTokenizer)")
        }
        let post = json["post_processor"] as? [String: Any]
        switch post?["type"] as? String {
        case nil:
            (classification, separator) = (nil, nil)
        case "BertProcessing":
            let cls = post?["cls"] as? [Any], sep = post?["sep"] as? [Any]
            (classification, separator) = (cls?.last as? Int, sep?.last as? Int)
        case "TemplateProcessing":
            let special = post?["special_tokens"] as? [String: Any] ?? [:]
            func id(_ name: String) -> Int? { ((special[name] as? [String: Any])?["ids"] as? [Int])?.first ?? vocabulary[name] }
            (classification, separator) = (id("[CLS]"), id("[SEP]"))
        case let other?:
            throw CohortError("\(path): post_processor.type \(other) is not implemented (BertProcessing, TemplateProcessing)")
        }
    }

    /// The ids of `text`: `[CLS]`, the word pieces, `[SEP]` (when the file adds them), at most
    /// `maxLength` in all (the pieces truncated, as `tokenizers`' truncation from the right).
    public func encode(_ text: String, maxLength: Int? = nil) -> [Int] {
        var pieces = self.pieces(text)
        let specials = (classification == nil ? 0 : 1) + (separator == nil ? 0 : 1)
        if let maxLength, pieces.count > maxLength - specials { pieces.removeLast(pieces.count - max(maxLength - specials, 0)) }
        return (classification.map { [$0] } ?? []) + pieces + (separator.map { [$0] } ?? [])
    }

    /// A sentence pair as BERT's template makes it, `[CLS] first [SEP] second [SEP]`, at most
    /// `maxLength` ids in all: the longer part is cut first, as `tokenizers`' `longest_first`
    /// truncation cuts it. Its token types (0 up to the first `[SEP]`, 1 after) follow from the
    /// ids: `bert_embeddings` with `sep_id` finds them.
    public func encodePair(_ first: String, _ second: String, maxLength: Int? = nil) -> [Int] {
        var (a, b) = (pieces(first), pieces(second))
        let specials = (classification == nil ? 0 : 1) + (separator == nil ? 0 : 2)
        if let maxLength, a.count + b.count > maxLength - specials {
            let budget = max(maxLength - specials, 0)
            // tokenizers' LongestFirst: the shorter part keeps what it can, up to half each.
            var (short, long) = (min(a.count, b.count), max(a.count, b.count))
            long = short > budget ? short : max(short, budget - short)
            if short + long > budget { (short, long) = (budget / 2, budget / 2 + budget % 2) }
            let (keepA, keepB) = a.count > b.count ? (long, short) : (short, long)
            a.removeLast(max(a.count - keepA, 0))
            b.removeLast(max(b.count - keepB, 0))
        }
        let sep = separator.map { [$0] } ?? []
        return (classification.map { [$0] } ?? []) + a + sep + b + sep
    }

    /// The word pieces of `text`, added tokens included, without `[CLS]` and `[SEP]`.
    func pieces(_ text: String) -> [Int] {
        var pieces: [Int] = []
        for segment in splitAddedTokens(text) {
            switch segment {
            case .added(let id): pieces.append(id)
            case .text(let part): for word in words(normalize(part)) { pieces += wordPieces(word) }
            }
        }
        return pieces
    }

    enum Segment { case text(String), added(Int) }

    /// The text cut at every added token (the leftmost match, the longest token at a place).
    func splitAddedTokens(_ text: String) -> [Segment] {
        guard !addedTokens.isEmpty else { return [.text(text)] }
        var segments: [Segment] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var first: (range: Range<Substring.Index>, id: Int)?
            for (token, id) in addedTokens {
                if let range = rest.range(of: token), first == nil || range.lowerBound < first!.range.lowerBound { first = (range, id) }
            }
            guard let first else { segments.append(.text(String(rest))); break }
            if first.range.lowerBound > rest.startIndex { segments.append(.text(String(rest[..<first.range.lowerBound]))) }
            segments.append(.added(first.id))
            rest = rest[first.range.upperBound...]
        }
        return segments
    }

    func normalize(_ text: String) -> [Unicode.Scalar] {
        var scalars: [Unicode.Scalar] = []
        for scalar in text.unicodeScalars {
            if cleanText {
                if scalar.value == 0 || scalar.value == 0xFFFD { continue }
                if Self.isWhitespace(scalar) { scalars.append(" "); continue }
                if Self.isControl(scalar) { continue }
            }
            if chineseCharacters, Self.isChinese(scalar) {
                scalars += [" ", scalar, " "]
            } else {
                scalars.append(scalar)
            }
        }
        if stripAccents {
            scalars = String(String.UnicodeScalarView(scalars)).decomposedStringWithCanonicalMapping.unicodeScalars
                .filter { $0.properties.generalCategory != .nonspacingMark }
        }
        if lowercase {
            scalars = scalars.flatMap { $0.properties.lowercaseMapping.unicodeScalars }
        }
        return scalars
    }

    /// Whitespace ends a word; each punctuation character is a word.
    func words(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for scalar in scalars {
            if scalar.properties.isWhitespace {
                if !current.isEmpty { words.append(current); current = [] }
            } else if Self.isPunctuation(scalar) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([scalar])
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    func wordPieces(_ word: [Unicode.Scalar]) -> [Int] {
        guard word.count <= maxCharactersPerWord else { return [unknown] }
        var pieces: [Int] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int?
            while start < end {
                var piece = String(String.UnicodeScalarView(word[start..<end]))
                if start > 0 { piece = prefix + piece }
                if let id = vocabulary[piece] { found = id; break }
                end -= 1
            }
            guard let found else { return [unknown] }
            pieces.append(found)
            start = end
        }
        return pieces
    }

    /// `tokenizers`' `is_whitespace`: tab, newline, carriage return, and White_Space characters.
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\t" || scalar == "\n" || scalar == "\r" || scalar.properties.isWhitespace
    }

    /// `is_control`: the Cc, Cf, Cn, Co categories, except tab, newline and carriage return.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\t" || scalar == "\n" || scalar == "\r" { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .unassigned, .privateUse: return true
        default: return false
        }
    }

    /// ASCII punctuation (`!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~`) or a Unicode P* character.
    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII, (33...47).contains(scalar.value) || (58...64).contains(scalar.value)
            || (91...96).contains(scalar.value) || (123...126).contains(scalar.value) { return true }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// The CJK Unified Ideographs blocks BERT pads with spaces.
    static func isChinese(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
             0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F: return true
        default: return false
        }
    }
}
