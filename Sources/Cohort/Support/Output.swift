import Foundation

/// Unbuffered line output: under mpirun every rank's stdout is a pipe, and buffered lines
/// would arrive late or interleaved.
public func printLine(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

public func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
