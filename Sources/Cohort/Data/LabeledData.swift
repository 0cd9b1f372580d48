import Foundation

/// A features/labels pair in an HDF5 file, opened and checked, that hands out any set of rows
/// as a Float batch in the model's layout.
///
/// File layout (datasets/README.md): features [N, H, W, C] (NHWC, the default for 4-D data;
/// an attribute `layout = "NCHW"` on the file says otherwise), [N, H, W] (one channel), [N, T, D]
/// sequences of T vectors of D features when the file says `layout = "NTC"`, or [N, D]; labels [N] integers in [0, classes), or float targets [N] / [N, T] for regression. Batches come out NCHW ([C, H, W] per sample),
/// the layout the convolution kernels use.
///
/// With `cache`, the features are read once into memory in the file's element type
/// (Fashion-MNIST: 47 MB of uint8 per rank); otherwise each batch reads exactly its rows with
/// one hyperslab selection, so memory does not grow with the file.
public final class LabeledData {
    /// The most classes a labels dataset may count (a larger label is a damaged or wrong file).
    public static let maximumClasses = 1_000_000
    /// The values of a file's `layout` attribute: images channels-last or -first, sequences of vectors.
    public static let layouts = ["NHWC", "NCHW", "NTC"]
    public let path: String
    public let rows: Int
    /// Per-sample shape fed to the model: [C, H, W] for images, [D] for vectors.
    public let sampleShape: [Int]
    public var sampleLayout: String { sampleShape.count == 1 ? "D" : outputChannelsLast ? "TD" : "CHW" }
    public let classes: Int
    public let classNames: [String]
    public var sampleSize: Int { sampleShape.reduce(1, *) }

    private let file: HDF5File
    private let features: HDF5Dataset
    private let labels: [Int32]
    /// Float targets [rows × targetWidth] when the labels dataset holds floats (regression).
    public let targets: [Float]?
    /// Values per row of `targets` (1 for class labels).
    public let targetWidth: Int
    public var isRegression: Bool { targets != nil }
    /// The id that ends the first text of each row's sentence pair (`cohort prepare
    /// text-classification --text-pair` writes it as `sep_id`), or nil.
    public let separatorID: Int?
    /// The file keeps a sample's channels (features) last.
    private let channelsLast: Bool
    /// Samples keep channels last for the model too ([T, D] sequences; images become [C, H, W]).
    private let outputChannelsLast: Bool
    private let channels: Int
    /// What raw feature values are multiplied by before standardization (1/255 for uint8 pixels).
    public let scale: Float
    private let channelMean: [Float]
    private let channelStd: [Float]
    /// Per-channel mean and std this file is standardized with (`normalize: standardize`), else nil.
    public var standardization: (mean: [Double], std: [Double])? {
        standardizes ? (channelMean.map(Double.init), channelStd.map(Double.init)) : nil
    }
    private let standardizes: Bool
    private var byteCache: [UInt8]?
    private var floatCache: [Float]?
    private var staging: [UInt8] = []
    private var stagingFloats: [Float] = []
    /// When set, every row read from the file is appended here (diagnostics and tests).
    public var readLog: [Int]? {
        get { readLogLock.withLock { storedReadLog } }
        set { readLogLock.withLock { storedReadLog = newValue } }
    }
    private var storedReadLog: [Int]?
    private let readLogLock = NSLock()

    public init(path: String, featuresName: String, labelsName: String, normalization: Normalization,
                cache: Bool, expectedClasses: Int? = nil, mean: [Double]? = nil, std: [Double]? = nil,
                checkFinite: Bool = true) throws {
        self.path = path
        file = try HDF5File.open(path)
        features = try file.dataset(featuresName)
        let labelSet = try file.dataset(labelsName)
        guard features.isNumeric else {
            throw CohortError("\(path): dataset '\(featuresName)' has unsupported type \(features.elementType) (use integers or floats)")
        }
        let floatTargets: Bool
        switch labelSet.elementType {
        case .integer: floatTargets = false
        case .float: floatTargets = true
        case .other(let name):
            throw CohortError("\(path): dataset '\(labelsName)' holds \(name); labels must be integer class ids or float targets")
        }
        guard features.shape.count >= 2 else {
            throw CohortError("\(path): dataset '\(featuresName)' has shape \(features.shape); expected [rows, ...]")
        }
        guard labelSet.shape.count == 1 || (floatTargets && labelSet.shape.count == 2) else {
            throw CohortError("\(path): dataset '\(labelsName)' has shape \(labelSet.shape); expected [rows]\(floatTargets ? " or [rows, targets]" : "")")
        }
        rows = features.rows
        guard rows > 0 else { throw CohortError("\(path): dataset '\(featuresName)' has zero rows") }
        guard labelSet.rows == rows else {
            throw CohortError("\(path): '\(featuresName)' has \(rows) rows but '\(labelsName)' has \(labelSet.rows)")
        }

        let layout = file.hasAttribute("layout") ? try file.stringAttribute("layout") : "NHWC"
        guard LabeledData.layouts.contains(layout) else {
            throw CohortError("\(path): layout '\(layout)' is not one of \(LabeledData.layouts.joined(separator: ", "))")
        }
        let dims = Array(features.shape.dropFirst())
        outputChannelsLast = layout == "NTC" || dims.count == 1
        (sampleShape, channelsLast, channels) = try LabeledData.sampleLayout(dims, layout: layout, name: "\(path): dataset '\(featuresName)'")
        let read = try LabeledData.readLabels(labelSet, floatTargets: floatTargets, file: file, expectedClasses: expectedClasses,
                                              name: "\(path): dataset '\(labelsName)'", path: path)
        (targets, targetWidth, classes, classNames, separatorID, labels) = (read.targets, read.targetWidth, read.classes, read.classNames,
                                                                            read.separatorID, read.labels)
        let isInteger: Bool
        if case .integer = features.elementType { isInteger = true } else { isInteger = false }
        scale = (normalization != .none && features.elementType == .integer(bytes: 1, signed: false)) ? 1 / 255 : 1
        (channelMean, channelStd, standardizes) = try LabeledData.channelStatistics(normalization, mean: mean, std: std, file: file, path: path,
                                                                                   vector: sampleShape.count == 1, channels: channels)
        if cache {
            let bytes = features.rows * features.rowElements * (features.elementType == .integer(bytes: 1, signed: false) ? 1 : 4)
            guard UInt64(bytes) < ProcessInfo.processInfo.physicalMemory / 2 else {
                throw CohortError("\(path): caching dataset '\(featuresName)' needs \(bytes) bytes, more than half of this machine's memory; set data.cache: false")
            }
            if features.elementType == .integer(bytes: 1, signed: false) {
                byteCache = try features.readAll(as: UInt8.self)
            } else {
                let values = try features.readAll(as: Float.self)
                if !isInteger, let bad = values.firstIndex(where: { !$0.isFinite }) {
                    throw CohortError("\(path): dataset '\(featuresName)' row \(bad / features.rowElements) holds a NaN or infinite value")
                }
                floatCache = values
            }
        } else if !isInteger && checkFinite {
            try scanForNonFinite(featuresName)
        }
    }

    /// A sample's shape as the layers see it (channels first for images), whether the file holds
    /// it channels last, and its channels, from the file's per-row axes and `layout`.
    private static func sampleLayout(_ dims: [Int], layout: String, name: String) throws -> (shape: [Int], channelsLast: Bool, channels: Int) {
        switch dims.count {
        case 1:
            // Vectors: each of the D features is a channel (a table's columns standardize one by one).
            return (dims, true, dims[0])
        case 2 where layout == "NTC":
            return (dims, true, dims[1])
        case 2:
            return ([1, dims[0], dims[1]], false, 1)
        case 3 where layout == "NCHW":
            return (dims, false, dims[0])
        case 3 where layout == "NHWC":
            return ([dims[2], dims[0], dims[1]], true, dims[2])
        default:
            throw CohortError("\(name) has \(dims.count) axes per sample with layout \(layout); Cohort reads [D] vectors, [T, D] sequences (NTC), [H, W] or [H, W, C] images (NHWC) and [C, H, W] (NCHW)")
        }
    }

    /// The labels dataset read and checked: float targets (a regression's), or class ids with the
    /// classes, their names and a sentence pair's separator id from the file's attributes.
    private static func readLabels(_ labelSet: HDF5Dataset, floatTargets: Bool, file: HDF5File, expectedClasses: Int?, name: String,
                                   path: String) throws
        -> (targets: [Float]?, targetWidth: Int, classes: Int, classNames: [String], separatorID: Int?, labels: [Int32]) {
        if floatTargets {
            let values: [Float] = try labelSet.readAll()
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw CohortError("\(name) row \(bad / max(labelSet.rowElements, 1)) holds a NaN or infinite target")
            }
            return (values, labelSet.rowElements, 0, [], nil, [Int32](repeating: 0, count: labelSet.rows))
        }
        let rawLabels: [Int64] = try labelSet.readAll()
        let names = (try? file.stringsAttribute("class_names")) ?? []
        let separatorID = (try? file.numberAttribute("sep_id", as: Int64.self).first).flatMap { $0.map(Int.init) }
        let declared = (try? file.numberAttribute("num_classes", as: Int64.self).first).flatMap { $0.map(Int.init) }
        let largest = rawLabels.max() ?? 0
        if expectedClasses == nil, declared == nil, names.isEmpty, largest >= maximumClasses {
            let row = rawLabels.firstIndex(of: largest) ?? 0
            throw CohortError("\(name) row \(row) has label \(largest); labels count classes from 0 and at most \(maximumClasses) are taken (damaged file?)")
        }
        let classes = expectedClasses ?? declared ?? (names.isEmpty ? Int(largest) + 1 : names.count)
        guard (1...maximumClasses).contains(classes) else {
            throw CohortError("\(path): \(classes) classes declared; between 1 and \(maximumClasses) are taken")
        }
        if let bad = rawLabels.firstIndex(where: { $0 < 0 || $0 >= Int64(classes) }) {
            throw CohortError("\(name) row \(bad) has label \(rawLabels[bad]), outside [0, \(classes))")
        }
        return (nil, 1, classes, names.count == classes ? names : (0..<classes).map { "class \($0)" }, separatorID, rawLabels.map { Int32($0) })
    }

    /// Per-channel mean and std of `normalize: standardize` (the config's values win over the
    /// file's attributes); zeros and ones otherwise.
    private static func channelStatistics(_ normalization: Normalization, mean: [Double]?, std: [Double]?, file: HDF5File, path: String,
                                          vector: Bool, channels: Int) throws -> (mean: [Float], std: [Float], standardizes: Bool) {
        guard normalization == .standardize else {
            return ([Float](repeating: 0, count: channels), [Float](repeating: 1, count: channels), false)
        }
        guard var mean = mean ?? (try? file.numberAttribute("mean", as: Double.self)),
              var std = std ?? (try? file.numberAttribute("std", as: Double.self)) else {
            throw CohortError("\(path): normalize: standardize needs mean and std, as file attributes (cohort prepare writes them) or data.mean/data.std in the config")
        }
        // One value for every feature of a vector (a file written before per-feature statistics).
        if vector, mean.count == 1, std.count == 1 {
            (mean, std) = (Array(repeating: mean[0], count: channels), Array(repeating: std[0], count: channels))
        }
        guard mean.count == channels, std.count == channels, std.allSatisfy({ $0 > 0 }) else {
            throw CohortError("\(path): mean/std must hold \(channels) value(s) with std > 0 for normalize: standardize")
        }
        return (mean.map(Float.init), std.map(Float.init), true)
    }

    /// Reads float features once in bounded slices, before training, so that a NaN or
    /// infinity is an error naming its row instead of a diverged run.
    private func scanForNonFinite(_ featuresName: String) throws {
        let sliceRows = max(1, (1 << 22) / max(features.rowElements, 1))
        var buffer = [Float](repeating: 0, count: sliceRows * features.rowElements)
        var start = 0
        while start < rows {
            let count = min(sliceRows, rows - start)
            try buffer.withUnsafeMutableBufferPointer { try features.readRows(start: start, count: count, into: $0.baseAddress!) }
            if let bad = buffer.prefix(count * features.rowElements).firstIndex(where: { !$0.isFinite }) {
                throw CohortError("\(path): dataset '\(featuresName)' row \(start + bad / features.rowElements) holds a NaN or infinite value")
            }
            start += count
        }
    }

    /// Rows per chunk of the features dataset (the natural block for sharded reading).
    public var chunkRows: Int? { features.chunkShape?.first }

    public func label(_ row: Int) -> Int32 { labels[row] }

    /// Copies the float targets of `rows` (in that order) to `t` [count × targetWidth].
    public func copyTargets(rows rowIndices: ArraySlice<Int>, to t: UnsafeMutablePointer<Float>) {
        guard let targets else { return }
        targets.withUnsafeBufferPointer { values in
            for (position, row) in rowIndices.enumerated() {
                (t + position * targetWidth).update(from: values.baseAddress! + row * targetWidth, count: targetWidth)
            }
        }
    }

    /// Writes rows `rowIndices` (in that order) as x [count, sampleShape...] and y [count].
    public func load(rows rowIndices: ArraySlice<Int>, x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Int32>) throws {
        for (position, row) in rowIndices.enumerated() { y[position] = labels[row] }
        let rowElements = features.rowElements
        if let byteCache {
            byteCache.withUnsafeBufferPointer { cache in
                for (position, row) in rowIndices.enumerated() {
                    decode(cache.baseAddress! + row * rowElements, into: x + position * rowElements)
                }
            }
            return
        }
        if let floatCache {
            floatCache.withUnsafeBufferPointer { cache in
                for (position, row) in rowIndices.enumerated() {
                    decode(cache.baseAddress! + row * rowElements, into: x + position * rowElements)
                }
            }
            return
        }
        // From the file: read the rows in ascending order with one selection, then place each
        // where the batch wants it.
        let order = rowIndices.enumerated().sorted { $0.element < $1.element }
        let sorted = order.map(\.element)
        readLogLock.withLock { storedReadLog?.append(contentsOf: sorted) }
        if features.elementType == .integer(bytes: 1, signed: false) {
            if staging.count < sorted.count * rowElements { staging = [UInt8](repeating: 0, count: sorted.count * rowElements) }
            try staging.withUnsafeMutableBufferPointer { buffer in
                try features.readRows(sorted: sorted, into: buffer.baseAddress!)
                for (index, item) in order.enumerated() {
                    decode(buffer.baseAddress! + index * rowElements, into: x + item.offset * rowElements)
                }
            }
        } else {
            if stagingFloats.count < sorted.count * rowElements { stagingFloats = [Float](repeating: 0, count: sorted.count * rowElements) }
            try stagingFloats.withUnsafeMutableBufferPointer { buffer in
                try features.readRows(sorted: sorted, into: buffer.baseAddress!)
                for (index, item) in order.enumerated() {
                    let source = buffer.baseAddress! + index * rowElements
                    if let bad = (0..<rowElements).first(where: { !source[$0].isFinite }) {
                        _ = bad
                        throw CohortError("\(path): dataset '\(features.name)' row \(item.element) holds a NaN or infinite value")
                    }
                    decode(source, into: x + item.offset * rowElements)
                }
            }
        }
    }

    /// One sample: scale, per-channel (per-feature) standardization, and NHWC → NCHW where needed.
    @inline(__always)
    private func decode<T: BinaryFloatingPointConvertible>(_ source: UnsafePointer<T>, into destination: UnsafeMutablePointer<Float>) {
        let count = features.rowElements
        if channels == 1 {
            let (mean, inverseStd) = (channelMean[0], 1 / channelStd[0])
            for index in 0..<count { destination[index] = (source[index].floatValue * scale - mean) * inverseStd }
            return
        }
        let pixels = count / channels
        for pixel in 0..<pixels {
            for channel in 0..<channels {
                let sourceIndex = channelsLast ? pixel * channels + channel : channel * pixels + pixel
                destination[outputChannelsLast ? sourceIndex : channel * pixels + pixel] = (source[sourceIndex].floatValue * scale - channelMean[channel]) / channelStd[channel]
            }
        }
    }
}

protocol BinaryFloatingPointConvertible { var floatValue: Float { get } }
extension UInt8: BinaryFloatingPointConvertible { var floatValue: Float { Float(self) } }
extension Float: BinaryFloatingPointConvertible { var floatValue: Float { self } }
