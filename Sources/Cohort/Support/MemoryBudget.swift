import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What this process may allocate: the smaller of the machine's memory and the address-space
/// limit (`ulimit -v`), less room for the code, MPI and the data. Requests are counted, not
/// allocated; `exceeded` says whether they went past the limit.
final class MemoryBudget {
    let limit: Int
    /// Layer buffers, and parameters with their gradients and optimizer state.
    private(set) var layerBytes = 0
    private(set) var stateBytes = 0
    var reserved: Int { layerBytes + stateBytes }

    init(limit: Int = MemoryBudget.processLimit()) { self.limit = limit }

    var exceeded: Bool { reserved > limit }

    /// Counts `bytes`; false (and nothing to allocate) when they do not fit what is left.
    func reserve(bytes: Int, state: Bool = false) -> Bool {
        if state { stateBytes += bytes } else { layerBytes += bytes }
        return reserved <= limit
    }

    /// 80 % of min(physical memory, RLIMIT_AS).
    static func processLimit() -> Int {
        var limit = Double(ProcessInfo.processInfo.physicalMemory)
        var address = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &address) == 0, address.rlim_cur != rlim_t.max {
            limit = min(limit, Double(address.rlim_cur))
        }
        return Int(limit * 0.8)
    }

    static func describe(_ bytes: Int) -> String { String(format: "%.2f GB", Double(bytes) / 1e9) }
}

extension UnsafeMutableBufferPointer where Element == Float {
    /// `count` zeros from `calloc`: large blocks come from fresh mappings whose pages the kernel
    /// supplies on first write, so a buffer that is replaced before it is written (a rank's own
    /// optimizer state or gradients, moved into memory its node shares) never becomes resident.
    /// The start is moved on to a 64-byte boundary (a cache line, and one AVX-512 vector): a
    /// large block from `calloc` starts 16 bytes past a page boundary, so every 64-byte vector
    /// load from it spans two cache lines, which cost the LSTM's step kernels 10–25 % of their
    /// time. The block's own start is kept in the 8 bytes before the buffer. Release with `freeZeroed()`.
    static func allocateZeroed(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        let line = 64
        guard let block = calloc(Swift.max(count, 1) + line / MemoryLayout<Float>.stride, MemoryLayout<Float>.stride) else {
            preconditionFailure("out of memory for \(count) floats (the memory budget admitted them)")
        }
        // calloc's blocks are 16-byte aligned, so the buffer starts 16 to 64 bytes into the block.
        let start = block.advanced(by: line - Int(bitPattern: UInt(bitPattern: block) % UInt(line)))
        start.storeBytes(of: block, toByteOffset: -MemoryLayout<UnsafeMutableRawPointer>.stride, as: UnsafeMutableRawPointer.self)
        return UnsafeMutableBufferPointer(start: start.assumingMemoryBound(to: Float.self), count: count)
    }

    func freeZeroed() {
        guard let baseAddress else { return }
        free(UnsafeRawPointer(baseAddress).load(fromByteOffset: -MemoryLayout<UnsafeMutableRawPointer>.stride, as: UnsafeMutableRawPointer.self))
    }
}
