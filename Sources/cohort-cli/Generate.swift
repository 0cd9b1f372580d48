import ArgumentParser
import Cohort
import Foundation

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream text from a language-model checkpoint to standard output (tokens/s on standard error).",
        discussion: """
        Attention keeps a key/value cache, so each token is one pass of one row through the model.
        The vocabulary comes from the token file the checkpoint was trained on (its stored
        data.train), or from --data. Runs in one process.
        """
    )

    @Argument(help: "A checkpoint of a language model (cohort train on a token file).")
    var checkpoint: String

    @Option(help: "Text to start from (default: the first token of the vocabulary).")
    var prompt: String?

    @Option(help: "Tokens to generate.")
    var tokens: Int = 300

    @Option(help: "Softmax temperature (0 is greedy).")
    var temperature: Double = 1.0

    @Option(name: .customLong("top-k"), help: "Sample only among the k most likely tokens.")
    var topK: Int?

    @Option(name: .customLong("top-p"), help: "Sample only among the most likely tokens whose probabilities sum to p.")
    var topP: Double?

    @Option(help: "Seed of the sampling generator.")
    var seed: UInt64 = 0

    @Flag(help: "Always take the most likely token.")
    var greedy = false

    @Option(help: "Token file whose vocabulary to use (default: the checkpoint's data.train).")
    var data: String?

    func run() throws {
        LayerThreads.use(LayerThreads.boundCores())
        reportingErrors {
            guard tokens >= 0 else { throw CohortError("--tokens must be 0 or more") }
            guard temperature >= 0, temperature.isFinite else { throw CohortError("--temperature must be 0 or more") }
            if let topK, topK < 1 { throw CohortError("--top-k must be at least 1") }
            if let topP, !(topP > 0 && topP <= 1) { throw CohortError("--top-p must be in (0, 1]") }
            let stored = try Checkpoint.read(from: checkpoint)
            let config = try TrainConfig.parse(text: stored.config, file: "\(checkpoint) (stored config)")
            // The vocabulary the checkpoint carries, or a token file's (--data, or an older checkpoint's data.train).
            let corpus: Vocabulary
            if data == nil, let stored = try stored.vocabulary(source: checkpoint) {
                corpus = stored
            } else {
                let path = data ?? config.data.train
                guard TokenCorpus.isTokenFile(path) else {
                    throw CohortError("\(path): not a token file; \(checkpoint) is not a language model, or give its token file with --data")
                }
                corpus = try TokenCorpus(path: path, cache: false).tokenVocabulary
            }
            let generator = try TextGenerator(layers: config.layers, capacity: config.data.window ?? 1024, seed: config.seed)
            guard generator.vocabulary == corpus.count else {
                throw CohortError("\(corpus.source): its vocabulary has \(corpus.count) tokens, the model of \(checkpoint) \(generator.vocabulary)")
            }
            try stored.restoreModel(generator.model, source: checkpoint)
            let promptIDs = try prompt.map { try corpus.encode($0) } ?? [0]
            guard !promptIDs.isEmpty else { throw CohortError("--prompt is empty") }

            let output = FileHandle.standardOutput
            if let prompt { output.write(Data(prompt.utf8)) }
            var pending: [UInt8] = []
            let sampling = Sampling(temperature: Float(temperature), topK: topK, topP: topP.map(Float.init), greedy: greedy)
            let start = monotonicNanoseconds()
            generator.generate(prompt: promptIDs, count: tokens, sampling: sampling, seed: seed) { id in
                if corpus.tokenizer != TextTokenizer.chars.rawValue {
                    // Bytes and BPE tokens: print whole UTF-8 characters only.
                    pending += corpus.bytes(of: id)
                    if String(validating: pending, as: UTF8.self) != nil || pending.count >= 4 {
                        output.write(Data(pending))
                        pending = []
                    }
                } else {
                    output.write(Data(corpus.entries[id].utf8))
                }
            }
            output.write(Data(pending + [10]))
            let elapsed = seconds(since: start)
            printError(String(format: "generated %d tokens after a %d-token prompt in %.3f s: %.0f tokens/s (context %d, one token per pass)",
                              tokens, promptIDs.count, elapsed, Double(tokens) / max(elapsed, 1e-9), generator.capacity))
        }
    }
}
