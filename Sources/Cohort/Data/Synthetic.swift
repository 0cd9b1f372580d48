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
