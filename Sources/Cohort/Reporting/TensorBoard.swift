import Foundation

/// Writes TensorBoard event files (`events.out.tfevents.<time>.<host>`): the TFRecord framing
/// (u64 length, masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes) around
/// `Event` protocol buffers, encoded here by hand: wall_time (1, double), step (2, int64),
/// file_version (3, string) on the first record, summary (5) holding values (1) of
/// tag (1, string) and simple_value (2, float). TensorBoard's scalar dashboard reads these.
public final class EventWriter {
    public let path: String
    private let handle: FileHandle

    public init(directory: String) throws {
        try makeDirectories(directory, for: "TensorBoard events")
        let name = "events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(ProcessInfo.processInfo.hostName)"
        path = "\(directory)/\(name)"
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw CohortError("\(path): cannot create the TensorBoard event file")
        }
        self.handle = handle
        var event = Protobuf()
        event.double(1, Date().timeIntervalSince1970)
        event.string(3, "brain.Event:2")
        write(record: event.bytes)
    }

    deinit { try? handle.close() }

    /// One scalar at a step (TensorBoard's x axis).
    public func scalar(_ tag: String, _ value: Double, step: Int) {
        var summaryValue = Protobuf()
        summaryValue.string(1, tag)
        summaryValue.float(2, Float(value))
        var summary = Protobuf()
        summary.message(1, summaryValue)
        var event = Protobuf()
        event.double(1, Date().timeIntervalSince1970)
        event.int(2, Int64(step))
        event.message(5, summary)
        write(record: event.bytes)
    }

    public func flush() { try? handle.synchronize() }

    private func write(record: [UInt8]) {
        var length = UInt64(record.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { Array($0) }
        var framed = lengthBytes
        framed += littleEndianBytes(maskedCRC32C(lengthBytes))
        framed += record
        framed += littleEndianBytes(maskedCRC32C(record))
        handle.write(Data(framed))
    }
}


/// TFRecord's mask: rotate right by 15 and add a constant, so CRCs of CRCs stay well spread.
public func maskedCRC32C(_ bytes: [UInt8]) -> UInt32 {
    let crc = crc32c(bytes)
    return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
public func crc32c(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc = crc32cTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
    }
    return crc ^ 0xFFFF_FFFF
}

private let crc32cTable: [UInt32] = (0..<256).map { index in
    var value = UInt32(index)
    for _ in 0..<8 { value = value & 1 != 0 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
    return value
}

