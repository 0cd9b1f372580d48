import Foundation

/// The backward buffers of a model's Transformer blocks, allocated once instead of once per
/// block. Backward runs the blocks one after another, and inside a block every buffer a
/// sublayer's backward writes is dead when the block's backward returns, except the block's
/// own input gradient, which the block before it reads as its output gradient. So the k-th
/// gradient buffer requested while a block is built is shared by the k-th of every block (of
/// the same size), and the blocks' input gradients alternate between two buffers. Forward
/// activations stay owned: backward reads them; except those a block computes again in its
/// backward (`Workspace(recomputed:)`), which are shared like gradients but apart from them.
/// With `recomputesBlocks` (activation checkpointing) every block runs its forward again at
/// the start of its backward, so all of its forward buffers are shared too; only each block's
/// output (the next block's input) stays its own.
final class BlockGradients {
    enum Use { case gradient, leavesBlock, recomputed, forward }
    let recomputesBlocks: Bool
    init(recomputesBlocks: Bool = false) { self.recomputesBlocks = recomputesBlocks }

    private struct Key: Hashable {
        let slot: Int
        let count: Int
    }
    private var buffers: [Key: SharedBuffer] = [:]
    private var building = false
    private var ordinal = 0
    private var recomputedOrdinal = 0
    private var forwardOrdinal = 0
    /// Transformer blocks built so far.
    private(set) var blocks = 0

    /// Builds one block: gradient workspaces requested in `body` are lent from the shared set.
    func block<T>(_ body: () throws -> T) rethrows -> T {
        (building, ordinal, recomputedOrdinal, forwardOrdinal) = (true, 0, 0, 0)
        defer { (building, blocks) = (false, blocks + 1) }
        return try body()
    }

    func lend(_ count: Int, _ use: Use, budget: MemoryBudget?) -> SharedBuffer? {
        guard building, count > 0, use != .forward || recomputesBlocks else { return nil }
        let slot: Int
        switch use {
        case .forward:
            slot = -1_000_000 - forwardOrdinal
            forwardOrdinal += 1
        case .leavesBlock:
            slot = -1 - blocks % 2
        case .gradient:
            slot = ordinal
            ordinal += 1
        case .recomputed:
            slot = -3 - recomputedOrdinal
            recomputedOrdinal += 1
        }
        if let buffer = buffers[Key(slot: slot, count: count)] { return buffer }
        let buffer = SharedBuffer(count, budget: budget)
        buffers[Key(slot: slot, count: count)] = buffer
        return buffer
    }
}
