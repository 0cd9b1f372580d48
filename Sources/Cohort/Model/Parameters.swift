/// All trainable parameters of a model live in ONE Float32 allocation, and their gradients in
/// another of the same size and layout. Layers hold named views (an offset and a shape) into
/// them. So the gradient all-reduce is one call, the optimizer is one loop, and a checkpoint
/// writes each named view with its true shape.
public final class ParameterStore {
    public struct Entry: Equatable, Sendable {
        /// `layer/parameter`, e.g. `dense_1/weight`: the checkpoint's dataset path.
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Whether weight decay applies (weights yes; biases and normalization scales no).
        public let decays: Bool
    }

    public private(set) var entries: [Entry] = []
    public private(set) var values: UnsafeMutableBufferPointer<Float>
    public private(set) var gradients: UnsafeMutableBufferPointer<Float>
    /// Non-trainable state (batch-norm running statistics): its own flat buffer, never
    /// all-reduced as a gradient, broadcast from rank 0 each step as DDP does with buffers.
    public private(set) var bufferEntries: [Entry] = []
    public private(set) var buffers: UnsafeMutableBufferPointer<Float>
    private var bufferInitializers: [(Entry, Float)] = []
    private var sealed = false
    /// False once the gradients live in memory a communicator owns (`placeGradients(in:)`).
    private var ownsGradients = true
    /// False once the values live in memory a communicator owns (`placeValues(in:copying:)`).
    private var ownsValues = true

    public init() {
        values = .allocateZeroed(0)
        gradients = .allocateZeroed(0)
        buffers = .allocate(capacity: 0)
    }

    deinit {
        if ownsValues { values.freeZeroed() }
        if ownsGradients { gradients.freeZeroed() }
        buffers.deallocate()
    }

    public var count: Int { values.count }

    /// Reserves a parameter; the buffers are allocated by `seal()` once every layer has declared its own.
    func declare(_ name: String, shape: [Int], decays: Bool) -> Entry {
        precondition(!sealed, "parameters are declared before the store is sealed")
        let entry = Entry(name: name, shape: shape, offset: entries.last.map { $0.offset + $0.count } ?? 0, decays: decays)
        entries.append(entry)
        return entry
    }

    /// Reserves a non-trainable buffer filled with `initialValue`.
    func declareBuffer(_ name: String, shape: [Int], initialValue: Float) -> Entry {
        precondition(!sealed, "buffers are declared before the store is sealed")
        let entry = Entry(name: name, shape: shape, offset: bufferEntries.last.map { $0.offset + $0.count } ?? 0, decays: false)
        bufferEntries.append(entry)
        bufferInitializers.append((entry, initialValue))
        return entry
    }

    func seal() {
        let total = entries.last.map { $0.offset + $0.count } ?? 0
        values.freeZeroed()
        gradients.freeZeroed()
        values = .allocateZeroed(total)
        // Untouched until backward writes them: no memory when a node's one sum replaces them.
        gradients = .allocateZeroed(total)
        buffers.deallocate()
        buffers = .allocate(capacity: bufferEntries.last.map { $0.offset + $0.count } ?? 0)
        for (entry, value) in bufferInitializers {
            (buffers.baseAddress! + entry.offset).initialize(repeating: value, count: entry.count)
        }
        sealed = true
    }

    /// Moves the gradients into `storage` (same count), which the store uses but does not free:
    /// memory a communicator sums without copying (`NodeMemory.makeReductionBuffer`).
    public func placeGradients(in storage: UnsafeMutableBufferPointer<Float>) {
        precondition(sealed && storage.count == gradients.count, "gradients are placed in storage of their size after sealing")
        _ = storage.update(fromContentsOf: gradients)
        if ownsGradients { gradients.freeZeroed() }
        gradients = storage
        ownsGradients = false
    }

    /// Moves the values into `storage` (same count), which the store uses but does not free:
    /// memory the ranks of a node share (`NodeMemory.makeSharedState`). This rank copies only
    /// `slice`; the other ranks copy theirs, and their synchronization publishes the whole.
    public func placeValues(in storage: UnsafeMutableBufferPointer<Float>, copying slice: Range<Int>) {
        precondition(sealed && storage.count == values.count, "values are placed in storage of their size after sealing")
        (storage.baseAddress! + slice.lowerBound).update(from: values.baseAddress! + slice.lowerBound, count: slice.count)
        if ownsValues { values.freeZeroed() }
        values = storage
        ownsValues = false
    }

    public func buffer(of entry: Entry) -> UnsafeMutablePointer<Float> { buffers.baseAddress! + entry.offset }

    public func values(of entry: Entry) -> UnsafeMutablePointer<Float> { values.baseAddress! + entry.offset }
    public func gradients(of entry: Entry) -> UnsafeMutablePointer<Float> {
        gradientRoute?(entry.offset) ?? gradients.baseAddress! + entry.offset
    }

    /// Where backward writes the gradient at a flat offset instead of `gradients`: a rank's
    /// scratch while a node's ranks add into one gradient sum (`NodeGradientSum.route`).
    public var gradientRoute: ((Int) -> UnsafeMutablePointer<Float>)?

    /// Uses `storage` (same count) as the gradients from now on, without copying into it: memory
    /// the store does not own and that others write (a node's one gradient sum).
    public func useGradients(_ storage: UnsafeMutableBufferPointer<Float>) {
        precondition(sealed && storage.count == gradients.count, "gradients are placed in storage of their size after sealing")
        if ownsGradients { gradients.freeZeroed() }
        gradients = storage
        ownsGradients = false
    }

    public func zeroGradients() {
        gradients.update(repeating: 0)
    }

    public func entry(named name: String) -> Entry? { entries.first { $0.name == name } }
}
