import Foundation

/// Hands the training loop one batch per step: this rank's rows, decoded into the model's
/// layout, augmented. With `prefetch`, a background thread prepares the next batch while the
/// current one is computed (two slots, so the thread is always one batch ahead); an error on
/// that thread (a read failure, a NaN) is rethrown by `next()` with its file and row.
/// HDF5 reads go through one lock (HDF5.swift), so the main thread can evaluate meanwhile.
public final class BatchLoader: @unchecked Sendable {
    public enum Plan {
        case global(GlobalSampler)
        case sharded(ShardedSampler)

        /// The sampling `data` asks for over the first `rows` rows of `file`, for `rank` of
        /// `ranks` taking `batchPerRank` rows a step; refuses a sharding that cannot deal a
        /// block to every rank.
        public init(_ data: DataConfig, file: any SampleSource, rows: Int, ranks: Int, rank: Int, batchPerRank: Int, seed: UInt64) throws {
            switch data.sampling {
            case .global:
                self = .global(GlobalSampler(rows: rows, worldSize: ranks, rank: rank, batchPerRank: batchPerRank, seed: seed,
                                             dropRemainder: data.dropRemainder))
            case .sharded:
                let blockRows = data.blockRows ?? file.chunkRows ?? 1024
                let sharded = ShardedSampler(rows: rows, worldSize: ranks, rank: rank, batchPerRank: batchPerRank, blockRows: blockRows,
                                             bufferRows: data.shuffleBuffer, seed: seed, dropRemainder: data.dropRemainder)
                guard sharded.blockCount >= ranks else {
                    throw CohortError("\(file.path): \(sharded.blockCount) blocks of \(blockRows) rows cannot be dealt to \(ranks) ranks; lower data.block_rows")
                }
                self = .sharded(sharded)
            }
        }
    }

    public struct Batch {
        public let slot: Int
        public let x: UnsafeMutablePointer<Float>
        public let y: UnsafeMutablePointer<Int32>
        /// Float targets [count × targetWidth] of a regression file, else nil.
        public let t: UnsafeMutablePointer<Float>?
        public let count: Int
        public let globalCount: Int
        /// Why this rank's rows could not be read (a damaged chunk, an I/O error): the batch then
        /// holds zeros, so that the step's collectives still run and every rank learns of the
        /// failure in the step's agreement, which ends the job with one line.
        public var failure: String? = nil
    }

    public let data: any SampleSource
    public let plan: Plan
    public let augmenter: Augmenter?
    public let prefetch: Bool
    /// Seconds the training loop has spent waiting in `next()` (the loader's cost to compute).
    public private(set) var waitSeconds = 0.0
    /// The most rows the sharded shuffle buffer has held, and the bytes it allocates.
    public private(set) var peakBufferRows = 0
    public var bufferBytes: Int { bufferData.map { _ in bufferCapacity * data.sampleSize * 4 } ?? 0 }
    /// When set (diagnostics and tests), every training row read from the file is appended.
    public var readLog: [Int]? {
        get { data.readLog }
        set { data.readLog = newValue }
    }

    private let batchSize: Int
    private var slots: [(x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Int32>, t: UnsafeMutablePointer<Float>?)] = []
    private var bufferData: UnsafeMutablePointer<Float>?
    /// The integer targets of the rows in the shuffle buffer (targetsPerRow each), moved with them.
    private var bufferTargets: UnsafeMutablePointer<Int32>?
    private var bufferCapacity = 0

    // Producer/consumer state for one epoch.
    private var producer: Thread?
    private let lock = NSLock()
    // Semaphores start at 0 and are signalled up: libdispatch traps when a semaphore is released
    // with a value below the one it was created with, which a stopped epoch can leave behind.
    private var freeSlots = BatchLoader.slotSemaphore()
    private var filled = DispatchSemaphore(value: 0)

    private static func slotSemaphore() -> DispatchSemaphore {
        let semaphore = DispatchSemaphore(value: 0)
        semaphore.signal()
        semaphore.signal()
        return semaphore
    }
    private var ready: [Batch] = []
    private var failure: Error?
    private var cancelled = false
    private var synchronousSteps: AnyIterator<Result<Batch, Error>>?

    public init(data: any SampleSource, plan: Plan, batchSize: Int, augmenter: Augmenter?, prefetch: Bool) {
        self.data = data
        self.plan = plan
        self.batchSize = batchSize
        self.augmenter = augmenter
        self.prefetch = prefetch
        for _ in 0..<2 {
            slots.append((.allocate(capacity: batchSize * data.sampleSize), .allocate(capacity: batchSize * data.targetsPerRow),
                          data.isRegression ? .allocate(capacity: batchSize * data.targetWidth) : nil))
        }
        if case .sharded(let sampler) = plan {
            bufferCapacity = sampler.bufferRows
            bufferData = .allocate(capacity: bufferCapacity * data.sampleSize)
            bufferTargets = .allocate(capacity: bufferCapacity * data.targetsPerRow)
        }
    }

    deinit {
        endEpoch()
        for slot in slots {
            slot.x.deallocate()
            slot.y.deallocate()
            slot.t?.deallocate()
        }
        bufferData?.deallocate()
        bufferTargets?.deallocate()
    }

    /// Steps of `epoch` (memoized: in sharded mode it takes the epoch's block permutation).
    public func stepsPerEpoch(_ epoch: Int) -> Int {
        switch plan {
        case .global(let sampler):
            return sampler.stepsPerEpoch
        case .sharded(let sampler):
            stepsLock.lock()
            defer { stepsLock.unlock() }
            if let steps = stepsByEpoch[epoch] { return steps }
            let steps = sampler.stepsPerEpoch(epoch: epoch)
            stepsByEpoch[epoch] = steps
            return steps
        }
    }
    private var stepsByEpoch: [Int: Int] = [:]
    private let stepsLock = NSLock()

    /// Starts producing the batches of `epoch` from step `step` (0, or the step a resumed run stopped at).
    public func beginEpoch(_ epoch: Int, from step: Int) {
        endEpoch()
        cancelled = false
        failure = nil
        ready = []
        freeSlots = BatchLoader.slotSemaphore()
        filled = DispatchSemaphore(value: 0)
        let work = makeProducer(epoch: epoch, from: step)
        if prefetch {
            // The thread owns `work` from here on; the slots it fills are handed over by the semaphores.
            let box = UncheckedSendable(work)
            let thread = Thread { [unowned self] in self.produce(box.value) }
            thread.name = "cohort-prefetch"
            producer = thread
            thread.start()
        } else {
            synchronousSteps = AnyIterator {
                guard let slot = work.next() else { return nil }
                return slot
            }
        }
    }

    /// The next batch, waiting for the prefetch thread if it is behind. Call `release` once the
    /// step no longer reads the batch (after backward). Rows that could not be read throw, or
    /// with `keepingFailures` come as a batch of zeros whose `failure` says why (the trainer's
    /// step carries it into the ranks' agreement).
    public func next(keepingFailures: Bool = false) throws -> Batch {
        let batch = try nextBatch()
        if !keepingFailures, let failure = batch.failure {
            release(batch)
            throw CohortError(failure)
        }
        return batch
    }

    private func nextBatch() throws -> Batch {
        let started = DispatchTime.now().uptimeNanoseconds
        defer { waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
        if !prefetch {
            guard let result = synchronousSteps?.next() else { throw CohortError("\(data.path): no batch left in this epoch") }
            return try result.get()
        }
        filled.wait()
        lock.lock()
        defer { lock.unlock() }
        if let failure { throw failure }
        guard !ready.isEmpty else { throw CohortError("\(data.path): no batch left in this epoch") }
        return ready.removeFirst()
    }

    public func release(_ batch: Batch) {
        if prefetch { freeSlots.signal() }
    }

    /// Stops the prefetch thread (at the end of an epoch, or when the run stops early).
    public func endEpoch() {
        guard let thread = producer else { return }
        lock.lock()
        cancelled = true
        lock.unlock()
        freeSlots.signal()
        freeSlots.signal()
        while !thread.isFinished { usleep(100) }
        producer = nil
    }

    private func produce(_ work: AnyIterator<Result<Batch, Error>>) {
        while true {
            freeSlots.wait()
            lock.lock()
            let stop = cancelled
            lock.unlock()
            if stop { return }
            guard let result = work.next() else {
                filled.signal()
                return
            }
            lock.lock()
            switch result {
            case .success(let batch): ready.append(batch)
            case .failure(let error): failure = error
            }
            lock.unlock()
            filled.signal()
            if case .failure = result { return }
        }
    }

    /// A batch of zeros standing for rows that could not be read, carrying why.
    private func failed(slot: Int, count: Int, globalCount: Int, _ error: Error) -> Batch {
        let (x, y, t) = slots[slot]
        x.update(repeating: 0, count: count * data.sampleSize)
        y.update(repeating: 0, count: count * data.targetsPerRow)
        t?.update(repeating: 0, count: count * data.targetWidth)
        return Batch(slot: slot, x: x, y: y, t: t, count: count, globalCount: globalCount,
                     failure: (error as? CohortError)?.message ?? "\(error)")
    }

    /// The batches of one epoch, in order, alternating between the two slots.
    private func makeProducer(epoch: Int, from firstStep: Int) -> AnyIterator<Result<Batch, Error>> {
        let steps = stepsPerEpoch(epoch)
        var step = firstStep
        switch plan {
        case .global(let sampler):
            let order = sampler.order(epoch: epoch)
            return AnyIterator { [unowned self] in
                guard step < steps else { return nil }
                defer { step += 1 }
                let slotIndex = step % 2
                let (rows, globalCount) = sampler.batch(step: step, order: order)
                do {
                    try data.load(rows: rows, epoch: epoch, x: slots[slotIndex].x, y: slots[slotIndex].y)
                    if let t = slots[slotIndex].t { data.copyTargets(rows: rows, to: t) }
                    augmenter?.apply(slots[slotIndex].x, batch: rows.count, epoch: epoch, step: step)
                    return .success(Batch(slot: slotIndex, x: slots[slotIndex].x, y: slots[slotIndex].y, t: slots[slotIndex].t,
                                          count: rows.count, globalCount: globalCount))
                } catch {
                    return .success(failed(slot: slotIndex, count: rows.count, globalCount: globalCount, error))
                }
            }
        case .sharded(let sampler):
            let shares = sampler.shares(forEpoch: epoch)
            let share = shares[sampler.rank]
            var stream = sampler.stream(epoch: epoch)
            var prepared = false
            return AnyIterator { [unowned self] in
                guard step < steps else { return nil }
                defer { step += 1 }
                let slotIndex = step % 2
                let count = min(sampler.batchPerRank, max(share - step * sampler.batchPerRank, 0))
                do {
                    if !prepared {
                        try self.replay(&stream, steps: firstStep, share: share, sampler: sampler, epoch: epoch)
                        prepared = true
                    }
                    let (size, targets) = (data.sampleSize, data.targetsPerRow)
                    for position in 0..<count {
                        try self.refill(&stream, epoch: epoch)
                        guard let (slot, row) = stream.draw() else { throw CohortError("\(data.path): shuffle buffer ran dry") }
                        (slots[slotIndex].x + position * size).update(from: bufferData! + slot * size, count: size)
                        (slots[slotIndex].y + position * targets).update(from: bufferTargets! + slot * targets, count: targets)
                        // Mirror the draw's move of the last row into the freed slot.
                        let last = stream.buffer.count
                        if slot != last {
                            (bufferData! + slot * size).update(from: bufferData! + last * size, count: size)
                            (bufferTargets! + slot * targets).update(from: bufferTargets! + last * targets, count: targets)
                        }
                        if let t = slots[slotIndex].t { data.copyTargets(rows: [row][...], to: t + position * data.targetWidth) }
                    }
                    augmenter?.apply(slots[slotIndex].x, batch: count, epoch: epoch, step: step)
                    return .success(Batch(slot: slotIndex, x: slots[slotIndex].x, y: slots[slotIndex].y, t: slots[slotIndex].t, count: count,
                                          globalCount: sampler.globalCount(epoch: epoch, step: step, shares: shares)))
                } catch {
                    return .success(failed(slot: slotIndex, count: count,
                                           globalCount: sampler.globalCount(epoch: epoch, step: step, shares: shares), error))
                }
            }
        }
    }

    /// Reads every block the buffer has room for into the slots after its current rows.
    private func refill(_ stream: inout ShardedSampler.EpochStream, epoch: Int) throws {
        while true {
            let before = stream.buffer.count
            guard let range = stream.blockToRead() else { return }
            try data.load(rows: Array(range)[...], epoch: epoch, x: bufferData! + before * data.sampleSize,
                          y: bufferTargets! + before * data.targetsPerRow)
            peakBufferRows = max(peakBufferRows, stream.buffer.count)
        }
    }

    /// Resuming mid-epoch: replay the draws of the steps already taken on row ids alone, then
    /// read the rows the buffer holds at that point.
    private func replay(_ stream: inout ShardedSampler.EpochStream, steps: Int, share: Int, sampler: ShardedSampler, epoch: Int) throws {
        guard steps > 0 else { return }
        let draws = min(share, steps * sampler.batchPerRank)
        for _ in 0..<draws {
            while stream.blockToRead() != nil {}
            _ = stream.draw()
        }
        let ids = stream.buffer
        let order = ids.enumerated().sorted { $0.element < $1.element }
        let staging = UnsafeMutablePointer<Float>.allocate(capacity: max(ids.count, 1) * data.sampleSize)
        defer { staging.deallocate() }
        let targets = data.targetsPerRow
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: max(ids.count, 1) * targets)
        defer { labels.deallocate() }
        try data.load(rows: order.map(\.element)[...], epoch: epoch, x: staging, y: labels)
        for (index, item) in order.enumerated() {
            (bufferData! + item.offset * data.sampleSize).update(from: staging + index * data.sampleSize, count: data.sampleSize)
            (bufferTargets! + item.offset * targets).update(from: labels + index * targets, count: targets)
        }
        peakBufferRows = max(peakBufferRows, ids.count)
    }
}

/// Hands a value to another thread when the code around it guarantees exclusive use.
final class UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
