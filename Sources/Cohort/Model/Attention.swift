import CCohort
#if canImport(Glibc)
import Glibc
#endif

/// `attention`: causal multi-head self-attention (nanoGPT's `CausalSelfAttention`).
///
/// YAML: `{type: attention, heads: H, dropout: 0, bias: true}`. Input and output [T, C], C = H·D.
/// Parameters: `qkv/weight` [C, 3C] and `qkv/bias` [3C] (the fused projection; columns are
/// q | k | v, each H heads of D), `proj/weight` [C, C] and `proj/bias` [C]; weights N(0, 0.02²),
/// biases zero. `dropout` acts on the attention weights and on the output, as nanoGPT's
/// `attn_dropout` and `resid_dropout` do.
public struct AttentionOptions: LayerOptions {
    public static let type = "attention"
    public var heads: Int
    public var dropout: Float
    public var bias: Bool

    public init(heads: Int, dropout: Float = 0, bias: Bool = true) {
        self.heads = heads
        self.dropout = dropout
        self.bias = bias
    }
    public init(config: ConfigMap) throws {
        guard config.has("heads") else { throw CohortError("\(config.file): \(config.path): attention needs heads") }
        heads = try config.int("heads", default: 1, range: 1...1024)
        dropout = Float(try config.double("dropout", default: 0, range: 0...0.999))
        bias = try config.bool("bias", default: true)
    }
    public var yaml: [String: String] { ["heads": "\(heads)", "dropout": "\(dropout)", "bias": "\(bias)"] }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        try Attention(name: name, inputShape: inputShape, heads: heads, dropout: dropout, bias: bias, projectionScale: 1, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(AttentionOptions(heads: 2))], inputShape: [4, 6])
    }
}

/// Per sample b and head h, with Q, K, V the [T, D] column blocks of qkv(x):
///   S = Q·Kᵀ/√D, masked above the diagonal; P = softmax(S) by rows; Y[:, h] = P·V; out = proj(Y).
/// Backward: dP = dY·Vᵀ, dV = Pᵀ·dY, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS·K/√D, dK = dSᵀ·Q/√D.
/// Each product is one SGEMM on strided views of the [T, 3C] projection; P is kept per head
/// ([B, H, T, T]) for backward. While generating, `cache` holds every earlier position's keys
/// and values, and a forward of one row attends to all of them.
public final class Attention: Layer {
    public var threading: LayerThreading { .heads }
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    let heads: Int
    let length: Int
    let width: Int
    /// Whether position i attends to positions up to i only (GPT), or to every real position
    /// (BERT's encoder): then `lengths`, when set, masks each sample's padded keys.
    let causal: Bool
    let lengths: SequenceLengths?
    let qkv: Dense
    let proj: Dense
    let weightDropout: Dropout?
    let outputDropout: Dropout?
    private let probabilities: Workspace
    private let headOutputs: Workspace
    private let probabilityGradient: Workspace
    private let scoreGradient: Workspace
    /// Per thread: a head's keys or values transposed (D × T) and a zero-padded column panel (16 × T).
    private let headScratch: Workspace
    private let qkvGradient: Workspace
    private var projected: UnsafePointer<Float>?
    private var usedProbabilities: UnsafePointer<Float>?
    private var projectionOutput: UnsafePointer<Float>?

    /// Keys and values of the positions generated so far, [capacity, C] each.
    public final class Cache {
        let keys: Workspace
        let values: Workspace
        let capacity: Int
        /// The position of the next row.
        public var position = 0
        init(capacity: Int, width: Int) {
            self.capacity = capacity
            keys = Workspace(owned: capacity * width)
            values = Workspace(owned: capacity * width)
        }
    }
    public var cache: Cache?
    private let cacheScores: Workspace

    public var sublayers: [Layer] { [qkv] + (weightDropout.map { [$0] } ?? []) + [proj] + (outputDropout.map { [$0] } ?? []) }
    /// Q·Kᵀ and P·V: 2 · T² · C per sample, the model's count (causally, about half is computed).
    public var multiplyAddsPerSample: Int { 2 * length * length * width }

    init(name: String, inputShape: [Int], heads: Int, dropout: Float, bias: Bool, projectionScale: Float, causal: Bool = true,
         lengths: SequenceLengths? = nil, builder: LayerBuilder) throws {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): attention reads a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        guard inputShape[1] % heads == 0 else {
            throw CohortError("\(name): width \(inputShape[1]) is not a multiple of heads (\(heads))")
        }
        self.name = name
        self.inputShape = inputShape
        self.heads = heads
        (self.causal, self.lengths) = (causal, lengths)
        (length, width) = (inputShape[0], inputShape[1])
        let maxBatch = builder.maxBatch
        // Bidirectionally, a padded position neither attends nor is attended to: the projections
        // and products cover each sample's real positions only.
        let realRows = causal ? nil : lengths
        qkv = Dense(name: "\(name)/qkv", inputShape: inputShape, units: 3 * width, initializer: .normal, useBias: bias,
                    lengths: realRows, builder: builder)
        weightDropout = dropout > 0
            ? Dropout(name: "\(name)/weight_dropout", inputShape: [heads, length, length], rate: dropout,
                      generator: builder.dropoutGenerator(), builder: builder) : nil
        proj = Dense(name: "\(name)/proj", inputShape: inputShape, units: width, initializer: .normal, useBias: bias,
                     initScale: projectionScale, lengths: realRows, builder: builder)
        outputDropout = dropout > 0
            ? Dropout(name: "\(name)/output_dropout", inputShape: inputShape, rate: dropout,
                      generator: builder.dropoutGenerator(), builder: builder) : nil
        probabilities = builder.workspace(maxBatch * heads * length * length)
        // Without dropout on the weights, backward makes each pair's dP in its thread's scratch.
        probabilityGradient = builder.workspace(gradient: dropout > 0 ? maxBatch * heads * length * length : 0)
        scoreGradient = builder.workspace(gradient: LayerThreads.count * length * length)
        // Scratch within one call (forward, or backward after a recomputed forward): the blocks share it.
        headScratch = builder.workspace(gradient: LayerThreads.count * Attention.scratchPerThread(length: length, headWidth: width / heads))
        headOutputs = builder.workspace(maxBatch * length * width)
        qkvGradient = builder.workspace(gradient: maxBatch * length * 3 * width)
        cacheScores = builder.workspace(length == 1 ? 1 << 16 : 1)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let projected = qkv.timedForward(input, batch: batch, training: training)
        self.projected = projected
        if let cache {
            precondition(batch == 1 && length == 1, "\(name): the key/value cache serves one row at a time")
            attendCached(projected, cache: cache)
        } else {
            attend(projected, batch: batch, training: training)
        }
        let out = proj.timedForward(headOutputs.pointer, batch: batch, training: training)
        projectionOutput = out
        return outputDropout?.timedForward(out, batch: batch, training: training) ?? out
    }

    /// Positions of sample b that attend and are attended to: all T (causal), or its real ones.
    @inline(__always)
    private static func computed(_ b: Int, length T: Int, causal: Bool, keys: [Int]?) -> Int {
        causal ? T : min(keys?[b] ?? T, T)
    }

    private static func scratchPerThread(length T: Int, headWidth D: Int) -> Int { D * T + 16 * max(T, D) }

    /// A thread's scratch: the transposed head (D × T) and the padded panel after it.
    private func scratch(_ worker: Int) -> (transposed: UnsafeMutablePointer<Float>, padded: UnsafeMutablePointer<Float>) {
        let D = width / heads
        let start = headScratch.pointer + worker * Attention.scratchPerThread(length: length, headWidth: D)
        return (start, start + D * length)
    }

    /// Each (row, head) pair is one part on `LayerThreads`; its products are
    /// `cohort_attention_product`'s, over the causal half only.
    private func attend(_ projected: UnsafePointer<Float>, batch: Int, training: Bool) {
        let (T, C, D) = (length, width, width / heads)
        let scale = 1 / Float(D).squareRoot()
        let (heads, probabilities, causal, keys) = (heads, probabilities.pointer, causal, lengths?.values)
        let (lower, prefix) = causal ? (COHORT_SPAN_LOWER, COHORT_SPAN_PREFIX) : (COHORT_SPAN_ALL, COHORT_SPAN_ALL)
        LayerThreads.run(parts: batch * heads) { pair, worker in
            let (b, h) = (pair / heads, pair % heads)
            let base = projected + b * T * 3 * C
            let scores = probabilities + pair * T * T
            let E = Attention.computed(b, length: T, causal: causal, keys: keys)
            // S = Q_h · K_hᵀ / √D: K_h transposed first, so each product reads its B along a row.
            let (keysT, padded) = scratch(worker)
            cohort_transpose(base + C + h * D, 3 * C, E, D, keysT)
            cohort_attention_product(E, E, D, scale, base + h * D, 3 * C, 1, keysT, E, scores, T, Int32(lower), padded)
            let keyCount = keys?[b] ?? T
            for i in 0..<E { cohort_softmax_prefix(scores + i * T, causal ? min(i + 1, keyCount) : keyCount, T) }
        }
        let used = weightDropout?.timedForward(probabilities, batch: batch, training: training) ?? UnsafePointer(probabilities)
        usedProbabilities = used
        let outputs = headOutputs.pointer
        LayerThreads.run(parts: batch * heads) { pair, worker in
            let (b, h) = (pair / heads, pair % heads)
            let base = projected + b * T * 3 * C
            let E = Attention.computed(b, length: T, causal: causal, keys: keys)
            // Y_h = P · V_h
            cohort_attention_product(E, D, E, 1, used + pair * T * T, T, 1, base + 2 * C + h * D, 3 * C,
                                     outputs + b * T * C + h * D, C, Int32(prefix), scratch(worker).padded)
        }
    }

    /// One new row at `cache.position`: store its key and value, attend over positions 0…position.
    private func attendCached(_ projected: UnsafePointer<Float>, cache: Cache) {
        let (C, D) = (width, width / heads)
        let position = cache.position
        precondition(position < cache.capacity, "\(name): position \(position) is beyond the cache of \(cache.capacity)")
        (cache.keys.pointer + position * C).update(from: projected + C, count: C)
        (cache.values.pointer + position * C).update(from: projected + 2 * C, count: C)
        let count = position + 1
        let scale = 1 / Float(D).squareRoot()
        let scores = cacheScores.pointer
        for h in 0..<heads {
            // scores[count] = K[0…position, h] · q_h / √D, then softmax, then y_h = Σ p_j v_j.
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(count), Int32(D), scale, cache.keys.pointer + h * D, Int32(C),
                        projected + h * D, 1, 0, scores, 1)
            cohort_softmax_prefix(scores, count, count)
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(count), Int32(D), 1, cache.values.pointer + h * D, Int32(C),
                        scores, 1, 0, headOutputs.pointer + h * D, 1)
        }
        cache.position += 1
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (T, C, D) = (length, width, width / heads)
        let scale = 1 / Float(D).squareRoot()
        let projected = self.projected!
        let used = usedProbabilities!
        let dOut = outputDropout?.timedBackward(projectionOutput!, outputGradient: outputGradient, batch: batch) ?? outputGradient
        let dY = proj.timedBackward(headOutputs.pointer, outputGradient: dOut, batch: batch)
        let dQKV = qkvGradient.pointer
        let (heads, probabilities, probabilityGradient) = (heads, probabilities.pointer, probabilityGradient.pointer)
        let (causal, keys) = (causal, lengths?.values)
        let (scores, workers) = (scoreGradient.pointer, scoreGradient.count / (T * T))
        guard let weightDropout else {
            // One pass per (row, head): dP, dV, the softmax's backward in place over dP (a T×T
            // block that stays in the thread's cache), then dQ and dK.
            LayerThreads.run(parts: batch * heads) { pair, worker in
                precondition(worker < workers, "attention scratch was sized for fewer threads")
                let (b, h) = (pair / heads, pair % heads)
                let base = projected + b * T * 3 * C
                let dBase = dQKV + b * T * 3 * C
                let dS = scores + worker * T * T
                let E = Attention.computed(b, length: T, causal: causal, keys: keys)
                let head = self.scratch(worker)
                Attention.probabilityAndValueGradients(dY + b * T * C + h * D, base: base, used: used + pair * T * T, into: dS,
                                                       dBase: dBase, head: h, headWidth: D, length: T, rows: E, width: C,
                                                       causal: causal, scratch: head)
                Attention.softmaxBackward(probabilities + pair * T * T, dS, into: dS, length: T, rows: E, causal: causal, keys: keys?[b] ?? T)
                Attention.queryKeyGradients(dS, base: base, into: dBase, head: h, headWidth: D, length: T, rows: E, width: C, scale: scale,
                                            causal: causal, padded: head.padded)
            }
            return qkv.timedBackward(input, outputGradient: dQKV, batch: batch)
        }
        LayerThreads.run(parts: batch * heads) { pair, worker in
            let (b, h) = (pair / heads, pair % heads)
            let base = projected + b * T * 3 * C
            Attention.probabilityAndValueGradients(dY + b * T * C + h * D, base: base, used: used + pair * T * T,
                                                   into: probabilityGradient + pair * T * T, dBase: dQKV + b * T * 3 * C,
                                                   head: h, headWidth: D, length: T, rows: Attention.computed(b, length: T, causal: causal, keys: keys),
                                                   width: C, causal: causal, scratch: self.scratch(worker))
        }
        let dP = weightDropout.timedBackward(probabilities, outputGradient: probabilityGradient, batch: batch)
        LayerThreads.run(parts: batch * heads) { pair, worker in
            precondition(worker < workers, "attention scratch was sized for fewer threads")
            let (b, h) = (pair / heads, pair % heads)
            let base = projected + b * T * 3 * C
            let dS = scores + worker * T * T
            let E = Attention.computed(b, length: T, causal: causal, keys: keys)
            Attention.softmaxBackward(probabilities + pair * T * T, dP + pair * T * T, into: dS, length: T, rows: E, causal: causal,
                                      keys: keys?[b] ?? T)
            Attention.queryKeyGradients(dS, base: base, into: dQKV + b * T * 3 * C, head: h, headWidth: D, length: T, rows: E,
                                        width: C, scale: scale, causal: causal, padded: self.scratch(worker).padded)
        }
        return qkv.timedBackward(input, outputGradient: dQKV, batch: batch)
    }

    /// dP_used = dY_h · V_hᵀ (into `dP`, T × T; causally, its lower half only);  dV_h = P_usedᵀ · dY_h
    /// (into the rows' [T, 3C] gradient), over the first `rows` positions (all T, or a sample's real ones).
    private static func probabilityAndValueGradients(_ dY: UnsafePointer<Float>, base: UnsafePointer<Float>, used: UnsafePointer<Float>,
                                                     into dP: UnsafeMutablePointer<Float>, dBase: UnsafeMutablePointer<Float>,
                                                     head h: Int, headWidth D: Int, length T: Int, rows E: Int, width C: Int, causal: Bool,
                                                     scratch: (transposed: UnsafeMutablePointer<Float>, padded: UnsafeMutablePointer<Float>)) {
        cohort_transpose(base + 2 * C + h * D, 3 * C, E, D, scratch.transposed)
        cohort_attention_product(E, E, D, 1, dY, C, 1, scratch.transposed, E, dP, T,
                                 Int32(causal ? COHORT_SPAN_LOWER : COHORT_SPAN_ALL), scratch.padded)
        cohort_attention_product(E, D, E, 1, used, 1, T, dY, C, dBase + 2 * C + h * D, 3 * C,
                                 Int32(causal ? COHORT_SPAN_SUFFIX : COHORT_SPAN_ALL), scratch.padded)
    }

    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)) over the keys row i attends to (the causal part, or the
    /// sample's `keys` real positions), 0 elsewhere (`cohort_softmax_backward`); `dS` may be `dP`
    /// itself (each row's sum is taken before the row is written); rows from `rows` on are left alone.
    private static func softmaxBackward(_ p: UnsafePointer<Float>, _ dp: UnsafePointer<Float>, into dS: UnsafeMutablePointer<Float>,
                                        length T: Int, rows: Int, causal: Bool, keys: Int) {
        cohort_softmax_backward(p, dp, dS, T, rows, causal ? 1 : 0, keys)
    }

    /// dQ_h = dS · K_h / √D;  dK_h = dSᵀ · Q_h / √D, into the rows' [T, 3C] gradient (first `rows` positions).
    private static func queryKeyGradients(_ dS: UnsafePointer<Float>, base: UnsafePointer<Float>, into dBase: UnsafeMutablePointer<Float>,
                                          head h: Int, headWidth D: Int, length T: Int, rows E: Int, width C: Int, scale: Float,
                                          causal: Bool, padded: UnsafeMutablePointer<Float>) {
        cohort_attention_product(E, D, E, scale, dS, T, 1, base + C + h * D, 3 * C, dBase + h * D, 3 * C,
                                 Int32(causal ? COHORT_SPAN_PREFIX : COHORT_SPAN_ALL), padded)
        cohort_attention_product(E, D, E, scale, dS, 1, T, base + h * D, 3 * C, dBase + C + h * D, 3 * C,
                                 Int32(causal ? COHORT_SPAN_SUFFIX : COHORT_SPAN_ALL), padded)
    }
}

extension AttentionOptions {
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        (try graph.attention(x, name, heads: heads, bias: bias, length: shape[0], width: shape[1], causal: true), shape)
    }
}
