import Foundation

/// Unbuffered line output: under mpirun every rank's stdout is a pipe, and buffered lines
/// would arrive late or interleaved.
public func printLine(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

public func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Seconds since this process started (from /proc/self/stat), or nil where unavailable.
public func processUptime() -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
          let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    // Field 22 (starttime, clock ticks after boot) counts from the field after the command name.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 19, let ticks = Double(fields[19]), let now = Double(uptime.split(separator: " ")[0]) else { return nil }
    return now - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Monotonic nanoseconds, to pair with `seconds(since:)`.
@inline(__always) public func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Seconds elapsed since a `monotonicNanoseconds()` reading.
@inline(__always) public func seconds(since start: UInt64) -> Double { Double(monotonicNanoseconds() - start) / 1e9 }

/// The middle value (the upper one of an even count); 0 for no values.
public func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    return values.sorted()[values.count / 2]
}
