import Foundation
import XCTest
@testable import Cohort

final class CheckpointTests: XCTestCase {
    private func sample() -> Checkpoint {
        var checkpoint = Checkpoint(position: .init(epoch: 2, stepInEpoch: 5, globalStep: 25, samplesSeen: 400),
                                    worldSize: 2, batchSize: 8, optimizerSteps: 25, config: "name: x\n")
        checkpoint.tensors["parameters/dense_1/weight"] = ([2, 3], [1, 2, 3, 4, 5, 6])
        checkpoint.tensors["optimizer/adam_m/dense_1/weight"] = ([2, 3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        checkpoint.words["rng"] = [1, 2, 3, UInt64.max]
        checkpoint.metrics["test_accuracy"] = [0.5, 0.75]
        return checkpoint
    }

    /// training.keep_global_batch: the micro-batch stays when it divides the rows per rank, else
    /// the largest one below it that does; a global batch the ranks cannot share is refused.
    func test_keepingTheGlobalBatchChoosesMicroBatchesAndAccumulation() throws {
        let training = TrainingConfig(batchSize: 32)
        let onOne = try Trainer.keepingGlobalBatch(training, saved: (2, 32), ranks: 1)
        XCTAssertEqual([onOne.0.batchSize, onOne.0.accumulateSteps], [32, 2])
        let onThree = try Trainer.keepingGlobalBatch(TrainingConfig(batchSize: 48), saved: (2, 48), ranks: 3)
        XCTAssertEqual([onThree.0.batchSize, onThree.0.accumulateSteps], [32, 1])
        let onFour = try Trainer.keepingGlobalBatch(TrainingConfig(batchSize: 20), saved: (1, 96), ranks: 4)
        XCTAssertEqual([onFour.0.batchSize, onFour.0.accumulateSteps], [12, 2])
        let same = try Trainer.keepingGlobalBatch(training, saved: (2, 32), ranks: 2)
        XCTAssertEqual(same.0, training)
        XCTAssertNil(same.1)
        XCTAssertThrowsError(try Trainer.keepingGlobalBatch(training, saved: (4, 16), ranks: 3)) { error in
            XCTAssertTrue("\(error)".contains("global batch 64 (4 × 16) does not split evenly over 3 ranks"), "\(error)")
        }
    }

    func test_roundTripKeepsEveryField() throws {
        let directory = try temporaryDirectory(self)
        try sample().writeAtomically(to: "\(directory)/c.h5")
        let read = try Checkpoint.read(from: "\(directory)/c.h5")
        XCTAssertEqual(read.position, sample().position)
        XCTAssertEqual(read.tensors["parameters/dense_1/weight"]?.shape, [2, 3])
        XCTAssertEqual(read.tensors["parameters/dense_1/weight"]?.values, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(read.tensors["optimizer/adam_m/dense_1/weight"]?.values, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        XCTAssertEqual(read.words["rng"], [1, 2, 3, UInt64.max])
        XCTAssertEqual(read.metrics["test_accuracy"], [0.5, 0.75])
        XCTAssertEqual(read.config, "name: x\n")
        XCTAssertEqual(read.worldSize, 2)
        XCTAssertEqual(read.optimizerSteps, 25)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains("tmp") }
        XCTAssertEqual(leftovers, [])
    }

    func test_flippedBytesAreRefusedByTheChecksum() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/c.h5"
        try sample().writeAtomically(to: path)
        var bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        // Find the float 6.0 (the last weight) and change it.
        let six: [UInt8] = [0x00, 0x00, 0xC0, 0x40]
        let index = (0..<(bytes.count - 4)).first { Array(bytes[$0..<$0 + 4]) == six }!
        bytes[index + 2] = 0xC1
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        XCTAssertThrowsError(try Checkpoint.read(from: path)) { error in
            XCTAssertTrue("\(error)".contains("checksum mismatch"), "\(error)")
        }
    }

    func test_truncatedFileIsRefused() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/c.h5"
        try sample().writeAtomically(to: path)
        let bytes = FileManager.default.contents(atPath: path)!
        _ = FileManager.default.createFile(atPath: path, contents: bytes.prefix(bytes.count / 2))
        XCTAssertThrowsError(try Checkpoint.read(from: path))
    }

    /// Tensors written from memory in place (`views`, how the trainer writes its state) give the
    /// same file as copies: the same datasets, values and checksum, read back as `tensors`.
    func test_viewsAreWrittenAsTensors() throws {
        let directory = try temporaryDirectory(self)
        try sample().writeAtomically(to: "\(directory)/copied.h5")
        let weights: [Float] = [1, 2, 3, 4, 5, 6]
        try weights.withUnsafeBufferPointer { buffer in
            var viewed = sample()
            viewed.tensors["parameters/dense_1/weight"] = nil
            viewed.views["parameters/dense_1/weight"] = ([2, 3], buffer)
            try viewed.writeAtomically(to: "\(directory)/viewed.h5")
        }
        let (copied, viewed) = (try Checkpoint.read(from: "\(directory)/copied.h5"), try Checkpoint.read(from: "\(directory)/viewed.h5"))
        XCTAssertEqual(viewed.tensors.keys.sorted(), copied.tensors.keys.sorted())
        XCTAssertEqual(viewed.tensors["parameters/dense_1/weight"]?.values, weights)
        XCTAssertEqual(viewed.tensors["parameters/dense_1/weight"]?.shape, [2, 3])
        let checksum = { (path: String) throws -> [Int64] in try HDF5File.open(path).numberAttribute("checksum_crc32", as: Int64.self) }
        XCTAssertEqual(try checksum("\(directory)/viewed.h5"), try checksum("\(directory)/copied.h5"))
    }

    /// Rank 0 writes the other ranks' slices of a node's shared moments and then drops their
    /// pages from its own mappings: the memory keeps the values, the process no longer holds them.
    func test_sharedPartsAreDroppedFromThisProcessOnceWrittenAndKeepTheirValues() throws {
        let directory = try temporaryDirectory(self)
        let count = 64 * 1024, bytes = 64 * 1024 * MemoryLayout<Float>.size
        let memory = try XCTUnwrap(mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0))
        XCTAssertNotEqual(memory, MAP_FAILED)
        defer { munmap(memory, bytes) }
        let floats = UnsafeMutableBufferPointer(start: memory.bindMemory(to: Float.self, capacity: count), count: count)
        for index in floats.indices { floats[index] = Float(index) }
        /// Resident kilobytes of the mapping at `memory` (/proc/self/smaps).
        func residentKilobytes() throws -> Int {
            let text = try XCTUnwrap(ProportionalMemory.readWhole("/proc/self/smaps"))
            let start = String(UInt(bitPattern: memory), radix: 16)
            let lines = text.split(separator: "\n")
            let header = try XCTUnwrap(lines.firstIndex { $0.hasPrefix(start + "-") }, "no mapping at \(start)")
            let rss = try XCTUnwrap(lines[(header + 1)...].first { $0.hasPrefix("Rss:") })
            return try XCTUnwrap(Int(rss.split(separator: " ", omittingEmptySubsequences: true)[1]))
        }
        XCTAssertEqual(try residentKilobytes(), bytes / 1024)
        var checkpoint = sample()
        checkpoint.views["optimizer/adam_v/dense_1/weight"] = ([count], UnsafeBufferPointer(floats))
        // The second half and a piece that covers no whole page (nothing of it can be dropped).
        checkpoint.sharedPartsToUnmap["optimizer/adam_v/dense_1/weight"] = [
            UnsafeBufferPointer(rebasing: floats[(count / 2)...]), UnsafeBufferPointer(rebasing: floats[10..<500]),
        ]
        try checkpoint.writeAtomically(to: "\(directory)/c.h5")
        XCTAssertEqual(try residentKilobytes(), bytes / 2048, "the second half's pages are still mapped")
        XCTAssertTrue(floats.indices.allSatisfy { floats[$0] == Float($0) }, "shared memory lost values")
        XCTAssertEqual(try Checkpoint.read(from: "\(directory)/c.h5").tensors["optimizer/adam_v/dense_1/weight"]?.values,
                       (0..<count).map(Float.init))
    }

    func test_failedWriteLeavesThePreviousCheckpoint() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/c.h5"
        try sample().writeAtomically(to: path)
        XCTAssertThrowsError(try sample().writeAtomically(to: "\(directory)/missing/c.h5"))
        XCTAssertNoThrow(try Checkpoint.read(from: path))
    }

    func test_newerFormatVersionIsRefused() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/c.h5"
        try sample().writeAtomically(to: path)
        // Rewrite the version attribute in place with the HDF5 API, then seal the file again
        // (its trailer checksum would refuse the edit first).
        try unsealed(path)
        let file = try HDF5File.openForWriting(path)
        try file.setAttribute("format_version", [Int64(99)])
        try file.flush()
        file.close()
        try FileIntegrity.seal(path)
        XCTAssertThrowsError(try Checkpoint.read(from: path)) { error in
            XCTAssertTrue("\(error)".contains("format version 99"), "\(error)")
        }
    }

    /// The attributes a resume reads are inside the checksum: an edited config, position or rank
    /// count is refused as a damaged file would be.
    func test_editedAttributesAreRefused() throws {
        let directory = try temporaryDirectory(self)
        for (name, edit) in [("config", { (file: HDF5File) in try file.setAttribute("config", "edited: true") }),
                             ("global_step", { (file: HDF5File) in try file.setAttribute("global_step", [Int64(12345)]) }),
                             ("epoch", { (file: HDF5File) in try file.setAttribute("epoch", [Int64(7)]) }),
                             ("world_size", { (file: HDF5File) in try file.setAttribute("world_size", [Int64(64)]) })] {
            let path = "\(directory)/\(name).h5"
            try sample().writeAtomically(to: path)
            XCTAssertNoThrow(try Checkpoint.read(from: path))
            // Edited as a tool would and sealed again: the checksum over the attributes refuses it.
            try unsealed(path)
            let file = try HDF5File.openForWriting(path)
            try edit(file)
            try file.flush()
            file.close()
            try FileIntegrity.seal(path)
            XCTAssertThrowsError(try Checkpoint.read(from: path), name) { error in
                XCTAssertTrue("\(error)".contains("checksum mismatch"), "\(name): \(error)")
            }
        }
    }

    /// Removes the integrity trailer (what an editing tool that rewrites the file in place does).
    private func unsealed(_ path: String) throws {
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        XCTAssertEqual(truncate(path, off_t(size - FileIntegrity.trailerSize)), 0)
    }

    /// Any byte of a checkpoint changed is refused before libhdf5 reads the file; h5py reads a
    /// sealed file as usual (the trailer lies past HDF5's end of file).
    func test_aChangedByteAnywhereIsRefusedBeforeHDF5ReadsIt() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/c.h5"
        try sample().writeAtomically(to: path)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(bytes.suffix(FileIntegrity.trailerSize).prefix(8)), Array("COHORTCK".utf8))
        bytes[bytes.count / 3] ^= 1
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Checkpoint.read(from: path)) {
            XCTAssertTrue("\($0)".contains("checksum mismatch over the file's bytes"), "\($0)")
        }
    }
}
