/// Training-time image augmentation over NCHW samples: random crop after zero padding, and
/// random horizontal flip. Each batch draws from its own generator, derived from
/// (seed, rank, epoch, step): reproducible, different every epoch, and nothing to checkpoint.
public struct Augmenter: Sendable {
    public let augmentation: Augmentation
    public let shape: [Int]
    public let seed: UInt64
    public let rank: Int

    public init(augmentation: Augmentation, shape: [Int], seed: UInt64, rank: Int) {
        (self.augmentation, self.shape, self.seed, self.rank) = (augmentation, shape, seed, rank)
    }

    public func apply(_ x: UnsafeMutablePointer<Float>, batch: Int, epoch: Int, step: Int) {
        guard augmentation.isEnabled, shape.count == 3 else { return }
        var generator = Generator(seed: seed, streams: Stream.augmentation.rawValue, UInt64(rank), UInt64(epoch), UInt64(step))
        let (channels, height, width) = (shape[0], shape[1], shape[2])
        let pad = augmentation.cropPadding
        var scratch = [Float](repeating: 0, count: height * width)
        for sample in 0..<batch {
            let dy = pad > 0 ? generator.nextIndex(below: 2 * pad + 1) - pad : 0
            let dx = pad > 0 ? generator.nextIndex(below: 2 * pad + 1) - pad : 0
            let flip = augmentation.horizontalFlip && generator.next() & 1 == 1
            for channel in 0..<channels {
                let plane = x + (sample * channels + channel) * height * width
                // out[y, x] = in[y + dy, (flip ? W − 1 − x : x) + dx], zero outside.
                for y in 0..<height {
                    let sourceY = y + dy
                    for column in 0..<width {
                        let sourceX = (flip ? width - 1 - column : column) + dx
                        scratch[y * width + column] = (sourceY >= 0 && sourceY < height && sourceX >= 0 && sourceX < width)
                            ? plane[sourceY * width + sourceX] : 0
                    }
                }
                scratch.withUnsafeBufferPointer { plane.update(from: $0.baseAddress!, count: height * width) }
            }
        }
    }
}
