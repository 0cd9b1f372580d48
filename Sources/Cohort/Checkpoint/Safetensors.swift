import Foundation

/// Reading Hugging Face's safetensors files (the writer is `SafetensorsExport.encode`): an
/// 8-byte little-endian header length, a JSON header `{"name": {"dtype", "shape",
/// "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the tensors' bytes. Every
/// tensor is checked against the file before a byte of it is read: its dtype (F32, F16 and BF16
/// become float32; I64 and I32, such as BERT's `position_ids`, too, exact below 2²⁴), its
/// offsets inside the data and its byte count against its shape.
public enum SafetensorsFile {
    public struct Tensor {
        public var shape: [Int]
        public var values: [Float]
    }

    /// The tensors and metadata of the file at `path`; refusals name the file and the tensor.
    public static func read(_ path: String) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw CohortError("\(path): cannot read: \(error.localizedDescription)")
        }
        guard bytes.count >= 8 else { throw CohortError("\(path): not a safetensors file (\(bytes.count) bytes)") }
        let headerLength = bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(bytes.count - 8), headerLength <= 100_000_000 else {
            throw CohortError("\(path): not a safetensors file (a header of \(headerLength) bytes in a file of \(bytes.count))")
        }
        let dataStart = 8 + Int(headerLength)
        guard let header = try? JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<dataStart)) as? [String: Any] else {
            throw CohortError("\(path): its safetensors header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var tensors: [String: Tensor] = [:]
        var entries: [(name: String, dtype: String, shape: [Int], count: Int, start: Int)] = []
        for (name, value) in header.sorted(by: { $0.key < $1.key }) {
            if name == "__metadata__" {
                metadata = (value as? [String: Any])?.compactMapValues { $0 as? String } ?? [:]
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw CohortError("\(path): tensor '\(name)' has no dtype, shape and data_offsets")
            }
            let width: Int
            switch dtype {
            case "F32", "I32": width = 4
            case "F16", "BF16": width = 2
            case "I64": width = 8
            default: throw CohortError("\(path): tensor '\(name)' is \(dtype); Cohort reads F32, F16, BF16, I64 and I32")
            }
            guard shape.allSatisfy({ $0 >= 0 }), case let (count, overflow) = shape.reduce((1, false), { partial, size in
                let (product, over) = partial.0.multipliedReportingOverflow(by: size)
                return (product, partial.1 || over)
            }), !overflow, offsets[0] >= 0, offsets[0] <= offsets[1],
                  offsets[1] <= bytes.count - dataStart, offsets[1] - offsets[0] == count * width else {
                throw CohortError("\(path): tensor '\(name)' (\(dtype) \(shape)) does not fit its data_offsets \(offsets) in \(bytes.count - dataStart) bytes of data")
            }
            entries.append((name, dtype, shape, count, dataStart + offsets[0]))
        }
        // Checked before any tensor is allocated: float32 copies of them all.
        let needed = entries.reduce(0) { $0 + $1.count * 4 }
        guard needed <= MemoryBudget.processLimit() else {
            throw CohortError("\(path): its tensors take \(MemoryBudget.describe(needed)) as float32, more than this process may allocate (\(MemoryBudget.describe(MemoryBudget.processLimit())))")
        }
        for (name, dtype, shape, count, start) in entries {
            var values = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { raw in
                let base = raw.baseAddress! + start
                for index in 0..<count {
                    switch dtype {
                    case "F32":
                        values[index] = Float(bitPattern: base.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self).littleEndian)
                    case "I64":
                        values[index] = Float(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * index, as: Int64.self)))
                    case "I32":
                        values[index] = Float(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * index, as: Int32.self)))
                    case "BF16":
                        let half = base.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self).littleEndian
                        values[index] = Float(bitPattern: UInt32(half) << 16)
                    default:
                        let half = base.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self).littleEndian
                        values[index] = Float(Float16(bitPattern: half))
                    }
                }
            }
            tensors[name] = Tensor(shape: shape, values: values)
        }
        return (tensors, metadata)
    }
}
