import Foundation

/// Learnable synthetic images for tests and scale trials: each class has a random prototype
/// image, and every sample is its class's prototype plus uniform noise, clipped to [0, 255].
/// With `noise` well below the distance between prototypes, a small model separates the classes.
public enum SyntheticImages {
    public static func make(rows: Int, height: Int, width: Int, channels: Int, classes: Int,
                            noise: Int = 64, seed: UInt64) -> ImageSet {
        var generator = Generator(seed: seed, streams: 0x5E7)
        let size = height * width * channels
        let prototypes = (0..<classes).map { _ in (0..<size).map { _ in generator.nextIndex(below: 256) } }
        var images = [UInt8](repeating: 0, count: rows * size)
        var labels = [Int64](repeating: 0, count: rows)
        for row in 0..<rows {
            let label = generator.nextIndex(below: classes)
            labels[row] = Int64(label)
            for index in 0..<size {
                let value = prototypes[label][index] + generator.nextIndex(below: 2 * noise + 1) - noise
                images[row * size + index] = UInt8(clamping: value)
            }
        }
        return ImageSet(images: images, labels: labels, height: height, width: width, channels: channels,
                        classNames: (0..<classes).map { "class \($0)" },
                        source: "synthetic: \(rows) rows, \(height)×\(width)×\(channels), \(classes) classes, noise \(noise), seed \(seed)")
    }
}

extension SyntheticImages {
    /// Writes the same kind of data straight to an HDF5 file in slices of `sliceRows`, so files
    /// far larger than memory can be made (scale tests of sharded reading).
    public static func write(to path: String, rows: Int, height: Int, width: Int, channels: Int, classes: Int,
                             noise: Int = 64, seed: UInt64, chunkRows: Int = 1024, sliceRows: Int = 65536,
                             gzipLevel: Int? = nil) throws {
        let size = height * width * channels
        var generator = Generator(seed: seed, streams: 0x5E7)
        let prototypes = (0..<classes).map { _ in (0..<size).map { _ in generator.nextIndex(below: 256) } }
        let temporary = path + ".tmp-\(getpid())"
        do {
            let file = try HDF5File.create(temporary)
            try file.createDataset("images", of: UInt8.self, shape: [rows, height, width, channels], chunkRows: chunkRows,
                                   gzipLevel: gzipLevel)
            try file.createDataset("labels", of: Int64.self, shape: [rows], chunkRows: chunkRows * 16)
            var images = [UInt8](repeating: 0, count: min(sliceRows, rows) * size)
            var labels = [Int64](repeating: 0, count: min(sliceRows, rows))
            var start = 0
            while start < rows {
                let count = min(sliceRows, rows - start)
                images.withUnsafeMutableBufferPointer { buffer in
                    for row in 0..<count {
                        let label = generator.nextIndex(below: classes)
                        labels[row] = Int64(label)
                        let prototype = prototypes[label]
                        for index in 0..<size {
                            let value = prototype[index] + Int(generator.next() % UInt64(2 * noise + 1)) - noise
                            buffer[row * size + index] = UInt8(clamping: value)
                        }
                    }
                }
                try images.withUnsafeBufferPointer { try file.writeRows("images", start: start, count: count, from: $0.baseAddress!) }
                try labels.withUnsafeBufferPointer { try file.writeRows("labels", start: start, count: count, from: $0.baseAddress!) }
                start += count
            }
            try file.setAttribute("class_names", (0..<classes).map { "class \($0)" })
            try file.setAttribute("num_classes", [Int64(classes)])
            try file.setAttribute("layout", "NHWC")
            try file.setAttribute("format", "cohort-dataset")
            try file.setAttribute("source", "synthetic (streamed): \(rows) rows, \(height)×\(width)×\(channels), \(classes) classes, noise \(noise), seed \(seed)")
            try file.flush()
            file.close()
        }
        try replaceItem(at: path, with: temporary)
    }
}
