import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Proportional set size (PSS): resident memory with every shared page divided among the
/// processes that map it, so that the PSS of a node's processes adds up to what the node holds.
/// Read from `/proc/self/smaps`; nil where there is no such file.
public enum ProportionalMemory {
    /// The whole process, bytes.
    public static func process() -> Double? {
        guard let text = readWhole("/proc/self/smaps_rollup") else { return nil }
        return text.split(separator: "\n").lazy.compactMap(kilobytes(inPssLine:)).first.map { $0 * 1024 }
    }

    /// The memory holding `regions`, bytes. A region in a file mapping (the MPI shared-memory
    /// windows) counts that mapping's PSS, once however many regions it holds. A region in
    /// anonymous memory (private to the process, so its PSS is what is resident) counts its
    /// resident pages (`mincore`): the kernel merges neighbouring anonymous mappings, so their
    /// PSS would include whatever else lies there.
    public static func resident(holding regions: [UnsafeRawBufferPointer]) -> Double? {
        guard let text = readWhole("/proc/self/smaps") else { return nil }
        struct Mapping { let span: Range<UInt>; let file: Bool; var pss: Double }
        var mappings: [Mapping] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, let dash = first.firstIndex(of: "-"),
               let start = UInt(first[..<dash], radix: 16), let end = UInt(first[first.index(after: dash)...], radix: 16) {
                let path = fields.count > 5 ? fields[5] : ""
                mappings.append(Mapping(span: start..<end, file: path.hasPrefix("/"), pss: 0))
            } else if let kilobytes = kilobytes(inPssLine: line), !mappings.isEmpty {
                mappings[mappings.count - 1].pss = kilobytes * 1024
            }
        }
        let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
        var total = 0.0
        var counted = Set<Int>()
        for region in regions {
            guard let base = region.baseAddress, region.count > 0 else { continue }
            let span = UInt(bitPattern: base)..<(UInt(bitPattern: base) + UInt(region.count))
            if let index = mappings.firstIndex(where: { $0.file && $0.span.overlaps(span) }) {
                if counted.insert(index).inserted { total += mappings[index].pss }
                continue
            }
            let first = span.lowerBound / page * page
            let pages = Int((span.upperBound - first + page - 1) / page)
            var residency = [UInt8](repeating: 0, count: pages)
            guard mincore(UnsafeMutableRawPointer(bitPattern: first), Int(UInt(pages) * page), &residency) == 0 else { return nil }
            let resident: Int = residency.reduce(0) { count, byte in count + Int(byte & 1) }
            total += Double(resident) * Double(page)
        }
        return total
    }

    /// A /proc file read to its end (Foundation stops after the first page of /proc/self/smaps).
    static func readWhole(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { return count == 0 ? String(decoding: bytes, as: UTF8.self) : nil }
            bytes += chunk[0..<count]
        }
    }

    private static func kilobytes(inPssLine line: Substring) -> Double? {
        guard line.hasPrefix("Pss:") else { return nil }
        return Double(line.dropFirst(4).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
    }
}
