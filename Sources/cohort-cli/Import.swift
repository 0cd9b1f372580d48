import ArgumentParser
import Cohort
import Foundation

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a published model as a Cohort checkpoint (Hugging Face GPT-2 family).",
        discussion: """
        cohort import huggingface DIR --out FILE.h5 reads DIR/config.json and DIR/model.safetensors
        (as transformers' save_pretrained writes them) and writes a checkpoint with the model's
        layers and weights and no optimizer state. Train from it with
        model.init_from: {checkpoint: FILE.h5} and the same layers (the checkpoint's config lists
        them), or evaluate and export it. Every tensor is mapped or refused by name; a
        config.json setting Cohort does not implement is refused naming the key. The BERT family
        is not implemented yet. Runs in one process.
        """
    )

    @Argument(help: "What to import: huggingface.")
    var kind: String

    @Argument(help: "A Hugging Face model directory (config.json, model.safetensors).")
    var directory: String

    @Option(help: "The checkpoint file to write (must not exist).")
    var out: String

    func run() throws {
        reportingErrors {
            guard kind == "huggingface" else { throw CohortError("import \(kind): Cohort imports huggingface model directories") }
            guard !FileManager.default.fileExists(atPath: out) else {
                throw CohortError("\(out): exists; choose a new file (a checkpoint is never written over)")
            }
            let imported = try HuggingFace.importModel(from: directory)
            try imported.checkpoint.writeAtomically(to: out)
            imported.notes.forEach(printLine)
            printLine("wrote \(out)")
        }
    }
}
