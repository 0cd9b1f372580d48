import ArgumentParser
import Cohort
import Foundation

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write sentence embeddings of a text file's lines with a BERT-family checkpoint, as HDF5.",
        discussion: """
        Each line is one text, tokenized with the checkpoint's tokenizer.json (or --tokenizer),
        at most --max-length ids with [CLS] and [SEP]; a batch is padded to its longest line. The
        model's output is mean-pooled over the real tokens (a sequence_pool the model ends with,
        or one appended) and divided by its L2 norm, as sentence-transformers' encode gives it.
        Output: embeddings float32 [N, C]; attributes checkpoint, source. Runs in one process.
        """
    )

    @Argument(help: "A checkpoint of a BERT-family model (cohort import huggingface, or a run from one).")
    var checkpoint: String

    @Option(help: "A UTF-8 text file, one text per line.")
    var data: String

    @Option(help: "Output HDF5 file.")
    var out: String

    @Option(help: "A tokenizer.json to use instead of the checkpoint's.")
    var tokenizer: String?

    @Option(help: "Ids per text at most, [CLS] and [SEP] included.")
    var maxLength: Int = 128

    @Option(help: "Texts per forward pass.")
    var batchSize: Int = 32

    func run() throws {
        LayerThreads.use(LayerThreads.boundCores())
        reportingErrors {
            try refuseOutput(out, namingAnyOf: [checkpoint, data] + (tokenizer.map { [$0] } ?? []))
            guard batchSize >= 1 else { throw CohortError("--batch-size must be positive, got \(batchSize)") }
            let stored = try Checkpoint.read(from: checkpoint)
            let embedder = try SentenceEmbedder(checkpoint: stored, source: checkpoint, tokenizer: try tokenizer.map { try WordPiece(tokenizerJSON: $0) },
                                                maxLength: maxLength)
            embedder.notes.forEach(printLine)
            guard let bytes = FileManager.default.contents(atPath: data) else { throw CohortError("\(data): cannot read") }
            guard let text = String(data: bytes, encoding: .utf8) else { throw CohortError("\(data): not UTF-8 text") }
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if text.hasSuffix("\n") { lines.removeLast() }
            let embeddings = try embedder.embed(lines, batchSize: batchSize)
            try writeHDF5(out) { file in
                try file.write("embeddings", embeddings, shape: [lines.count, embedder.width])
                try file.setAttribute("checkpoint", checkpoint)
                try file.setAttribute("source", data)
            }
            printLine("wrote \(out): \(lines.count) embeddings of \(embedder.width), L2-normalized")
        }
    }
}
