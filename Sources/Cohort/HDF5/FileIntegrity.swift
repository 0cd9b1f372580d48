import CCohort
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A checksum over every byte of a file Cohort writes, checked before libhdf5 parses it.
///
/// libhdf5 1.10 trusts what it reads: a damaged file can make it read out of bounds (the
/// damaged-files test found a segmentation fault in `H5HG_read` for a checkpoint with 8 bits
/// flipped). So every HDF5 file Cohort writes (checkpoints, prepared datasets, predictions)
/// ends with a 24-byte trailer after the HDF5 data, which HDF5, h5py and every other reader
/// ignore: the magic `COHORTCK`, the count of bytes covered, and the zlib CRC-32 of those
/// bytes, little-endian. `HDF5File.open` checks a file that has the trailer before anything
/// else reads it; a file without one (written by other tools) is opened as it is.
public enum FileIntegrity {
    static let magic = Array("COHORTCK".utf8)
    static let trailerSize = 24
    private static let lock = NSLock()
    /// Files verified by this process, by path, size and modification time.
    nonisolated(unsafe) private static var verified: Set<String> = []

    /// Appends the trailer to a file just written (before it is synced and renamed into place).
    public static func seal(_ path: String) throws {
        let covered = try fileSize(path)
        let crc = try checksum(path, count: covered)
        var trailer = magic
        withUnsafeBytes(of: UInt64(covered).littleEndian) { trailer += $0 }
        withUnsafeBytes(of: UInt64(crc).littleEndian) { trailer += $0 }
        let descriptor = open(path, O_WRONLY | O_APPEND)
        guard descriptor >= 0 else { throw CohortError("\(path): cannot seal the file: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        guard write(descriptor, trailer, trailer.count) == trailer.count else {
            throw CohortError("\(path): cannot seal the file (disk full?): \(String(cString: strerror(errno)))")
        }
    }

    /// Checks the trailer of a sealed file. A file without a trailer (written by another tool)
    /// is first read by libhdf5 in a child process, so that a damaged one that would crash or
    /// hang the library ends the child, not this process, and is refused here with one line.
    public static func verify(_ path: String) throws {
        var status = stat()
        guard stat(path, &status) == 0 else { return }
        let key = "\(path)|\(status.st_size)|\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
        if lock.withLock({ verified.contains(key) }) { return }
        let size = Int(status.st_size)
        var trailer = [UInt8](repeating: 0, count: trailerSize)
        if size >= trailerSize {
            let descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { return }
            let read = pread(descriptor, &trailer, trailerSize, off_t(size - trailerSize))
            close(descriptor)
            if read != trailerSize { trailer = [] }
        }
        guard size >= trailerSize, Array(trailer.prefix(8)) == magic else {
            try probeForeign(path)
            lock.withLock { _ = verified.insert(key) }
            return
        }
        let covered = trailer[8..<16].withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let stored = trailer[16..<24].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard covered == size - trailerSize else {
            throw CohortError("\(path): checksum mismatch (the file is \(size) bytes, its trailer covers \(covered)); the file is damaged")
        }
        let computed = try checksum(path, count: covered)
        guard UInt64(computed) == stored else {
            throw CohortError("\(path): checksum mismatch over the file's bytes (stored \(stored), computed \(computed)); the file is damaged")
        }
        lock.withLock { _ = verified.insert(key) }
    }

    /// Seconds the child may take to read a foreign file before it is taken to hang libhdf5
    /// (`COHORT_HDF5_PROBE_SECONDS` sets it, for tests).
    static let probeTimeout = ProcessInfo.processInfo.environment["COHORT_HDF5_PROBE_SECONDS"].flatMap { Int($0) } ?? 120

    private static func probeForeign(_ path: String) throws {
        let names = HDF5File.attributeNames.map { strdup($0) }
        defer { names.forEach { free($0) } }
        let outcome = names.map { UnsafePointer($0) }.withUnsafeBufferPointer { pointers in
            cohort_h5_probe(path, pointers.baseAddress, Int32(pointers.count), Int32(probeTimeout * 1000))
        }
        if outcome > 0 {
            throw CohortError("\(path): the HDF5 library crashed reading this file (signal \(outcome), in a child process); the file is damaged")
        }
        if outcome < 0 {
            throw CohortError("\(path): the HDF5 library did not finish reading this file in \(probeTimeout) s; the file is damaged")
        }
    }

    private static func fileSize(_ path: String) throws -> Int {
        var status = stat()
        guard stat(path, &status) == 0 else { throw CohortError("\(path): cannot read: \(String(cString: strerror(errno)))") }
        return Int(status.st_size)
    }

    private static func checksum(_ path: String, count: Int) throws -> UInt {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw CohortError("\(path): cannot read: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var crc = crc32(0, nil, 0)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset = 0
        while offset < count {
            let length = min(buffer.count, count - offset)
            let got = pread(descriptor, &buffer, length, off_t(offset))
            guard got > 0 else { throw CohortError("\(path): cannot read byte \(offset): the file is shorter than it says") }
            crc = crc32(crc, buffer, UInt32(got))
            offset += got
        }
        return crc
    }
}
