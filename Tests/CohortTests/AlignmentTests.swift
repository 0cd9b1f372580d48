import XCTest
@testable import Cohort

/// Buffers the kernels read with 64-byte vector loads start on a cache line: from a 16-byte
/// aligned start (what `calloc` gives a large block) every such load spans two lines.
final class AlignmentTests: XCTestCase {
    func test_zeroedBuffersStartOnCacheLinesAndAreZero() {
        for count in [0, 1, 15, 16, 1000, 100_003, 1 << 20] {
            let buffer = UnsafeMutableBufferPointer<Float>.allocateZeroed(count)
            XCTAssertEqual(Int(bitPattern: buffer.baseAddress) % 64, 0, "\(count) floats")
            XCTAssertTrue(buffer.allSatisfy { $0 == 0 }, "\(count) floats")
            buffer.update(repeating: 1)  // every float is the caller's, up to the end
            buffer.freeZeroed()
        }
    }

    func test_layerWorkspacesAndParametersStartOnCacheLines() throws {
        let model = try Model(inputShape: [37], layers: [.dense(100, activation: .relu), .dense(10)], maxBatch: 7, seed: 1)
        XCTAssertEqual(Int(bitPattern: model.parameters.values.baseAddress) % 64, 0)
        XCTAssertEqual(Int(bitPattern: model.parameters.gradients.baseAddress) % 64, 0)
        for count in [1, 33, 1 << 18] {
            XCTAssertEqual(Int(bitPattern: Workspace(owned: count, budget: nil).pointer) % 64, 0, "\(count) floats")
        }
    }
}
