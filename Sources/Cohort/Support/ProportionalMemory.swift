import Foundation

/// Proportional set size (PSS): resident memory with every shared page divided among the
/// processes that map it, so that the PSS of a node's processes adds up to what the node holds.
/// Read from `/proc/self/smaps`; nil where there is no such file.
public enum ProportionalMemory {
    /// The whole process, bytes.
    public static func process() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").lazy.compactMap(kilobytes(inPssLine:)).first.map { $0 * 1024 }
    }

    /// The mappings that hold any byte of `regions`, each counted once, bytes. Large buffers
    /// are mappings of their own (shared windows, allocations past malloc's mmap threshold); a
    /// small one counts the whole heap mapping it lies in, so this is an upper bound for them.
    public static func mappings(holding regions: [UnsafeRawBufferPointer]) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/self/smaps", encoding: .utf8) else { return nil }
        let spans = regions.compactMap { region in region.baseAddress.map { UInt(bitPattern: $0)..<(UInt(bitPattern: $0) + UInt(region.count)) } }
            .filter { !$0.isEmpty }
        var total = 0.0
        var holding = false
        for line in text.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
               let start = UInt(line[..<dash], radix: 16), let end = UInt(line[line.index(after: dash)..<space], radix: 16) {
                holding = spans.contains { $0.overlaps(start..<end) }
            } else if holding, let kilobytes = kilobytes(inPssLine: line) {
                total += kilobytes * 1024
                holding = false
            }
        }
        return total
    }

    private static func kilobytes(inPssLine line: Substring) -> Double? {
        guard line.hasPrefix("Pss:") else { return nil }
        return Double(line.dropFirst(4).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
    }
}
