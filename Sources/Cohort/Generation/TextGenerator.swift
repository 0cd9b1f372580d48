#if canImport(Glibc)
import Glibc
#endif

extension PositionalEmbedding: IncrementalLayer {
    public func startSequence(capacity: Int) { offset = 0 }
    public func move(to position: Int) { offset = position }
}

extension Attention: IncrementalLayer {
    public func startSequence(capacity: Int) {
        if cache == nil || cache!.capacity != capacity { cache = Cache(capacity: capacity, width: width) }
        cache!.position = 0
    }
    public func move(to position: Int) { cache?.position = position }
}

/// How the next token is drawn from the logits.
public struct Sampling: Sendable {
    public var temperature: Float = 1
    public var topK: Int? = nil
    public var topP: Float? = nil
    public var greedy = false
    public init(temperature: Float = 1, topK: Int? = nil, topP: Float? = nil, greedy: Bool = false) {
        (self.temperature, self.topK, self.topP, self.greedy) = (temperature, topK, topP, greedy)
    }
}

/// Autoregressive generation from a trained language model, one token per forward pass of a
/// one-token model: attention keeps every earlier position's keys and values (`Attention.Cache`),
/// so a token costs one row through each layer instead of the whole context.
///
/// The context holds at most `capacity` tokens (the positional table, or the training window).
/// When it is full, the cache is refilled with the newest capacity/2 tokens at positions
/// 0 … capacity/2 − 1 and generation goes on: every token sees between capacity/2 and capacity
/// tokens of context, and each refill costs capacity/2 one-row passes (one per capacity/2 tokens).
public final class TextGenerator {
    public let model: Model
    public let capacity: Int
    public let vocabulary: Int
    private let incremental: [IncrementalLayer]
    private var context: [Int] = []

    public init(layers: [LayerSpec], capacity: Int, seed: UInt64 = 0) throws {
        model = try Model(inputShape: [1], layers: layers, maxBatch: 1, seed: seed)
        guard let width = model.outputShape.last, model.outputShape == [1, width] else {
            throw CohortError("generate: the model gives \(model.outputShape) per token; a language model gives [T, vocabulary]")
        }
        vocabulary = width
        incremental = model.stack.allLayers.compactMap { $0 as? IncrementalLayer }
        let tables = model.stack.allLayers.compactMap { ($0 as? PositionalEmbedding)?.maxLength }
        self.capacity = min(capacity, tables.min() ?? capacity)
        guard self.capacity >= 2 else { throw CohortError("generate: a context of \(self.capacity) token(s) is too short") }
        reset()
    }

    public func reset() {
        context = []
        for layer in incremental { layer.startSequence(capacity: capacity) }
    }

    /// Feeds one token at the next position; returns the logits [vocabulary] for the token after it.
    public func feed(_ token: Int) -> UnsafePointer<Float> {
        if context.count == capacity {
            let kept = Array(context.suffix(capacity / 2))
            reset()
            for old in kept { _ = step(old) }
        }
        return step(token)
    }

    private func step(_ token: Int) -> UnsafePointer<Float> {
        for layer in incremental { layer.move(to: context.count) }
        context.append(token)
        var input = Float(token)
        return model.forward(&input, batch: 1, training: false)
    }

    /// Feeds the prompt, then draws `count` tokens, handing each to `emit` as it comes.
    public func generate(prompt: [Int], count: Int, sampling: Sampling, seed: UInt64, emit: (Int) -> Void) {
        reset()
        var generator = Generator(seed: seed, streams: Stream.generation.rawValue)
        var logits: UnsafePointer<Float>? = nil
        for token in prompt { logits = feed(token) }
        for _ in 0..<count {
            let next = logits.map { choose(from: $0, sampling: sampling, generator: &generator) } ?? 0
            emit(next)
            logits = feed(next)
        }
    }

    /// Greedy: the arg-max. Otherwise softmax(logits / temperature) restricted to the top k and
    /// then to the smallest set of most likely tokens whose mass reaches p, renormalized.
    func choose(from logits: UnsafePointer<Float>, sampling: Sampling, generator: inout Generator) -> Int {
        if sampling.greedy || sampling.temperature == 0 {
            var best = 0
            for k in 1..<vocabulary where logits[k] > logits[best] { best = k }
            return best
        }
        var order = Array(0..<vocabulary).sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if let k = sampling.topK { order = Array(order.prefix(max(k, 1))) }
        let maximum = logits[order[0]]
        var weights = order.map { Double(expf((logits[$0] - maximum) / sampling.temperature)) }
        if let p = sampling.topP {
            let total = weights.reduce(0, +)
            var mass = 0.0
            var keep = 0
            while keep < weights.count {
                mass += weights[keep] / total
                keep += 1
                if mass >= Double(p) { break }
            }
            order = Array(order.prefix(keep))
            weights = Array(weights.prefix(keep))
        }
        let total = weights.reduce(0, +)
        var draw = Double(generator.nextUnitFloat()) * total
        for (index, weight) in weights.enumerated() {
            draw -= weight
            if draw < 0 { return order[index] }
        }
        return order[order.count - 1]
    }
}
