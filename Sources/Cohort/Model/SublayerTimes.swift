import Foundation

/// The times of containers' calls to their sublayers, recorded only while `cohort profile`
/// asks (`recording`); otherwise a sublayer call costs one branch more.
public enum SublayerTimes {
    nonisolated(unsafe) public static var recording = false
    nonisolated(unsafe) public static var forward: [String: Double] = [:]
    nonisolated(unsafe) public static var backward: [String: Double] = [:]

    public static func reset() { (forward, backward) = ([:], [:]) }

    /// `body`, its time added under `name` to `forward` or `backward` when `recording`.
    @inline(__always)
    static func timed<T>(_ name: @autoclosure () -> String, backward: Bool, _ body: () -> T) -> T {
        guard recording else { return body() }
        let start = monotonicNanoseconds()
        let result = body()
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        if backward { self.backward[name(), default: 0] += seconds } else { forward[name(), default: 0] += seconds }
        return result
    }
}

extension Layer {
    /// `forward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedForward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        SublayerTimes.timed(name, backward: false) { forward(input, batch: batch, training: training) }
    }

    /// `backward`, timed under its name when `SublayerTimes.recording`.
    @inline(__always)
    func timedBackward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        SublayerTimes.timed(name, backward: true) { backward(input, outputGradient: outputGradient, batch: batch) }
    }
}
