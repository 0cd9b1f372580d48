import CCohort
import Foundation

/// Creates `path` and any missing parents, as `mkdir -p` does. A failure is one line naming the
/// directory at fault and the system's reason, never Foundation's error text.
public func makeDirectories(_ path: String, for purpose: String) throws {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/", omittingEmptySubsequences: true) {
        prefix += component
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw CohortError("\(prefix): cannot create the directory for \(purpose): \(String(cString: strerror(errno)))")
        }
        var status = stat()
        guard stat(prefix, &status) == 0 else {
            throw CohortError("\(prefix): cannot use the directory for \(purpose): \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw CohortError("\(prefix): is a file, not a directory (needed for \(purpose))")
        }
        prefix += "/"
    }
}

/// A running zlib CRC-32 (checkpoint checksums, data fingerprints).
struct CRC32 {
    private(set) var value: UInt = crc32(0, nil, 0)
    mutating func update(attributes text: String) {
        var bytes = Array(text.utf8)
        value = crc32(value, &bytes, UInt32(bytes.count))
    }
    mutating func update(name: String, bytes: UnsafeRawBufferPointer) {
        var nameBytes = Array(name.utf8)
        value = crc32(value, &nameBytes, UInt32(nameBytes.count))
        // zlib takes at most 4 GiB per call.
        var offset = 0
        while offset < bytes.count {
            let length = min(bytes.count - offset, 1 << 30)
            value = crc32(value, bytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), UInt32(length))
            offset += length
        }
    }
}

func syncFile(_ path: String) throws {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw CohortError("\(path): cannot open to sync: \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    guard fsync(descriptor) == 0 else { throw CohortError("\(path): fsync failed: \(String(cString: strerror(errno)))") }
}
