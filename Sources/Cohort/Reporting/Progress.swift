import Foundation

/// What rank 0 shows while an epoch runs. On a terminal: one live line redrawn in place
/// (`\r`), at most ten times a second. Otherwise (CI, SLURM logs): a plain line every
/// `every` steps, never a carriage return. `quiet` shows only the per-epoch lines.
public struct Progress {
    public enum Style: Equatable { case bar, lines, quiet }
    public let style: Style
    public let every: Int
    /// What the rate counts: samples, or target tokens for a language model.
    public var unit = "samples/s"
    private var lastDraw: UInt64 = 0
    private let write: (String) -> Void

    public init(style: Style, every: Int, write: @escaping (String) -> Void) {
        self.style = style
        self.every = max(every, 1)
        self.write = write
    }

    /// The style for this process's standard output. Under mpirun, isatty cannot tell: OpenMPI
    /// gives ranks a pseudo-terminal even when mpirun's own output is a file, so there the
    /// launcher says (COHORT_PROGRESS=bar|lines; launch/cohort-mpirun sets it from its own
    /// terminal) and plain lines are the default.
    public static func forStandardOutput(quiet: Bool, every: Int, stepsPerEpoch: Int) -> Progress {
        let environment = ProcessInfo.processInfo.environment
        let style: Style
        if quiet {
            style = .quiet
        } else if let chosen = environment["COHORT_PROGRESS"], chosen == "bar" || chosen == "lines" {
            style = chosen == "bar" ? .bar : .lines
        } else if environment["OMPI_COMM_WORLD_SIZE"] != nil {
            style = .lines
        } else {
            style = isatty(STDOUT_FILENO) == 1 ? .bar : .lines
        }
        // Without a configured interval, plain lines come about ten times per epoch.
        let interval = every > 0 ? every : max(stepsPerEpoch / 10, 1)
        return Progress(style: style, every: interval) { text in
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }

    public struct Snapshot {
        public var epoch, epochs, step, steps: Int
        public var loss, learningRate, samplesPerSecond, elapsed: Double
    }

    public mutating func update(_ s: Snapshot) {
        switch style {
        case .quiet:
            return
        case .lines:
            guard s.step % every == 0 || s.step == s.steps else { return }
            write(String(format: "epoch %d/%d step %d/%d loss %.4f lr %.3g \(unit) %.0f\n",
                         s.epoch, s.epochs, s.step, s.steps, s.loss, s.learningRate, s.samplesPerSecond))
        case .bar:
            let now = DispatchTime.now().uptimeNanoseconds
            guard now - lastDraw > 100_000_000 || s.step == s.steps else { return }
            lastDraw = now
            let width = 24
            let filled = s.steps > 0 ? width * s.step / s.steps : width
            let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(width - filled - 1, 0))
            let remaining = s.step > 0 ? s.elapsed / Double(s.step) * Double(s.steps - s.step) : 0
            write("\r\u{1B}[K" + String(format: "epoch %d/%d [", s.epoch, s.epochs) + bar
                  + String(format: "] %d/%d  %.0f \(unit)  ETA ", s.step, s.steps, s.samplesPerSecond) + duration(remaining)
                  + String(format: "  loss %.4f  lr %.3g", s.loss, s.learningRate))
        }
    }

    /// Called before an epoch's summary line: ends the live line.
    public func finishEpoch() {
        if style == .bar { write("\r\u{1B}[K") }
    }

    private func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        return total >= 3600 ? String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
                             : String(format: "%d:%02d", total / 60, total % 60)
    }
}
