import Foundation

/// `cohort prepare text`: text files → `train.h5` and `val.h5` token files (TokenCorpus).
public enum TextTokenizer: String, CaseIterable, Sendable {
    /// One token per Unicode scalar; the vocabulary is the corpus' distinct scalars, sorted by
    /// code point (Python's `sorted(set(text))`, nanoGPT's shakespeare_char).
    case chars
    /// One token per byte of the UTF-8 text; the vocabulary is all 256 bytes.
    case bytes
    /// Byte-level BPE (GPT-2's; `BytePairEncoding`), trained on the corpus or read from a
    /// Hugging Face `tokenizer.json`.
    case bpe
}

public enum TextPreparation {
    /// Reads every input (strict UTF-8), concatenates them in order, tokenizes, and writes the
    /// first (1 − validation) of the tokens to `train.h5` and the rest to `val.h5` (nanoGPT's
    /// split). Each file is written under a temporary name and renamed. Returns the paths.
    /// With `.bpe`: `bpeVocabulary` tokens are learned from the corpus, or `tokenizerFile` (a
    /// Hugging Face tokenizer.json) encodes it; either way `tokenizer.json` is written beside the
    /// token files.
    public static func prepare(inputs: [String], outputDirectory: String, tokenizer: TextTokenizer,
                               validation: Double, bpeVocabulary: Int? = nil, tokenizerFile: String? = nil) throws -> [String] {
        guard !inputs.isEmpty else { throw CohortError("prepare text: give at least one --input file") }
        guard validation >= 0, validation < 1 else { throw CohortError("prepare text: --validation must be in [0, 1), got \(validation)") }
        if tokenizer == .bytes { return try streamBytes(inputs: inputs, outputDirectory: outputDirectory, validation: validation) }
        var bytes: [UInt8] = []
        for input in inputs {
            guard let data = FileManager.default.contents(atPath: input) else {
                throw CohortError("\(input): cannot read the file (missing, unreadable or a directory)")
            }
            guard String(validating: data, as: UTF8.self) != nil else {
                throw CohortError("\(input): not valid UTF-8 text\(firstInvalidUTF8(data).map { " (byte offset \($0))" } ?? "")")
            }
            bytes += data
        }
        guard !bytes.isEmpty else { throw CohortError("\(inputs.joined(separator: ", ")): the corpus is empty") }

        let tokens: [UInt32]
        let vocabulary: [String]
        var merges: [String]? = nil
        var bpeModel: BytePairEncoding? = nil
        switch tokenizer {
        case .bpe:
            let text = String(decoding: bytes, as: UTF8.self)
            let bpe: BytePairEncoding
            if let tokenizerFile {
                guard let data = FileManager.default.contents(atPath: tokenizerFile) else { throw CohortError("\(tokenizerFile): cannot read the file") }
                bpe = try BytePairEncoding(tokenizerJSON: data, source: tokenizerFile)
            } else {
                guard let bpeVocabulary else { throw CohortError("prepare text: --tokenizer bpe needs --vocab N (or --tokenizer-file tokenizer.json)") }
                bpe = try BytePairEncoding.train(text, vocabularySize: bpeVocabulary)
            }
            tokens = bpe.encode(text).map(UInt32.init)
            vocabulary = bpe.vocabulary
            merges = bpe.merges.map { "\($0.0) \($0.1)" }
            bpeModel = bpe
        case .bytes:
            tokens = bytes.map(UInt32.init)
            vocabulary = (0..<256).map { byteName(UInt8($0)) }
        case .chars:
            let scalars = String(decoding: bytes, as: UTF8.self).unicodeScalars
            let distinct = Set(scalars).sorted { $0.value < $1.value }
            if distinct.contains("\0") {
                throw CohortError("\(inputs.joined(separator: ", ")): the text holds a NUL character, which a vocabulary entry cannot; use --tokenizer bytes")
            }
            let index = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($0.element, UInt32($0.offset)) })
            tokens = scalars.map { index[$0]! }
            vocabulary = distinct.map { String($0) }
        }
        let validationCount = Int((Double(tokens.count) * validation).rounded())
        let trainCount = tokens.count - validationCount
        guard trainCount > 1, validation == 0 || validationCount > 1 else {
            throw CohortError("\(inputs.joined(separator: ", ")): \(tokens.count) tokens are too few to split \(validation) off for validation")
        }
        try makeDirectories(outputDirectory, for: "the prepared token files")
        let source = inputs.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")
        var written = ["\(outputDirectory)/train.h5"]
        try write(tokens[0..<trainCount], to: written[0], vocabulary: vocabulary, merges: merges, tokenizer: tokenizer, source: source, split: "train")
        if validationCount > 0 {
            written.append("\(outputDirectory)/val.h5")
            try write(tokens[trainCount...], to: written[1], vocabulary: vocabulary, merges: merges, tokenizer: tokenizer, source: source, split: "validation")
        }
        if let bpeModel {
            let path = "\(outputDirectory)/tokenizer.json"
            guard FileManager.default.createFile(atPath: path + ".tmp-\(getpid())", contents: Data(bpeModel.tokenizerJSON.utf8)),
                  rename(path + ".tmp-\(getpid())", path) == 0 else {
                throw CohortError("\(path): cannot write the tokenizer")
            }
            written.append(path)
        }
        return written
    }

    /// `--tokenizer bytes`: every byte is its own token, so the inputs are copied through in
    /// 8 MiB pieces and never held whole; a corpus of any size (the Linux sources of W8, about a
    /// gigabyte) takes 8 MiB of memory. Any bytes are accepted, UTF-8 or not.
    private static func streamBytes(inputs: [String], outputDirectory: String, validation: Double) throws -> [String] {
        var sizes: [Int] = []
        for input in inputs {
            var status = stat()
            guard stat(input, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
                throw CohortError("\(input): cannot read the file (missing, unreadable or not a regular file)")
            }
            sizes.append(Int(status.st_size))
        }
        let total = sizes.reduce(0, +)
        guard total > 0 else { throw CohortError("\(inputs.joined(separator: ", ")): the corpus is empty") }
        let validationCount = Int((Double(total) * validation).rounded())
        let trainCount = total - validationCount
        guard trainCount > 1, validation == 0 || validationCount > 1 else {
            throw CohortError("\(inputs.joined(separator: ", ")): \(total) tokens are too few to split \(validation) off for validation")
        }
        try makeDirectories(outputDirectory, for: "the prepared token files")
        let source = inputs.count <= 8 ? inputs.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ") : "\(inputs.count) files"
        let splits = [("train", "\(outputDirectory)/train.h5", 0..<trainCount), ("validation", "\(outputDirectory)/val.h5", trainCount..<total)]
            .filter { !$0.2.isEmpty }
        let temporaries = splits.map { $0.1 + ".tmp-\(getpid())" }
        defer { temporaries.forEach { unlink($0) } }
        var files: [HDF5File] = []
        for ((split, _, range), temporary) in zip(splits, temporaries) {
            let file = try HDF5File.create(temporary)
            try file.createDataset("tokens", of: UInt8.self, shape: [range.count], chunkRows: min(range.count, 1 << 16))
            try file.setAttribute("vocabulary", (0..<256).map { byteName(UInt8($0)) })
            try file.setAttribute("tokenizer", TextTokenizer.bytes.rawValue)
            try file.setAttribute("format", "cohort-tokens")
            try file.setAttribute("source", source)
            try file.setAttribute("split", split)
            try file.setAttribute("tokens_count", [Int64(range.count)])
            files.append(file)
        }
        var piece = [UInt8](repeating: 0, count: 8 << 20)
        var position = 0
        for (input, size) in zip(inputs, sizes) {
            let descriptor = open(input, O_RDONLY)
            guard descriptor >= 0 else { throw CohortError("\(input): cannot open the file (\(String(cString: strerror(errno))))") }
            defer { close(descriptor) }
            var left = size
            while left > 0 {
                let count = piece.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, min($0.count, left)) }
                guard count > 0 else { throw CohortError("\(input): the file ended or failed after \(size - left) of its \(size) bytes") }
                // The piece may straddle the train/validation boundary.
                for (index, (_, _, range)) in splits.enumerated() {
                    let overlap = range.clamped(to: position..<(position + count))
                    guard !overlap.isEmpty else { continue }
                    try piece.withUnsafeBufferPointer {
                        try files[index].writeRows("tokens", start: overlap.lowerBound - range.lowerBound, count: overlap.count,
                                                   from: $0.baseAddress! + (overlap.lowerBound - position))
                    }
                }
                position += count
                left -= count
            }
        }
        for file in files {
            try file.flush()
            file.close()
        }
        for ((_, path, _), temporary) in zip(splits, temporaries) { try replaceItem(at: path, with: temporary) }
        return splits.map(\.1)
    }

    /// A byte's vocabulary entry: printable ASCII as itself, anything else as `<0xNN>`.
    static func byteName(_ byte: UInt8) -> String {
        (0x20..<0x7f).contains(byte) ? String(UnicodeScalar(byte)) : String(format: "<0x%02X>", byte)
    }

    private static func firstInvalidUTF8(_ data: Data) -> Int? {
        var offset = 0
        var iterator = data.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += String(scalar).utf8.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    private static func write(_ tokens: ArraySlice<UInt32>, to path: String, vocabulary: [String], merges: [String]?,
                              tokenizer: TextTokenizer, source: String, split: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        do {
            let file = try HDF5File.create(temporary)
            let chunk = min(tokens.count, 1 << 16)
            if vocabulary.count <= 1 << 8 {
                try file.write("tokens", tokens.map { UInt8($0) }, shape: [tokens.count], chunkRows: chunk)
            } else if vocabulary.count <= 1 << 16 {
                try file.write("tokens", tokens.map { UInt16($0) }, shape: [tokens.count], chunkRows: chunk)
            } else {
                try file.write("tokens", Array(tokens), shape: [tokens.count], chunkRows: chunk)
            }
            try file.setAttribute("vocabulary", vocabulary)
            try file.setAttribute("tokenizer", tokenizer.rawValue)
            if let merges { try file.setAttribute("merges", merges) }
            try file.setAttribute("format", "cohort-tokens")
            try file.setAttribute("source", source)
            try file.setAttribute("split", split)
            try file.setAttribute("tokens_count", [Int64(tokens.count)])
            try file.flush()
            file.close()
        } catch {
            unlink(temporary)
            throw error
        }
        try replaceItem(at: path, with: temporary)
    }
}

/// A token file's vocabulary and tokenizer: what turns text into ids and back. Stored in a
/// language model's checkpoints too, so that generation needs nothing but the checkpoint.
public struct Vocabulary: Sendable {
    public let entries: [String]
    public let tokenizer: String
    /// Where it came from, for messages (a token file or a checkpoint).
    public let source: String
    /// A byte-level BPE's merges ("left right"), in rank order.
    public let merges: [String]
    private let bpe: BytePairEncoding?

    public init(entries: [String], tokenizer: String, source: String, merges: [String] = []) throws {
        (self.entries, self.tokenizer, self.source, self.merges) = (entries, tokenizer, source, merges)
        bpe = tokenizer == TextTokenizer.bpe.rawValue
            ? try BytePairEncoding(vocabulary: entries, merges: merges.map { merge in
                let parts = merge.split(separator: " ", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw CohortError("\(source): BPE merge '\(merge)' is not two tokens") }
                return (parts[0], parts[1])
            })
            : nil
    }

    /// The bytes of one token (a BPE token is several; a character token its UTF-8).
    public func bytes(of id: Int) -> [UInt8] {
        if let bpe { return bpe.rawBytes(id) }
        if tokenizer == TextTokenizer.bytes.rawValue { return [UInt8(id)] }
        return Array(entries[id].utf8)
    }

    public var count: Int { entries.count }

    /// The text of token ids (bytes are gathered and decoded as UTF-8, invalid sequences as U+FFFD).
    public func decode(_ ids: [Int]) -> String {
        if let bpe { return bpe.decode(ids) }
        if tokenizer == TextTokenizer.bytes.rawValue { return String(decoding: ids.map { UInt8($0) }, as: UTF8.self) }
        return ids.map { entries[$0] }.joined()
    }

    /// The ids of `text`; a character outside the vocabulary is an error naming it.
    public func encode(_ text: String) throws -> [Int] {
        if let bpe { return bpe.encode(text) }
        if tokenizer == TextTokenizer.bytes.rawValue { return text.utf8.map(Int.init) }
        let index = Dictionary(entries.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        return try text.unicodeScalars.map { scalar in
            guard let id = index[String(scalar)] else {
                throw CohortError("the prompt's character \(String(reflecting: String(scalar))) (U+\(String(format: "%04X", scalar.value))) is not in the vocabulary of \(source) (\(entries.count) tokens)")
            }
            return id
        }
    }
}

extension TokenCorpus {
    public var tokenVocabulary: Vocabulary { get throws { try Vocabulary(entries: vocabulary, tokenizer: tokenizer, source: path, merges: merges) } }
    public func decode(_ ids: [Int]) throws -> String { try tokenVocabulary.decode(ids) }
    public func encode(_ text: String) throws -> [Int] { try tokenVocabulary.encode(text) }
}
