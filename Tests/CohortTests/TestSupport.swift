import Foundation
import XCTest
@testable import Cohort

/// A fresh directory under /tmp, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "cohort-tests-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Writes a small learnable image dataset (see SyntheticImages) and returns its path.
@discardableResult
func writeSyntheticDataset(_ path: String, rows: Int, height: Int = 6, width: Int = 6, channels: Int = 1,
                           classes: Int = 4, seed: UInt64 = 7) throws -> String {
    try SyntheticImages.make(rows: rows, height: height, width: width, channels: channels, classes: classes, seed: seed)
        .write(to: path)
    return path
}

/// A config for a small MLP on the synthetic data, as YAML text.
func smallConfig(train: String, test: String?, runDirectory: String, epochs: Int = 2, batchSize: Int = 8,
                 optimizer: String = "adam", extra: String = "", layers: String? = nil) -> String {
    """
    name: small
    seed: 3
    run_dir: \(runDirectory)
    data:
      train: \(train)
    \(test.map { "  test: \($0)" } ?? "")
    model:
      layers:
    \(layers ?? """
        - type: dense
          units: 16
          activation: relu
        - type: dense
          units: 4
    """)
    optimizer:
      type: \(optimizer)
      learning_rate: 0.01
    training:
      epochs: \(epochs)
      batch_size: \(batchSize)
      eval_batch_size: 64
    \(extra)
    """
}

struct ProcessResult {
    let status: Int32
    let output: String
    let error: String
}

/// The `cohort` executable SwiftPM built beside the test bundle (override with COHORT_BIN).
func cohortExecutable() -> String {
    if let path = ProcessInfo.processInfo.environment["COHORT_BIN"] { return path }
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("cohort").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    return ".build/debug/cohort"
}

/// A `cohort` job under `mpirun`, started and not yet waited for.
final class CohortJob {
    let process = Process()
    let outputPath: String
    let errorPath: String

    init(ranks: Int, _ arguments: [String], environment extra: [String: String] = [:], directory: String,
         workingDirectory: String? = nil, executable: String = cohortExecutable()) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        var mpirunArguments = ["mpirun", "-np", "\(ranks)"]
        if geteuid() == 0 { mpirunArguments.append("--allow-run-as-root") }
        // A job whose ranks exit with an error ends at once instead of after mpirun's 2 s grace
        // before SIGKILL (most refusal tests end that way).
        mpirunArguments += ["--mca", "odls_base_sigkill_timeout", "0"]
        if ranks > ProcessInfo.processInfo.activeProcessorCount { mpirunArguments.append("--oversubscribe") }
        mpirunArguments.append(executable)
        process.arguments = mpirunArguments + arguments
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        environment["OPENBLAS_NUM_THREADS"] = "1"
        environment.merge(extra) { $1 }
        process.environment = environment
        outputPath = "\(directory)/stdout-\(UUID().uuidString).txt"
        errorPath = "\(directory)/stderr-\(UUID().uuidString).txt"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: outputPath)
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var error: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    /// The rank processes: mpirun's children running cohort.
    func rankProcesses() -> [pid_t] {
        let children = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/task/\(process.processIdentifier)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap { pid_t($0) }.filter { pid in
            ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").contains("cohort")
        }.sorted()
    }

    /// Waits until the output contains `text` (true) or `seconds` pass (false).
    func waitForOutput(_ text: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            usleep(20_000)
        }
        return false
    }

    /// Waits for the job to end; returns its status, or nil if it outlived `seconds` (then kills it).
    func wait(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }
}

/// Runs `cohort ARGUMENTS` under `mpirun -np RANKS` to the end, output to files (PLATFORM.md:
/// pipes from an MPI job can hang a reader), with the OMPI_/PMIX_ variables of any outer job removed.
func runCohort(ranks: Int, _ arguments: [String], environment extra: [String: String] = [:],
               directory: String, workingDirectory: String? = nil, executable: String = cohortExecutable()) throws -> ProcessResult {
    let job = try CohortJob(ranks: ranks, arguments, environment: extra, directory: directory, workingDirectory: workingDirectory,
                            executable: executable)
    job.process.waitUntilExit()
    return ProcessResult(status: job.process.terminationStatus, output: job.output, error: job.error)
}

/// Parameters of a checkpoint, by name.
func checkpointParameters(_ path: String) throws -> [String: [Float]] {
    let checkpoint = try Checkpoint.read(from: path)
    var result: [String: [Float]] = [:]
    for (name, tensor) in checkpoint.tensors where name.hasPrefix("parameters/") { result[name] = tensor.values }
    return result
}

/// Largest |a - b| / max(|a|, |b|, floor) over all parameters.
func maxRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]], floor: Float = 1e-3) -> Float {
    var worst: Float = 0
    for (name, values) in a {
        guard let other = b[name], other.count == values.count else { return .infinity }
        for (x, y) in zip(values, other) { worst = max(worst, abs(x - y) / max(abs(x), abs(y), floor)) }
    }
    return a.count == b.count ? worst : .infinity
}

extension String {
    /// The text with `target` replaced, which must occur exactly once: a config edit in a test
    /// cannot silently do nothing after a key moves.
    func replacingOnce(_ target: String, with replacement: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let occurrences = components(separatedBy: target).count - 1
        XCTAssertEqual(occurrences, 1, "the config text holds '\(target)' \(occurrences) times", file: file, line: line)
        return replacingOccurrences(of: target, with: replacement)
    }
}

/// Largest |a - b| over all parameters.
func maxAbsoluteDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
    guard a.count == b.count else { return .infinity }
    var worst: Float = 0
    for (name, values) in a {
        guard let other = b[name], other.count == values.count else { return .infinity }
        for (x, y) in zip(values, other) { worst = max(worst, abs(x - y)) }
    }
    return worst
}

/// Float32 rounding's bound on `maxAbsoluteDifference` between two plain-SGD runs that add the
/// same per-row gradient terms in another association (another rank count or topology, another
/// all-reduce, a partial batch cut at other rows), after `steps` steps.
///
/// A sum of n terms in any order is within γ(n) = n·u / (1 − n·u) of exact, relative to Σ|terms|
/// (Higham, Accuracy and Stability of Numerical Algorithms, §3.1; u = 2⁻²⁴), so the two runs'
/// gradient elements differ by at most 2γ(n)·Σ|terms| a step, and SGD moves a parameter by lr
/// times that; the steps add up. Σ|terms| ≤ `scale`, which each test states from its data and
/// model (a mean loss: each row's term is |input| · |dL/dy| divided by the rows, so the sum is at
/// most the largest input times the largest output gradient), with the first-order feedback of
/// a difference this small on later gradients (lr · curvature a step) inside it.
/// Adam has no such bound: it scales a gradient that is rounding noise up to a step of the
/// learning rate, so tests that compare Adam runs compare bits. Neither has one across a kink
/// (ReLU, max-pool) once a pre-activation lies within the rounding of 0: there the tests compare
/// runs whose arithmetic is the same (`RowBlocks`), bit for bit.
func float32Bound(steps: Int, terms: Int, learningRate: Float, scale: Float) -> Float {
    let u = Float(0x1p-24)
    let gamma = Float(terms) * u / (1 - Float(terms) * u)
    return Float(steps) * learningRate * 2 * gamma * scale
}
