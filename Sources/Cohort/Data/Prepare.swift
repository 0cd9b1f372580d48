import Foundation

/// Writes image/label pairs as a Cohort dataset file (layout: datasets/README.md):
/// `images` uint8 [N, H, W, C] (NHWC, as Keras and h5py users hold images), `labels` int64 [N],
/// root attributes `class_names`, `layout`, `num_classes`, `source`, and per-channel `mean`/`std`
/// of pixels scaled to [0, 1], which a config can use for normalization.
public struct ImageSet {
    public var images: [UInt8]
    public var labels: [Int64]
    public var height: Int
    public var width: Int
    public var channels: Int
    public var classNames: [String]
    public var source: String

    public var count: Int { labels.count }

    public func write(to path: String, chunkRows: Int = 1024) throws {
        let temporary = path + ".tmp-\(getpid())"
        do {
            let file = try HDF5File.create(temporary)
            try file.write("images", images, shape: [count, height, width, channels], chunkRows: chunkRows)
            try file.write("labels", labels, shape: [count], chunkRows: chunkRows * 16)
            try file.setAttribute("class_names", classNames)
            try file.setAttribute("num_classes", [Int64(classNames.count)])
            try file.setAttribute("layout", "NHWC")
            try file.setAttribute("source", source)
            try file.setAttribute("format", "cohort-dataset")
            let (mean, std) = channelStatistics()
            try file.setAttribute("mean", mean)
            try file.setAttribute("std", std)
            try file.flush()
            file.close()
        }
        try replaceItem(at: path, with: temporary)
    }

    func channelStatistics() -> ([Double], [Double]) {
        // A histogram of byte values per channel: one cheap pass, exact sums.
        var histogram = [Int](repeating: 0, count: 256 * channels)
        images.withUnsafeBufferPointer { bytes in
            histogram.withUnsafeMutableBufferPointer { counts in
                var channel = 0
                for byte in bytes {
                    counts[channel * 256 + Int(byte)] += 1
                    channel += 1
                    if channel == channels { channel = 0 }
                }
            }
        }
        var mean = [Double](repeating: 0, count: channels)
        var std = [Double](repeating: 0, count: channels)
        for channel in 0..<channels {
            var (count, sum, squares) = (0.0, 0.0, 0.0)
            for value in 0..<256 {
                let n = Double(histogram[channel * 256 + value])
                let x = Double(value) / 255
                count += n
                sum += n * x
                squares += n * x * x
            }
            mean[channel] = sum / max(count, 1)
            std[channel] = max(squares / max(count, 1) - mean[channel] * mean[channel], 0).squareRoot()
        }
        return (mean, std)
    }
}

/// Puts a finished HDF5 file in place: sealed with a checksum of its bytes (`FileIntegrity`),
/// synced, then renamed over `path`, so that a reader sees the old file or the whole new one.
func replaceItem(at path: String, with temporary: String) throws {
    do {
        try FileIntegrity.seal(temporary)
        try syncFile(temporary)
    } catch {
        unlink(temporary)
        throw error
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw CohortError("\(path): cannot move the new file into place: \(reason)")
    }
}

extension ImageSet {
    /// Reads a file in Cohort's image layout (uint8 `images` [N, H, W, C], integer `labels`).
    public static func read(from path: String) throws -> ImageSet {
        let file = try HDF5File.open(path)
        let images = try file.dataset("images")
        guard images.elementType == .integer(bytes: 1, signed: false), images.shape.count == 4 else {
            throw CohortError("\(path): 'images' must be uint8 [N, H, W, C], found \(images.elementType) \(images.shape)")
        }
        let labels: [Int64] = try file.read("labels").values
        return ImageSet(images: try images.readAll(), labels: labels, height: images.shape[1], width: images.shape[2],
                        channels: images.shape[3], classNames: (try? file.stringsAttribute("class_names")) ?? [],
                        source: (try? file.stringAttribute("source")) ?? path)
    }

    /// The rows whose label is in `classes`, relabelled 0, 1, … in the order given
    /// (so `[7, 9]` on Fashion-MNIST makes sneaker 0 and ankle boot 1), original order kept.
    public func subset(classes: [Int]) throws -> ImageSet {
        guard Set(classes).count == classes.count, !classes.isEmpty else { throw CohortError("subset: the class list must be non-empty, without repeats") }
        let size = height * width * channels
        var result = ImageSet(images: [], labels: [], height: height, width: width, channels: channels,
                              classNames: try classes.map { index in
                                  guard index >= 0 else { throw CohortError("subset: class \(index) is negative") }
                                  return index < classNames.count ? classNames[index] : "class \(index)"
                              },
                              source: "\(source); classes \(classes.map(String.init).joined(separator: ",")) relabelled 0..<\(classes.count)")
        for (row, label) in labels.enumerated() {
            guard let newLabel = classes.firstIndex(of: Int(label)) else { continue }
            result.labels.append(Int64(newLabel))
            result.images.append(contentsOf: images[(row * size)..<((row + 1) * size)])
        }
        guard result.count > 0 else { throw CohortError("subset: no rows have labels \(classes)") }
        return result
    }
}

public enum FashionMNIST {
    public static let defaultSource = "/usr/share/datasets/fashion-mnist"
    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    /// Converts the IDX pairs of the Debian package into `train.h5` and `test.h5` under `outputDirectory`.
    public static func prepare(source: String, outputDirectory: String) throws -> [String] {
        try makeDirectories(outputDirectory, for: "the prepared data files")
        var written: [String] = []
        for (split, prefix) in [("train", "train"), ("test", "t10k")] {
            let set = try readIDXPair(
                images: "\(source)/\(prefix)-images-idx3-ubyte.gz",
                labels: "\(source)/\(prefix)-labels-idx1-ubyte.gz",
                classNames: classNames,
                source: "Fashion-MNIST (Zalando Research, MIT licence), \(split) split, from \(source)"
            )
            let path = "\(outputDirectory)/\(split).h5"
            try set.write(to: path)
            written.append(path)
        }
        return written
    }

    /// Reads an IDX images file ([N, H, W] or [N, H, W, C]) and its labels ([N]).
    public static func readIDXPair(images: String, labels: String, classNames: [String]?, source: String) throws -> ImageSet {
        let imageArray = try IDXArray.read(path: images)
        let labelArray = try IDXArray.read(path: labels)
        guard imageArray.dimensions.count == 3 || imageArray.dimensions.count == 4 else {
            throw CohortError("\(images): expected images of shape [N, H, W] or [N, H, W, C], found \(imageArray.dimensions)")
        }
        guard labelArray.dimensions.count == 1 else {
            throw CohortError("\(labels): expected labels of shape [N], found \(labelArray.dimensions)")
        }
        guard imageArray.dimensions[0] == labelArray.dimensions[0] else {
            throw CohortError("\(images): \(imageArray.dimensions[0]) images but \(labels) has \(labelArray.dimensions[0]) labels")
        }
        let classCount = Int(labelArray.bytes.max() ?? 0) + 1
        let names = classNames ?? (0..<classCount).map { "class \($0)" }
        guard classCount <= names.count else {
            throw CohortError("\(labels): label \(classCount - 1) is outside the \(names.count) classes")
        }
        return ImageSet(
            images: imageArray.bytes,
            labels: labelArray.bytes.map { Int64($0) },
            height: imageArray.dimensions[1],
            width: imageArray.dimensions[2],
            channels: imageArray.dimensions.count == 4 ? imageArray.dimensions[3] : 1,
            classNames: names,
            source: source
        )
    }
}
