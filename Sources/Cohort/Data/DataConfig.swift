/// The `data:` section of a config: which files, how they are read, normalized and sampled.
public struct DataConfig: Equatable, Sendable {
    public var train: String
    public var test: String?
    public var features: String
    public var labels: String
    /// Read the whole features dataset into memory once (its size in the file's element type)
    /// instead of reading each batch's rows from the file.
    public var cache: Bool
    public var normalize: Normalization
    public var dropRemainder: Bool
    /// Per-channel mean and std for `standardize` (default: the file's attributes).
    public var mean: [Double]?
    public var std: [Double]?
    public var sampling: SamplingMode
    /// Rows per block in `sharded` mode (default: the features dataset's chunk rows).
    public var blockRows: Int?
    /// Rows held by each rank's shuffle buffer in `sharded` mode.
    public var shuffleBuffer: Int
    /// Fraction of the training file held out for validation: its last rows, before shuffling.
    public var validationSplit: Double
    /// Read and decode batches on a background thread, one batch ahead.
    public var prefetch: Bool
    public var augmentation: Augmentation
    /// Scan float features for NaN/Inf before training when they are not cached.
    public var checkFinite: Bool
    /// Tokens per sample of a token file (`cohort prepare text`): windows of `window` + 1 tokens.
    public var window: Int? = nil

    public init(train: String, test: String? = nil, features: String = "images", labels: String = "labels", cache: Bool = true,
                normalize: Normalization = .scale, dropRemainder: Bool = false, mean: [Double]? = nil, std: [Double]? = nil,
                sampling: SamplingMode = .global, blockRows: Int? = nil, shuffleBuffer: Int = 8192, validationSplit: Double = 0,
                prefetch: Bool = true, augmentation: Augmentation = Augmentation(), checkFinite: Bool = true, window: Int? = nil) {
        (self.train, self.test, self.features, self.labels, self.cache) = (train, test, features, labels, cache)
        (self.normalize, self.dropRemainder, self.mean, self.std) = (normalize, dropRemainder, mean, std)
        (self.sampling, self.blockRows, self.shuffleBuffer, self.validationSplit) = (sampling, blockRows, shuffleBuffer, validationSplit)
        (self.prefetch, self.augmentation, self.checkFinite, self.window) = (prefetch, augmentation, checkFinite, window)
    }
}

public enum SamplingMode: String, Sendable, CaseIterable {
    /// One permutation of all rows per epoch, split into global batches.
    case global
    /// Chunk-aligned blocks dealt to ranks, shuffled within a bounded buffer: for data larger than memory.
    case sharded
}

/// Per-rank, seeded image augmentation, applied to training batches only.
public struct Augmentation: Equatable, Sendable {
    /// Zero-pad by this many pixels and crop back to the original size at a random offset (0: off).
    public var cropPadding: Int = 0
    public var horizontalFlip: Bool = false
    public var isEnabled: Bool { cropPadding > 0 || horizontalFlip }
    public init(cropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
    }
}

public enum Normalization: String, Sendable, CaseIterable {
    /// Integer pixels divided by 255, floats as they are.
    case scale
    /// As `scale`, then per channel (x - mean) / std with the file's `mean`/`std` attributes.
    case standardize
    case none
}
