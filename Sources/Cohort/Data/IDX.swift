import CCohort
import Foundation

/// An IDX file (the MNIST format): magic 0x0000_08_NN (unsigned bytes, NN = number of
/// dimensions), big-endian 32-bit dimension sizes, then the bytes. Read from `.gz` or plain.
public struct IDXArray: Equatable {
    public let dimensions: [Int]
    public let bytes: [UInt8]

    public static func read(path: String) throws -> IDXArray {
        let data = try gunzip(path: path)
        guard data.count >= 4 else { throw CohortError("\(path): truncated IDX file (\(data.count) bytes, no header)") }
        guard data[0] == 0, data[1] == 0 else {
            throw CohortError("\(path): not an IDX file (magic \(hex(data.prefix(4))))")
        }
        guard data[2] == 0x08 else {
            throw CohortError("\(path): IDX element type 0x\(String(data[2], radix: 16)) is not unsigned byte (0x08)")
        }
        let rank = Int(data[3])
        guard rank >= 1, rank <= 4 else { throw CohortError("\(path): IDX file with \(rank) dimensions") }
        let headerSize = 4 + 4 * rank
        guard data.count >= headerSize else { throw CohortError("\(path): truncated IDX header") }
        let dimensions = (0..<rank).map { axis -> Int in
            let offset = 4 + 4 * axis
            return data[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        let expected = dimensions.reduce(1, *)
        let actual = data.count - headerSize
        guard actual == expected else {
            throw CohortError("\(path): IDX header promises \(dimensions.map(String.init).joined(separator: "×")) = \(expected) bytes but the file holds \(actual)\(actual < expected ? " (truncated)" : "")")
        }
        return IDXArray(dimensions: dimensions, bytes: Array(data[headerSize...]))
    }

    private static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        "0x" + bytes.map { String(format: "%02x", $0) }.joined()
    }
}

/// Reads a file, decompressing it if it is gzip (zlib's gzread passes plain files through).
func gunzip(path: String) throws -> [UInt8] {
    guard FileManager.default.fileExists(atPath: path) else { throw CohortError("\(path): no such file") }
    guard let file = gzopen(path, "rb") else { throw CohortError("\(path): cannot open") }
    defer { gzclose(file) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = gzread(file, &chunk, UInt32(chunk.count))
        if count < 0 { throw CohortError("\(path): corrupt gzip stream") }
        if count == 0 { break }
        result.append(contentsOf: chunk[0..<Int(count)])
    }
    // gzread stops quietly at a truncated stream; gzerror tells us.
    var code: Int32 = 0
    _ = gzerror(file, &code)
    if code != Z_OK && code != Z_STREAM_END { throw CohortError("\(path): truncated or corrupt gzip stream") }
    return result
}
