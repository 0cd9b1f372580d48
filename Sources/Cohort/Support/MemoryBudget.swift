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
