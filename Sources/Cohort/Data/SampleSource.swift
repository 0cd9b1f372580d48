import Foundation

/// Where the loader and evaluation take rows from: labelled samples (`LabeledData`: images,
/// vectors, regression targets) or windows of a token stream (`TokenWindows`).
public protocol SampleSource: AnyObject {
    var path: String { get }
    var rows: Int { get }
    /// Per-sample shape fed to the model: [C, H, W] images, [D] vectors, [T] token ids.
    var sampleShape: [Int] { get }
    /// The axes of `sampleShape`: `CHW` (images, channels first), `TD` (sequences of vectors),
    /// `D` (vectors) or `T` (token ids).
    var sampleLayout: String { get }
    /// Integer targets per row: 1 for a class label, T for a window (one per position).
    var targetsPerRow: Int { get }
    /// Classes of the integer targets (a token file: its vocabulary size), and their names.
    var classes: Int { get }
    var classNames: [String] { get }
    var isRegression: Bool { get }
    /// Float targets per row of a regression file (1 otherwise).
    var targetWidth: Int { get }
    /// Rows per chunk of the file, the natural block of sharded reading.
    var chunkRows: Int? { get }
    var readLog: [Int]? { get set }
    /// Writes rows (in that order) as x [count, sampleShape...] and y [count × targetsPerRow].
    /// `epoch` picks the epoch's view of the data (a token stream's window phase).
    func load(rows: ArraySlice<Int>, epoch: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Int32>) throws
    func copyTargets(rows: ArraySlice<Int>, to t: UnsafeMutablePointer<Float>)
    /// What the file holds, in a line a checkpoint can compare: rows, shape, and a CRC-32 of its
    /// first, middle and last rows (and labels): a mid-epoch resume on other data is refused.
    func fingerprint() throws -> String
}

extension SampleSource {
    public var sampleSize: Int { sampleShape.reduce(1, *) }
}

/// A source whose samples are token ids of a tokenizer a checkpoint records (so that generation
/// and the export decode them as training encoded them).
public protocol TokenizedSource: SampleSource {
    /// The tokenizer's name (`chars`, `bytes`, `bpe`) and a BPE's merges (empty otherwise).
    var tokenizer: String { get }
    var merges: [String] { get }
}

extension LabeledData: SampleSource {
    public var targetsPerRow: Int { 1 }
    public func fingerprint() throws -> String {
        var crc = CRC32()
        let take = min(64, rows)
        var x = [Float](repeating: 0, count: take * sampleSize)
        var y = [Int32](repeating: 0, count: take)
        for start in Set([0, max(rows / 2 - take / 2, 0), rows - take]).sorted() {
            try load(rows: Array(start..<(start + take))[...], x: &x, y: &y)
            x.withUnsafeBytes { crc.update(name: "x\(start)", bytes: $0) }
            y.withUnsafeBytes { crc.update(name: "y\(start)", bytes: $0) }
        }
        return "\(rows) rows of \(sampleShape), \(classes) classes, sample CRC \(String(crc.value, radix: 16))"
    }
    public func load(rows: ArraySlice<Int>, epoch: Int, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Int32>) throws {
        try load(rows: rows, x: x, y: y)
    }
}

/// Opens a data file as the config describes it: a token file (`tokens` dataset) as windows of
/// `data.window` tokens, any other file as labelled samples.
public func openSamples(path: String, config data: DataConfig, phase: TokenWindows.Phase, seed: UInt64, cache: Bool,
                        expectedClasses: Int? = nil) throws -> any SampleSource {
    if TokenCorpus.isTokenFile(path) {
        guard let window = data.window else {
            throw CohortError("\(path): a token file needs data.window (tokens per sample, e.g. 64)")
        }
        return try TokenWindows(corpus: TokenCorpus(path: path, cache: cache), length: window, phase: phase, seed: seed)
    }
    if data.window != nil { throw CohortError("\(path): data.window is for token files (cohort prepare text); this file has no 'tokens' dataset") }
    return try LabeledData(path: path, featuresName: data.features, labelsName: data.labels, normalization: data.normalize,
                           cache: cache, expectedClasses: expectedClasses, mean: data.mean, std: data.std, checkFinite: data.checkFinite)
}

/// A language model's figures from the mean loss in nats per token.
public func languageModelFigures(loss: Double, accuracy: Double) -> String {
    String(format: "loss %.6f nats/token  perplexity %.4f  bits/char %.5f  next-token accuracy %.4f",
           loss, exp(loss), loss / log(2.0), accuracy)
}
