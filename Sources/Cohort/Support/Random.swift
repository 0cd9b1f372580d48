/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
///
/// Every random stream in Cohort is one of these, derived from (seed, purpose, rank, epoch)
/// so that the stream a rank draws from never depends on how many draws came before it
/// in another stream; its whole state is four words, which checkpoints store verbatim.
public struct Generator: RandomNumberGenerator, Equatable, Sendable {
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64, streams: UInt64...) {
        var mix = SplitMix64(seed)
        for stream in streams { mix = SplitMix64(mix.next() ^ (stream &* 0x9E37_79B9_7F4A_7C15)) }
        state = (mix.next(), mix.next(), mix.next(), mix.next())
    }

    public init(state: [UInt64]) {
        precondition(state.count == 4, "a generator state is four words")
        self.state = (state[0], state[1], state[2], state[3])
    }

    public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

    public mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits, exactly representable as Float.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Draws as usual but skips the transforms (`nextGaussian` gives 0): for values about to be
    /// overwritten (weights a checkpoint will load), so the stream after them is unchanged.
    var skipsTransforms = false

    /// Standard normal (Box–Muller), used for weight initialization.
    public mutating func nextGaussian() -> Float {
        let (u1, u2) = nextBoxMullerPair()
        if skipsTransforms { return 0 }
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    /// The two uniforms `nextGaussian` transforms: u1 in (0, 1), u2 in [0, 1).
    public mutating func nextBoxMullerPair() -> (Double, Double) {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-300)
        return (u1, Double(next() >> 11) * 0x1p-53)
    }

    /// Uniform integer in 0..<bound without modulo bias (Lemire).
    public mutating func nextIndex(below bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    public static func == (a: Generator, b: Generator) -> Bool { a.stateWords == b.stateWords }
}

@inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

private struct SplitMix64 {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Purposes a stream is drawn for; part of every stream's derivation.
public enum Stream: UInt64 {
    case initialization = 1
    case shuffle = 2
    case dropout = 3
    case augmentation = 4
    /// The phase of a token stream's windows in each epoch.
    case windows = 5
    /// Sampling in `cohort generate`.
    case generation = 6
}

/// Fisher–Yates permutation of 0..<count from its own generator.
public func permutation(count: Int, generator: inout Generator) -> [Int] {
    var order = Array(0..<count)
    if count > 1 {
        for i in stride(from: count - 1, to: 0, by: -1) {
            order.swapAt(i, generator.nextIndex(below: i + 1))
        }
    }
    return order
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
