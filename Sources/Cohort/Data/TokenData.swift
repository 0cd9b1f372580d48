import Foundation

/// A token file written by `cohort prepare text` (datasets/README.md): dataset `tokens` [N] of
/// unsigned integers (the smallest type that holds the vocabulary), root attributes
/// `vocabulary` (one string per id: a character, or a byte as `<0xNN>`), `tokenizer`
/// (`chars` or `bytes`), `format` = `cohort-tokens`, `source`, `characters`.
public final class TokenCorpus {
    public let path: String
    public let count: Int
    public let vocabulary: [String]
    public let tokenizer: String
    /// A byte-level BPE's merges ("left right", rank order); empty for chars and bytes.
    public let merges: [String]
    private let dataset: HDF5Dataset
    /// The whole stream in memory (`cache`) in the narrowest type that holds every id of the
    /// vocabulary (a byte a token for characters and bytes, not four), or nothing when windows
    /// are read from the file.
    private enum Cached { case none, bytes([UInt8]), halves([UInt16]), words([UInt32]) }
    private let cached: Cached

    /// The cached stream as ids (a copy; empty when nothing is cached).
    public var tokens: [UInt32] {
        switch cached {
        case .none: return []
        case .bytes(let ids): return ids.map(UInt32.init)
        case .halves(let ids): return ids.map(UInt32.init)
        case .words(let ids): return ids
        }
    }

    public static func isTokenFile(_ path: String) -> Bool {
        (try? HDF5File.open(path))?.exists("tokens") ?? false
    }

    /// With `cache: false` nothing but the vocabulary is read here: each window comes from the file
    /// when it is loaded (one contiguous read), so memory does not grow with the corpus; ids are
    /// checked against the vocabulary as they are read.
    public init(path: String, cache: Bool = true) throws {
        self.path = path
        let file = try HDF5File.open(path)
        let dataset = try file.dataset("tokens")
        self.dataset = dataset
        guard dataset.shape.count == 1, case .integer(_, signed: false) = dataset.elementType else {
            throw CohortError("\(path): dataset 'tokens' must be 1-D unsigned integers; it is \(dataset.elementType) \(dataset.shape)")
        }
        guard let vocabulary = try? file.stringsAttribute("vocabulary"), !vocabulary.isEmpty else {
            throw CohortError("\(path): a token file needs a root attribute 'vocabulary' (one string per id); write it with cohort prepare text")
        }
        self.vocabulary = vocabulary
        tokenizer = (try? file.stringAttribute("tokenizer")) ?? "chars"
        merges = file.hasAttribute("merges") ? try file.stringsAttribute("merges") : []
        count = dataset.rows
        guard cache else {
            cached = .none
            return
        }
        cached = try TokenCorpus.read(dataset, count: count, vocabulary: vocabulary.count, path: path)
    }

    /// The stream in the narrowest type that holds the vocabulary: read whole when the file
    /// stores it that narrow, else a million ids at a time, each checked and narrowed.
    private static func read(_ dataset: HDF5Dataset, count: Int, vocabulary: Int, path: String) throws -> Cached {
        func read<T: FixedWidthInteger & HDF5Scalar>(as: T.Type) throws -> [T] {
            // Stored as narrow as this (as `cohort prepare text` writes it): read in one piece,
            // every value fits; only the vocabulary is left to check.
            if case .integer(let bytes, signed: false) = dataset.elementType, bytes <= MemoryLayout<T>.size {
                let ids = try dataset.readAll(as: T.self)
                if let bad = ids.firstIndex(where: { Int($0) >= vocabulary }) {
                    throw CohortError("\(path): token \(bad) has id \(ids[bad]), outside the vocabulary of \(vocabulary)")
                }
                return ids
            }
            var ids: [T] = []
            ids.reserveCapacity(count)
            var piece = [UInt32](repeating: 0, count: min(count, 1 << 20))
            for start in stride(from: 0, to: count, by: max(piece.count, 1)) {
                let length = min(piece.count, count - start)
                try piece.withUnsafeMutableBufferPointer { try dataset.readRows(start: start, count: length, into: $0.baseAddress!) }
                for (offset, id) in piece[0..<length].enumerated() {
                    guard Int(id) < vocabulary else {
                        throw CohortError("\(path): token \(start + offset) has id \(id), outside the vocabulary of \(vocabulary)")
                    }
                    ids.append(T(id))
                }
            }
            return ids
        }
        return vocabulary <= 1 << 8 ? .bytes(try read(as: UInt8.self))
            : vocabulary <= 1 << 16 ? .halves(try read(as: UInt16.self)) : .words(try read(as: UInt32.self))
    }

    /// Tokens start ..< start + length, from memory or from the file.
    public func withTokens<R>(start: Int, length: Int, _ body: (UnsafePointer<UInt32>) throws -> R) throws -> R {
        if case .words(let ids) = cached { return try ids.withUnsafeBufferPointer { try body($0.baseAddress! + start) } }
        // Narrow ids widened, or ids read from the file, into a buffer of this call's own (the
        // loader's thread and the main thread may both ask).
        return try withUnsafeTemporaryAllocation(of: UInt32.self, capacity: max(length, 1)) { buffer in
            switch cached {
            case .bytes(let ids): for index in 0..<length { buffer[index] = UInt32(ids[start + index]) }
            case .halves(let ids): for index in 0..<length { buffer[index] = UInt32(ids[start + index]) }
            case .words: break
            case .none:
                try dataset.readRows(start: start, count: length, into: buffer.baseAddress!)
                if let bad = (0..<length).first(where: { Int(buffer[$0]) >= vocabulary.count }) {
                    throw CohortError("\(path): token \(start + bad) has id \(buffer[bad]), outside the vocabulary of \(vocabulary.count)")
                }
            }
            return try body(UnsafePointer(buffer.baseAddress!))
        }
    }
}

/// The samples of a token stream: windows of T + 1 tokens, inputs the first T, targets the
/// last T (each position predicts the next token).
///
/// Training (`phase: .random`): each epoch starts its windows at a phase in [0, T) drawn from
/// (seed, epoch), and window i covers tokens phase + i·T … phase + i·T + T; the sampler permutes
/// the windows, so every token is a target once per epoch and N ranks × b see what 1 rank × N·b
/// sees. The window count, ⌊N/T⌋ − 1, fits every phase, so all epochs have the same steps.
/// Evaluation (`phase: .zero`): every non-overlapping window from the first token, ⌊(N − 1)/T⌋.
public final class TokenWindows: SampleSource {
    public enum Phase: Sendable { case random, zero }
    public let corpus: TokenCorpus
    public let length: Int
    public let phase: Phase
    let seed: UInt64
    public let rows: Int
    public var readLog: [Int]?

    public init(corpus: TokenCorpus, length: Int, phase: Phase, seed: UInt64) throws {
        self.corpus = corpus
        self.length = length
        self.phase = phase
        self.seed = seed
        let n = corpus.count
        rows = phase == .random ? n / length - 1 : (n - 1) / length
        guard rows > 0 else {
            throw CohortError("\(corpus.path): \(n) tokens hold no window of \(length) + 1 tokens; lower data.window")
        }
    }

    public var path: String { corpus.path }
    public var sampleShape: [Int] { [length] }
    public var sampleLayout: String { "T" }
    public var targetsPerRow: Int { length }
    public var classes: Int { corpus.vocabulary.count }
    public var classNames: [String] { corpus.vocabulary }
    public var isRegression: Bool { false }
    public var targetWidth: Int { 1 }
    /// Windows per chunk of the tokens dataset: a sharded block of these is about one chunk read.
    public var chunkRows: Int? { corpus.count >= 65_536 ? max(65_536 / length, 1) : nil }

    public func start(epoch: Int) -> Int {
        guard phase == .random else { return 0 }
        var generator = Generator(seed: seed, streams: Stream.windows.rawValue, UInt64(epoch))
        return generator.nextIndex(below: length)
    }

    /// Consecutive rows (a sharded block) are one read of their span; others one read each.
    public func load(rows: ArraySlice<Int>, epoch: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Int32>) throws {
        let first = start(epoch: epoch)
        readLog?.append(contentsOf: rows)
        func copy(_ window: UnsafePointer<UInt32>, to position: Int) {
            for t in 0..<length {
                x[position * length + t] = Float(window[t])
                y[position * length + t] = Int32(window[t + 1])
            }
        }
        if let low = rows.first, rows.count > 1, rows.last! - low == rows.count - 1, zip(rows, rows.dropFirst()).allSatisfy({ $1 == $0 + 1 }) {
            try corpus.withTokens(start: first + low * length, length: rows.count * length + 1) { span in
                for position in 0..<rows.count { copy(span + position * length, to: position) }
            }
            return
        }
        for (position, row) in rows.enumerated() {
            try corpus.withTokens(start: first + row * length, length: length + 1) { copy($0, to: position) }
        }
    }

    public func copyTargets(rows: ArraySlice<Int>, to t: UnsafeMutablePointer<Float>) {}

    public func fingerprint() throws -> String {
        var crc = CRC32()
        let take = min(65_536, corpus.count)
        for start in Set([0, corpus.count - take]).sorted() {
            try corpus.withTokens(start: start, length: take) { crc.update(name: "t\(start)", bytes: UnsafeRawBufferPointer(start: $0, count: take * 4)) }
        }
        return "\(corpus.count) tokens, vocabulary \(corpus.vocabulary.count), sample CRC \(String(crc.value, radix: 16))"
    }
}

extension TokenWindows: TokenizedSource {
    public var tokenizer: String { corpus.tokenizer }
    public var merges: [String] { corpus.merges }
}
