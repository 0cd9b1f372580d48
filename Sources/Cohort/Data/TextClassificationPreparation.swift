import Foundation

/// `cohort prepare text-classification`: labelled texts (JSON lines or a CSV table with a
/// header row) tokenized with a BERT `tokenizer.json` into one HDF5 file:
///   ids int32 [N, max_length]    `[CLS] … [SEP]` (a pair: `[CLS] a [SEP] b [SEP]`, the longer
///                                part cut first), truncated, padded with the pad id after
///   lengths int32 [N]            the real ids of each row
///   labels int64 [N]             class indices
///   tokenizer/json uint8         the tokenizer.json, so that the file says how it was made
/// attributes class_names, num_classes, pad_id, max_length, format "cohort-dataset", source.
/// Classes are the distinct labels, sorted, unless given (`classes`; a test file takes its
/// training file's so that the indices agree). A config reads it with `features: ids`,
/// `normalize: none`; `bert_embeddings` finds each row's length from its padding.
public enum TextClassificationPreparation {
    public struct Summary {
        public let rows: Int
        public let classNames: [String]
        public let truncated: Int
        public let longest: Int
    }

    public static func prepare(input: String, textKey: String, pairKey: String? = nil, labelKey: String, tokenizerPath: String, maxLength: Int,
                               classes given: [String]?, output: String) throws -> Summary {
        let specials = pairKey == nil ? 2 : 3
        guard maxLength >= specials else {
            throw CohortError("--max-length must be at least \(specials) ([CLS] and [SEP]\(pairKey == nil ? "" : " twice")), got \(maxLength)")
        }
        guard let tokenizerData = FileManager.default.contents(atPath: tokenizerPath) else { throw CohortError("\(tokenizerPath): cannot read") }
        let tokenizer = try WordPiece(json: tokenizerData, source: tokenizerPath)
        guard let padID = tokenizer.vocabulary["[PAD]"] else { throw CohortError("\(tokenizerPath): no [PAD] token in the vocabulary") }
        if pairKey != nil, tokenizer.separator == nil { throw CohortError("\(tokenizerPath): adds no [SEP], so it cannot join a sentence pair") }
        let examples = try read(input, textKey: textKey, pairKey: pairKey, labelKey: labelKey)
        guard !examples.isEmpty else { throw CohortError("\(input): no examples") }
        let classNames = given ?? Array(Set(examples.map(\.label))).sorted { a, b in
            if let x = Double(a), let y = Double(b) { return x < y }
            return a < b
        }
        let index = Dictionary(classNames.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        var ids = [Int32](repeating: Int32(padID), count: examples.count * maxLength)
        var lengths = [Int32](repeating: 0, count: examples.count)
        var labels = [Int64](repeating: 0, count: examples.count)
        var truncated = 0
        for (row, example) in examples.enumerated() {
            guard let label = index[example.label] else {
                throw CohortError("\(input): line \(example.line): label '\(example.label)' is not one of the classes (\(classNames.joined(separator: ", ")))")
            }
            let full = example.pair.map { tokenizer.encodePair(example.text, $0) } ?? tokenizer.encode(example.text)
            let encoded = full.count <= maxLength ? full
                : example.pair.map { tokenizer.encodePair(example.text, $0, maxLength: maxLength) } ?? tokenizer.encode(example.text, maxLength: maxLength)
            if full.count > maxLength { truncated += 1 }
            for (position, id) in encoded.enumerated() { ids[row * maxLength + position] = Int32(id) }
            (lengths[row], labels[row]) = (Int32(encoded.count), Int64(label))
        }
        let temporary = URL(fileURLWithPath: output).deletingLastPathComponent().appendingPathComponent(".\(URL(fileURLWithPath: output).lastPathComponent).tmp-\(getpid())").path
        do {
            let file = try HDF5File.create(temporary)
            try file.write("ids", ids, shape: [examples.count, maxLength], chunkRows: 1024)
            try file.write("lengths", lengths, shape: [examples.count])
            try file.write("labels", labels, shape: [examples.count])
            try file.write("tokenizer/json", Array(tokenizerData), shape: [tokenizerData.count])
            try file.setAttribute("class_names", classNames)
            try file.setAttribute("num_classes", [Int64(classNames.count)])
            try file.setAttribute("pad_id", [Int64(padID)])
            try file.setAttribute("max_length", [Int64(maxLength)])
            try file.setAttribute("format", "cohort-dataset")
            try file.setAttribute("source", "\(input) (\(textKey)\(pairKey.map { " + \($0)" } ?? "") → \(labelKey)), tokenized with \(tokenizerPath)")
            if let separator = tokenizer.separator, pairKey != nil { try file.setAttribute("sep_id", [Int64(separator)]) }
            try file.flush()
            file.close()
            try FileIntegrity.seal(temporary)
            try replaceItem(at: output, with: temporary)
        } catch {
            unlink(temporary)
            throw error
        }
        return Summary(rows: examples.count, classNames: classNames, truncated: truncated, longest: Int(lengths.max() ?? 0))
    }

    struct Example { let text: String; var pair: String? = nil; let label: String; let line: Int }

    /// The examples of a `.jsonl` file (one object per line) or a CSV table with a header row.
    static func read(_ path: String, textKey: String, pairKey: String? = nil, labelKey: String) throws -> [Example] {
        guard let data = FileManager.default.contents(atPath: path) else { throw CohortError("\(path): cannot read") }
        guard let text = String(data: data, encoding: .utf8) else { throw CohortError("\(path): not UTF-8 text") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        var examples: [Example] = []
        if path.hasSuffix(".jsonl") || path.hasSuffix(".json") {
            for (number, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                    throw CohortError("\(path): line \(number + 1): not a JSON object")
                }
                guard let value = object[textKey] as? String else { throw CohortError("\(path): line \(number + 1): no text under '\(textKey)'") }
                guard let label = object[labelKey].flatMap(labelText) else { throw CohortError("\(path): line \(number + 1): no label under '\(labelKey)'") }
                var example = Example(text: value, label: label, line: number + 1)
                if let pairKey {
                    guard let pair = object[pairKey] as? String else { throw CohortError("\(path): line \(number + 1): no second text under '\(pairKey)'") }
                    example.pair = pair
                }
                examples.append(example)
            }
        } else if path.hasSuffix(".csv") {
            guard let header = lines.first else { throw CohortError("\(path): empty") }
            let columns = try TablePreparation.fields(header, file: path, line: 1)
            guard let textColumn = columns.firstIndex(of: textKey) else { throw CohortError("\(path): no column '\(textKey)' (columns: \(columns.joined(separator: ", ")))") }
            guard let labelColumn = columns.firstIndex(of: labelKey) else { throw CohortError("\(path): no column '\(labelKey)' (columns: \(columns.joined(separator: ", ")))") }
            let pairColumn = try pairKey.map { key in
                guard let column = columns.firstIndex(of: key) else { throw CohortError("\(path): no column '\(key)' (columns: \(columns.joined(separator: ", ")))") }
                return column
            }
            for (number, line) in lines.enumerated().dropFirst() where !line.isEmpty {
                let fields = try TablePreparation.fields(line, file: path, line: number + 1)
                guard fields.count == columns.count else {
                    throw CohortError("\(path): line \(number + 1): \(fields.count) fields, the header has \(columns.count) (a text with a line break must be quoted in JSON lines instead)")
                }
                examples.append(Example(text: fields[textColumn], pair: pairColumn.map { fields[$0] }, label: fields[labelColumn], line: number + 1))
            }
        } else {
            throw CohortError("\(path): give texts as .jsonl (one JSON object per line) or .csv (a header row)")
        }
        return examples
    }

    private static func labelText(_ value: Any) -> String? {
        if let text = value as? String { return text }
        if let number = value as? Int { return String(number) }
        return nil
    }
}
