import Foundation

/// The times of containers' calls to their sublayers, recorded only while `cohort profile`
/// asks (`recording`); otherwise a sublayer call costs one branch more.
public enum SublayerTimes {
    nonisolated(unsafe) public static var recording = false
    nonisolated(unsafe) public static var forward: [String: Double] = [:]
    nonisolated(unsafe) public static var backward: [String: Double] = [:]

    public static func reset() { (forward, backward) = ([:], [:]) }
}

extension Layer {
    /// `forward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedForward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        guard SublayerTimes.recording else { return forward(input, batch: batch, training: training) }
        let start = monotonicNanoseconds()
        let output = forward(input, batch: batch, training: training)
        SublayerTimes.forward[name, default: 0] += Double(monotonicNanoseconds() - start) / 1e9
        return output
    }

    /// `backward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedBackward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        guard SublayerTimes.recording else { return backward(input, outputGradient: outputGradient, batch: batch) }
        let start = monotonicNanoseconds()
        let gradient = backward(input, outputGradient: outputGradient, batch: batch)
        SublayerTimes.backward[name, default: 0] += Double(monotonicNanoseconds() - start) / 1e9
        return gradient
    }
}
