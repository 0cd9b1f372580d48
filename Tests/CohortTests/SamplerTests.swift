import XCTest
@testable import Cohort

final class SamplerTests: XCTestCase {
    private func samplers(rows: Int, ranks: Int, batch: Int, drop: Bool = false) -> [GlobalSampler] {
        (0..<ranks).map { GlobalSampler(rows: rows, worldSize: ranks, rank: $0, batchPerRank: batch, seed: 17, dropRemainder: drop) }
    }

    func test_everyRowIsUsedExactlyOncePerEpochAcrossRanks() {
        for ranks in [1, 2, 3] {
            let all = samplers(rows: 103, ranks: ranks, batch: 5)
            let order = all[0].order(epoch: 4)
            var seen: [Int] = []
            for step in 0..<all[0].stepsPerEpoch {
                for sampler in all { seen += sampler.batch(step: step, order: order).mine }
            }
            XCTAssertEqual(seen.sorted(), Array(0..<103), "\(ranks) ranks")
            XCTAssertEqual(Set(all.map(\.stepsPerEpoch)).count, 1, "every rank takes the same number of steps")
        }
    }

    func test_dropRemainderSkipsTheLastPartialBatch() {
        let all = samplers(rows: 103, ranks: 2, batch: 5, drop: true)
        XCTAssertEqual(all[0].stepsPerEpoch, 10)
        let order = all[0].order(epoch: 0)
        let used = (0..<10).flatMap { step in all.flatMap { $0.batch(step: step, order: order).mine } }
        XCTAssertEqual(Set(used).count, 100)
    }

    func test_orderIsAFunctionOfSeedAndEpoch() {
        let sampler = samplers(rows: 50, ranks: 1, batch: 5)[0]
        XCTAssertEqual(sampler.order(epoch: 2), sampler.order(epoch: 2))
        XCTAssertNotEqual(sampler.order(epoch: 2), sampler.order(epoch: 3))
        XCTAssertEqual(sampler.order(epoch: 2).sorted(), Array(0..<50))
    }

    func test_twoRanksWithBatchBSeeWhatOneRankWithBatch2BSees() {
        let two = samplers(rows: 37, ranks: 2, batch: 4)
        let one = samplers(rows: 37, ranks: 1, batch: 8)[0]
        XCTAssertEqual(one.stepsPerEpoch, two[0].stepsPerEpoch)
        let order = one.order(epoch: 1)
        for step in 0..<one.stepsPerEpoch {
            let single = one.batch(step: step, order: order)
            let split = two.map { $0.batch(step: step, order: order) }
            XCTAssertEqual(Array(single.mine), Array(split[0].mine) + Array(split[1].mine))
            XCTAssertEqual(split[0].globalCount, single.globalCount)
        }
    }

    func test_generatorStateRoundTrips() {
        var generator = Generator(seed: 1, streams: 2, 3)
        _ = generator.next()
        var copy = Generator(state: generator.stateWords)
        XCTAssertEqual(generator.next(), copy.next())
    }
}
