import ArgumentParser
import Cohort
import Foundation

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a dataset into Cohort's HDF5 layout (datasets/README.md).",
        subcommands: [PrepareFashionMNIST.self, PrepareIDX.self, PrepareSynthetic.self, PrepareSubset.self, PrepareText.self, PrepareCSV.self,
                      PrepareTextClassification.self]
    )
}

struct PrepareFashionMNIST: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fashion-mnist",
        abstract: "Write train.h5 and test.h5 from the IDX files of Debian's dataset-fashion-mnist."
    )

    @Option(help: "Folder holding the four IDX .gz files.")
    var source: String = FashionMNIST.defaultSource

    @Option(help: "Folder to write train.h5 and test.h5 into (created if missing).")
    var out: String = "data/fashion-mnist"

    func run() throws {
        reportingErrors {
            for path in try FashionMNIST.prepare(source: source, outputDirectory: out) { printLine("wrote \(path)") }
        }
    }
}

struct PrepareText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Write train.h5 and val.h5 token files from UTF-8 text (the last --validation fraction is val.h5).",
        discussion: "Layout: datasets/README.md (token files). A config reads them with data.window: T."
    )

    @Option(name: .customLong("input"), parsing: .upToNextOption, help: "Text files, concatenated in the order given.")
    var inputs: [String] = []

    @Option(help: "Folder to write train.h5 and val.h5 into (created if missing).")
    var out: String

    @Option(help: "chars (one token per Unicode character of the corpus), bytes (256 byte tokens) or bpe (byte-level BPE, GPT-2's).")
    var tokenizer: String = "chars"

    @Option(help: "bpe: tokens to learn from the corpus (256 bytes + merges); writes tokenizer.json beside the token files.")
    var vocab: Int?

    @Option(name: .customLong("tokenizer-file"), help: "bpe: encode with this Hugging Face tokenizer.json (a byte-level BPE) instead of learning one.")
    var tokenizerFile: String?

    @Option(help: "Fraction of the tokens, from the end, written to val.h5.")
    var validation: Double = 0.1

    func run() throws {
        reportingErrors {
            guard let kind = tokenizerFile != nil ? .bpe : TextTokenizer(rawValue: tokenizer) else {
                throw CohortError("--tokenizer: '\(tokenizer)' is not one of \(TextTokenizer.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if kind != .bpe, vocab != nil { throw CohortError("--vocab is for --tokenizer bpe") }
            let started = monotonicNanoseconds()
            for path in try TextPreparation.prepare(inputs: inputs, outputDirectory: out, tokenizer: kind, validation: validation,
                                                    bpeVocabulary: vocab, tokenizerFile: tokenizerFile) {
                guard path.hasSuffix(".h5") else {
                    printLine(String(format: "wrote \(path) (%.1f s)", seconds(since: started)))
                    continue
                }
                let corpus = try TokenCorpus(path: path)
                printLine("wrote \(path): \(corpus.count) tokens, vocabulary \(corpus.vocabulary.count) (\(corpus.tokenizer))")
            }
        }
    }
}

struct PrepareCSV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csv",
        abstract: "Write train.h5 and val.h5 from a CSV table with a header row (features [N, D], labels [N]).",
        discussion: """
        Rows are shuffled with --seed; the last --validation fraction is val.h5. Classification
        (the default): the label column's distinct values, sorted, are the classes. --regression:
        float targets (loss: mean_squared_error). Per-column mean and std of the training rows are
        stored for normalize: standardize. Layout: datasets/README.md (tables).
        """
    )

    @Option(help: "The CSV file.")
    var input: String

    @Option(help: "The column to predict.")
    var label: String

    @Option(help: "Comma-separated feature columns (default: every other column).")
    var features: String?

    @Option(help: "Comma-separated columns of categories, one-hot encoded.")
    var categorical: String = ""

    @Flag(help: "The label is a number to predict, not a class.")
    var regression = false

    @Option(help: "Fraction of the rows written to val.h5.")
    var validation: Double = 0.2

    @Option(help: "Seed of the row shuffle.")
    var seed: UInt64 = 0

    @Option(help: "Folder to write train.h5 and val.h5 into (created if missing).")
    var out: String

    func run() throws {
        reportingErrors {
            guard (0..<1).contains(validation) else { throw CohortError("--validation \(validation): must be in [0, 1)") }
            let list = { (text: String) in text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            let summary = try TablePreparation.prepare(input: input, label: label, features: features.map(list), categorical: list(categorical),
                                                       regression: regression, validation: validation, seed: seed, outputDirectory: out)
            let target = summary.classNames.map { "classes \($0.joined(separator: ", "))" } ?? "regression targets"
            printLine("wrote \(summary.files.joined(separator: ", ")): \(summary.trainRows) + \(summary.validationRows) rows, \(summary.columns.count) feature columns, \(target)")
        }
    }
}

struct PrepareIDX: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idx",
        abstract: "Write one HDF5 file from any IDX images/labels pair (unsigned-byte IDX, .gz or plain)."
    )

    @Option(help: "IDX images file: [N, H, W] or [N, H, W, C].")
    var images: String

    @Option(help: "IDX labels file: [N].")
    var labels: String

    @Option(help: "Output HDF5 file.")
    var out: String

    @Option(help: "Comma-separated class names (default: class 0, class 1, …).")
    var classNames: String?

    func run() throws {
        reportingErrors {
            let names = classNames.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            let set = try FashionMNIST.readIDXPair(images: images, labels: labels, classNames: names,
                                                   source: "IDX pair \(images), \(labels)")
            try set.write(to: out)
            printLine("wrote \(out): \(set.count) rows of \(set.height)×\(set.width)×\(set.channels), \(set.classNames.count) classes")
        }
    }
}

struct PrepareSynthetic: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthetic",
        abstract: "Write a learnable synthetic image dataset (class prototype plus noise) of any size."
    )

    @Option(help: "Number of rows.")
    var rows: Int

    @Option(help: "Per-sample shape H,W,C (NHWC), e.g. 28,28,1.")
    var shape: String = "28,28,1"

    @Option(help: "Number of classes.")
    var classes: Int = 10

    @Option(help: "Half-width of the uniform pixel noise added to each class prototype (0-255).")
    var noise: Int = 64

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Output HDF5 file.")
    var out: String

    func run() throws {
        let dims = shape.split(separator: ",").compactMap { Int($0) }
        guard dims.count == 3, dims.allSatisfy({ $0 > 0 }) else { fail("--shape \(shape): expected H,W,C with positive integers") }
        guard rows > 0, classes > 0, classes <= 1 << 16, (0...255).contains(noise) else {
            fail("--rows and --classes must be positive and --noise within 0-255")
        }
        reportingErrors {
            if rows * dims.reduce(1, *) > 256 << 20 {
                // Large files are streamed in slices (no mean/std attributes: use normalize: scale).
                try SyntheticImages.write(to: out, rows: rows, height: dims[0], width: dims[1], channels: dims[2],
                                          classes: classes, noise: noise, seed: seed)
            } else {
                try SyntheticImages.make(rows: rows, height: dims[0], width: dims[1], channels: dims[2],
                                         classes: classes, noise: noise, seed: seed).write(to: out)
            }
            printLine("wrote \(out): \(rows) rows of \(dims[0])×\(dims[1])×\(dims[2]), \(classes) classes")
        }
    }
}

struct PrepareSubset: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subset",
        abstract: "Write the rows of some classes of a Cohort image file, relabelled 0, 1, … in the order given.",
        discussion: "Example, the binary task sneaker (7) vs ankle boot (9):\n  cohort prepare subset --source data/fashion-mnist/train.h5 --classes 7,9 --out data/sneaker-boot/train.h5"
    )

    @Option(help: "A file in Cohort's image layout (datasets/README.md).")
    var source: String

    @Option(help: "Comma-separated class ids to keep; the first becomes 0.")
    var classes: String

    @Option(help: "Output HDF5 file.")
    var out: String

    func run() throws {
        let ids = classes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !ids.isEmpty, ids.allSatisfy({ $0 != nil }) else { fail("--classes \(classes): expected comma-separated integers") }
        reportingErrors {
            let subset = try ImageSet.read(from: source).subset(classes: ids.compactMap { $0 })
            try makeDirectories(URL(fileURLWithPath: out).deletingLastPathComponent().path, for: "the subset")
            try subset.write(to: out)
            printLine("wrote \(out): \(subset.count) rows, classes \(subset.classNames.joined(separator: ", "))")
        }
    }
}

struct PrepareTextClassification: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text-classification",
        abstract: "Write one HDF5 file of tokenized, labelled texts (ids [N, max-length], lengths, labels) for a BERT-family model.",
        discussion: """
        --input is JSON lines (.jsonl: one object per line) or a CSV table with a header row
        (.csv). Texts are tokenized with a BERT tokenizer.json ([CLS] … [SEP], truncated to
        --max-length; with --text-pair, [CLS] text [SEP] pair [SEP], the longer text cut first,
        and the model's bert_embeddings gives the pair's part token type 1 after the first
        [SEP]) and padded with its [PAD] id; the tokenizer is stored in the file. Classes
        are the distinct labels, sorted, unless --classes lists them (give a test file its
        training file's classes, so that the indices agree). A config reads the file with
        features: ids, normalize: none (datasets/README.md, "Texts for classification").
        """
    )

    @Option(help: "A .jsonl or .csv file of labelled texts.")
    var input: String

    @Option(help: "The key (JSON) or column (CSV) of the text.")
    var text: String

    @Option(help: "The key or column of a second text (a sentence pair: [CLS] text [SEP] pair [SEP], token types 0 then 1).")
    var textPair: String?

    @Option(help: "The key or column of the label.")
    var label: String

    @Option(help: "A Hugging Face tokenizer.json with a WordPiece model (BERT's).")
    var tokenizer: String

    @Option(help: "Ids per text at most, [CLS] and [SEP] included.")
    var maxLength: Int = 128

    @Option(help: "Comma-separated class names in index order (default: the distinct labels, sorted).")
    var classes: String?

    @Option(help: "The HDF5 file to write.")
    var out: String

    func run() throws {
        reportingErrors {
            try refuseOutput(out, namingAnyOf: [input, tokenizer])
            let given = classes.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            let summary = try TextClassificationPreparation.prepare(input: input, textKey: text, pairKey: textPair, labelKey: label, tokenizerPath: tokenizer,
                                                                    maxLength: maxLength, classes: given, output: out)
            printLine("wrote \(out): \(summary.rows) texts, \(summary.classNames.count) classes (\(summary.classNames.joined(separator: ", "))), "
                      + "longest \(summary.longest) ids, \(summary.truncated) truncated at \(maxLength)")
        }
    }
}
