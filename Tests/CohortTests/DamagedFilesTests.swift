import Foundation
import XCTest
@testable import Cohort

/// The randomized part of the fault catalog: a checkpoint, a data file and a data file without
/// Cohort's checksum trailer (as another tool writes it) damaged in 90 seeded ways (bytes
/// flipped anywhere or in the metadata, 4 KiB blocks zeroed, truncated at a random offset). For every variant
/// `cohort evaluate` must either work or refuse with one line and status 1: never a trap (a
/// signal), a hang, an HDF5 error stack, or a change to the file it read.
final class DamagedFilesTests: XCTestCase {
    private struct Outcome { let status: Int32; let signalled: Bool; let error: String; var hung = false }

    /// Runs the built `cohort` directly (one process, no mpirun), killed after `seconds`.
    private static func cohort(_ arguments: [String], seconds: Double = 30, environment: [String: String] = [:]) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cohortExecutable())
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
            .merging(environment) { $1 }
        let error = FileManager.default.temporaryDirectory.appendingPathComponent("damaged-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: error, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: error) }
        if ProcessInfo.processInfo.environment["COHORT_KEEP_VARIANTS"] != nil { print("cohort \(arguments.joined(separator: " "))") }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: error)
        try process.run()
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        let hung = process.isRunning
        if hung {
            process.terminate()
            process.waitUntilExit()
        }
        return Outcome(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal,
                       error: (try? String(contentsOfFile: error, encoding: .utf8)) ?? "", hung: hung)
    }

    private static func damage(_ original: Data, seed: UInt64) -> (Data, String) {
        var generator = Generator(seed: seed, streams: 77)
        var bytes = original
        switch seed % 4 {
        case 3:
            // Metadata: the superblock, root group and object headers sit in the first 2 KiB.
            for _ in 0..<4 { bytes[generator.nextIndex(below: min(2048, bytes.count))] ^= UInt8(1 << generator.nextIndex(below: 8)) }
            return (bytes, "4 bits flipped in the first 2 KiB")
        case 0:
            for _ in 0..<8 { bytes[generator.nextIndex(below: bytes.count)] ^= UInt8(1 << generator.nextIndex(below: 8)) }
            return (bytes, "8 bits flipped")
        case 1:
            let start = generator.nextIndex(below: max(bytes.count / 4096, 1)) * 4096
            bytes.replaceSubrange(start..<min(start + 4096, bytes.count), with: Data(count: min(4096, bytes.count - start)))
            return (bytes, "4 KiB zeroed at \(start)")
        default:
            let length = generator.nextIndex(below: bytes.count)
            return (bytes.prefix(length), "truncated to \(length) bytes")
        }
    }

    func test_ninetyDamagedFilesAreRefusedCleanlyOrWork() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 96, seed: 1)
        let config = "\(directory)/c.yaml"
        try smallConfig(train: train, test: train, runDirectory: "\(directory)/run", epochs: 1, extra: "  max_steps: 2")
            .write(toFile: config, atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", config], directory: directory).status, 0)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        let data = try Data(contentsOf: URL(fileURLWithPath: train))
        // A file another tool wrote has no checksum trailer: libhdf5 itself meets the damage.
        let foreign = data.prefix(data.count - FileIntegrity.trailerSize)
        let files = [("checkpoint", try Data(contentsOf: URL(fileURLWithPath: checkpoint))), ("data", data),
                     ("foreign data", foreign)]
        let intact = "\(directory)/foreign.h5"  // undamaged, without a trailer: read as before
        try foreign.write(to: URL(fileURLWithPath: intact))
        // Started by hand, evaluate starts no MPI: an Open MPI singleton would have to make its
        // session directory under a file, and end in MPI_Init.
        let withoutMPI = try Self.cohort(["evaluate", checkpoint, "--data", intact], environment: ["OMPI_MCA_orte_tmpdir_base": "\(intact)/x"])
        XCTAssertEqual(withoutMPI.status, 0, "an intact file without a trailer\n\(withoutMPI.error)")
        // The variants run two at a time (one per core), each a process of its own (two MPI
        // singletons started at once would race for a session directory); outcomes are checked in order.
        let count = 90
        nonisolated(unsafe) var outcomes = [(what: String, bytes: Data, outcome: Outcome?, after: Data?)?](repeating: nil, count: count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: count) { index in
            let seed = UInt64(index)
            let (kind, original) = files[index % 3]
            let (bytes, how) = Self.damage(original, seed: seed)
            let variant = "\(directory)/variant-\(seed).h5"
            try? bytes.write(to: URL(fileURLWithPath: variant))
            let arguments = kind == "checkpoint" ? ["evaluate", variant, "--data", train] : ["evaluate", checkpoint, "--data", variant]
            let outcome = try? Self.cohort(arguments)
            let after = try? Data(contentsOf: URL(fileURLWithPath: variant))
            lock.withLock { outcomes[index] = ("variant \(seed) (\(kind), \(how))", bytes, outcome, after) }
        }
        var refused = 0, worked = 0
        for case let (what, bytes, outcome?, after)? in outcomes {
            XCTAssertFalse(outcome.hung, "\(what): hung for 30 s")
            XCTAssertFalse(outcome.signalled, "\(what): ended by a signal\n\(outcome.error)")
            XCTAssertTrue(outcome.status == 0 || outcome.status == 1, "\(what): status \(outcome.status)\n\(outcome.error)")
            XCTAssertFalse(outcome.error.contains("Fatal error") || outcome.error.contains("HDF5-DIAG"), "\(what):\n\(outcome.error)")
            if outcome.status == 1 {
                refused += 1
                XCTAssertEqual(outcome.error.split(separator: "\n").filter { $0.hasPrefix("cohort:") }.count, 1, "\(what):\n\(outcome.error)")
            } else {
                worked += 1
            }
            XCTAssertEqual(after, bytes, "\(what): the file read was changed")
        }
        XCTAssertEqual(refused + worked, count, "every variant ran")
        XCTAssertGreaterThan(refused, 45, "most damage is found (\(refused) refused, \(worked) worked)")
        print("damaged files: \(refused) refused with one line, \(worked) evaluated")
    }

    /// Damage that crashes or hangs libhdf5 1.10 itself, in a file without Cohort's trailer: the
    /// size of the first object in the global heap (where variable-length strings such as
    /// `class_names` live). The file is read in a child process first, so it is refused.
    func test_damageThatBreaksLibHDF5InAForeignFileIsRefused() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 96, seed: 1)
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/run", epochs: 1, extra: "  max_steps: 1")
            .write(toFile: "\(directory)/c.yaml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", "\(directory)/c.yaml"], directory: directory).status, 0)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        let data = try Data(contentsOf: URL(fileURLWithPath: train))
        let foreign = data.prefix(data.count - FileIntegrity.trailerSize)
        let heap = try XCTUnwrap(foreign.range(of: Data("GCOL".utf8))).lowerBound
        for (offset, bit, what, printed) in [(28, 7, "crash", "crashed reading this file"), (25, 0, "hang", "did not finish reading this file in 2 s")] {
            var bytes = Data(foreign)
            bytes[heap + offset] ^= UInt8(1 << bit)
            let variant = "\(directory)/\(what).h5"
            try bytes.write(to: URL(fileURLWithPath: variant))
            let outcome = try Self.cohort(["evaluate", checkpoint, "--data", variant], environment: ["COHORT_HDF5_PROBE_SECONDS": "2"])
            XCTAssertFalse(outcome.signalled, "\(what): ended by a signal\n\(outcome.error)")
            XCTAssertEqual(outcome.status, 1, "\(what)\n\(outcome.error)")
            XCTAssertEqual(outcome.error.trimmingCharacters(in: .whitespacesAndNewlines),
                           "cohort: \(variant): the HDF5 library \(printed)\(what == "crash" ? " (signal 11, in a child process)" : ""); the file is damaged")
        }
    }
}
