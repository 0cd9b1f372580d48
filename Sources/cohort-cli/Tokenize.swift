import ArgumentParser
import Cohort
import Foundation

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of each line of a text file under a tokenizer.json (WordPiece).",
        discussion: """
        One line of ids, separated by spaces, per input line, with [CLS] and [SEP] when the
        tokenizer adds them: what Hugging Face tokenizers' encode(line).ids gives
        (Benchmarks/check_wordpiece.py compares the two over a whole corpus). Runs in one process.
        """
    )

    @Option(help: "A Hugging Face tokenizer.json with a WordPiece model (BERT's).")
    var tokenizer: String

    @Option(help: "A UTF-8 text file; each line is encoded on its own.")
    var input: String

    @Option(help: "Truncate each line's ids to this many, special tokens included.")
    var maxLength: Int?

    func run() throws {
        reportingErrors {
            let wordPiece = try WordPiece(tokenizerJSON: tokenizer)
            guard let data = FileManager.default.contents(atPath: input) else { throw CohortError("\(input): cannot read") }
            guard let text = String(data: data, encoding: .utf8) else { throw CohortError("\(input): not UTF-8 text") }
            if let maxLength, maxLength < 1 { throw CohortError("--max-length must be positive, got \(maxLength)") }
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            if text.hasSuffix("\n") { lines.removeLast() }
            var output = ""
            for line in lines {
                output += wordPiece.encode(String(line), maxLength: maxLength).map(String.init).joined(separator: " ") + "\n"
                if output.utf8.count > 1 << 20 { FileHandle.standardOutput.write(Data(output.utf8)); output = "" }
            }
            FileHandle.standardOutput.write(Data(output.utf8))
        }
    }
}
