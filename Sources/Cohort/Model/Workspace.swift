import Foundation

/// A fixed-size Float buffer for activations and workspaces: owned, or a view of a buffer the
/// model's `BlockGradients` lends when it holds a gradient only while its Transformer block
/// runs backward. Layers ask their `LayerBuilder` for them (it counts them against the
/// process's memory); `Workspace(owned:)` makes one outside a build (a generation cache).
public final class Workspace {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// The shared buffer this workspace is a view of; nil when the workspace owns `pointer`.
    private let lender: SharedBuffer?

    /// A buffer of its own.
    public convenience init(owned count: Int) { self.init(owned: count, budget: nil) }

    /// A buffer of its own, counted against `budget` when there is one.
    init(owned count: Int, budget: MemoryBudget?) {
        (pointer, self.count) = Workspace.allocate(count, budget: budget)
        lender = nil
    }

    init(viewing shared: SharedBuffer) {
        (pointer, count, lender) = (shared.pointer, shared.count, shared)
    }

    deinit { if lender == nil { UnsafeMutableBufferPointer(start: pointer, count: count).freeZeroed() } }

    /// Zeroed memory for `count` floats, counted against the budget (one float when it does not
    /// fit); from `calloc`, so its pages cost nothing until the first step writes them, and
    /// aligned to 64 bytes (`allocateZeroed`).
    static func allocate(_ count: Int, budget: MemoryBudget?) -> (pointer: UnsafeMutablePointer<Float>, count: Int) {
        let fits = budget?.reserve(bytes: max(count, 1) * MemoryLayout<Float>.size) ?? true
        let count = fits ? count : 1
        let buffer = UnsafeMutableBufferPointer<Float>.allocateZeroed(count)
        return (buffer.baseAddress!, count)
    }
}

/// A buffer that several workspaces view; freed with the last of them.
final class SharedBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int, budget: MemoryBudget?) { (pointer, self.count) = Workspace.allocate(count, budget: budget) }
    deinit { UnsafeMutableBufferPointer(start: pointer, count: count).freeZeroed() }
}

