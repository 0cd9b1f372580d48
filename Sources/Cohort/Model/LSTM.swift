import CCohort
#if canImport(Glibc)
import Glibc
#endif

/// `lstm`: stacked long short-term memory layers (`torch.nn.LSTM(in, hidden, num_layers, batch_first=True)`).
///
/// YAML: `{type: lstm, hidden: H, layers: 1, return_sequences: true, dropout: 0}`. Input [T, in];
/// output [T, H] (every step) or [H] (the last step, `return_sequences: false`). Every window
/// starts from zero state. Parameters per layer k, under PyTorch's names and layouts so that a
/// checkpoint loads into `torch.nn.LSTM` as it is: `weight_ih_lk` [4H, in], `weight_hh_lk` [4H, H],
/// `bias_ih_lk` [4H], `bias_hh_lk` [4H], gates in PyTorch's order i, f, g, o; all drawn from
/// U(−1/√H, 1/√H) as PyTorch does; the weights are decayed, the biases not. `dropout` acts
/// between layers (not after the last), as PyTorch's.
public struct LSTMOptions: LayerOptions {
    public static let type = "lstm"
    public var hidden: Int
    public var layers: Int
    public var returnSequences: Bool
    public var dropout: Float

    public init(hidden: Int, layers: Int = 1, returnSequences: Bool = true, dropout: Float = 0) {
        (self.hidden, self.layers, self.returnSequences, self.dropout) = (hidden, layers, returnSequences, dropout)
    }
    public init(config: ConfigMap) throws {
        guard config.has("hidden") else { throw CohortError("\(config.file): \(config.path): lstm needs hidden") }
        hidden = try config.int("hidden", default: 1, range: 1...65_536)
        layers = try config.int("layers", default: 1, range: 1...64)
        returnSequences = try config.bool("return_sequences", default: true)
        dropout = Float(try config.double("dropout", default: 0, range: 0...0.999))
    }
    public var yaml: [String: String] {
        ["hidden": "\(hidden)", "layers": "\(layers)", "return_sequences": "\(returnSequences)", "dropout": "\(dropout)"]
    }
    public func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer {
        guard inputShape.count == 2 else {
            throw CohortError("\(name): an LSTM reads a sequence of vectors [T, C]; its input here has shape \(inputShape)")
        }
        return LSTM(name: name, inputShape: inputShape, options: self, builder: builder)
    }
    public static var specimen: LayerSpecimen {
        LayerSpecimen(layers: [.family(LSTMOptions(hidden: 3, layers: 2)), .family(LSTMOptions(hidden: 2, returnSequences: false))],
                      inputShape: [4, 2])
    }
}

/// The stack: layer k reads layer k − 1's every step; dropout between them.
public final class LSTM: Layer, IncrementalLayer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    let cells: [LSTMLayer]
    let dropouts: [Dropout]
    private let last: Workspace
    private let lastGradient: Workspace
    /// What each cell read in the last forward (the input, or the dropout before it).
    private var cellInputs: [UnsafePointer<Float>] = []

    public var sublayers: [Layer] {
        var layers: [Layer] = []
        for (index, cell) in cells.enumerated() {
            layers.append(cell)
            if index < dropouts.count { layers.append(dropouts[index]) }
        }
        return layers
    }

    init(name: String, inputShape: [Int], options: LSTMOptions, builder: LayerBuilder) {
        self.name = name
        self.inputShape = inputShape
        let length = inputShape[0]
        var cells: [LSTMLayer] = []
        var dropouts: [Dropout] = []
        var width = inputShape[1]
        for k in 0..<options.layers {
            cells.append(LSTMLayer(name: name, index: k, length: length, input: width, hidden: options.hidden, builder: builder))
            width = options.hidden
            if options.dropout > 0, k < options.layers - 1 {
                dropouts.append(Dropout(name: "\(name)/dropout_l\(k)", inputShape: [length, width], rate: options.dropout,
                                        generator: builder.dropoutGenerator(), builder: builder))
            }
        }
        self.cells = cells
        self.dropouts = dropouts
        outputShape = options.returnSequences ? [length, options.hidden] : [options.hidden]
        last = builder.workspace(options.returnSequences ? 1 : builder.maxBatch * options.hidden)
        lastGradient = builder.workspace(options.returnSequences ? 1 : builder.maxBatch * length * options.hidden)
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        var x = input
        cellInputs = []
        for (k, cell) in cells.enumerated() {
            cellInputs.append(x)
            x = cell.timedForward(x, batch: batch, training: training)
            if k < dropouts.count { x = dropouts[k].timedForward(x, batch: batch, training: training) }
        }
        guard outputShape.count == 1 else { return x }
        let (length, hidden) = (inputShape[0], outputShape[0])
        for b in 0..<batch { (last.pointer + b * hidden).update(from: x + (b * length + length - 1) * hidden, count: hidden) }
        return UnsafePointer(last.pointer)
    }

    public func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        var gradient = outputGradient
        if outputShape.count == 1 {
            // Only the last step reaches the output: the other steps' output gradients are zero.
            let (length, hidden) = (inputShape[0], outputShape[0])
            lastGradient.pointer.update(repeating: 0, count: batch * length * hidden)
            for b in 0..<batch {
                (lastGradient.pointer + (b * length + length - 1) * hidden).update(from: outputGradient + b * hidden, count: hidden)
            }
            gradient = UnsafePointer(lastGradient.pointer)
        }
        for k in cells.indices.reversed() {
            if k < dropouts.count { gradient = dropouts[k].timedBackward(cells[k].output, outputGradient: gradient, batch: batch) }
            gradient = cells[k].timedBackward(cellInputs[k], outputGradient: gradient, batch: batch)
        }
        return gradient
    }

    // Generation: one step at a time, the state carried from call to call.
    public func startSequence(capacity: Int) { for cell in cells { cell.carriesState = true; cell.resetState() } }
    public func move(to position: Int) { if position == 0 { for cell in cells { cell.resetState() } } }
}

/// One LSTM layer over [B, T, in] → h [B, T, H]:
///   gates_t = x_t·W_ihᵀ + b_ih + h_{t−1}·W_hhᵀ + b_hh  (the x part for all steps in one SGEMM)
///   i, f, o = σ(·), g = tanh(·);  c_t = f ⊙ c_{t−1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
/// Backward runs the steps in reverse carrying dh and dc; the weight gradients are then one
/// SGEMM each over all steps. The recurrence itself is not BLAS: W_hh is packed once per pass
/// and each step is one region on the threads, a part computing its units' share of the
/// product and then their cells (`cohort_lstm_forward_step`, `cohort_lstm_backward_step`). Each
/// element is one dot product in k order, so rows, parts and thread counts do not change a bit.
final class LSTMLayer: Layer {
    var threading: LayerThreading { .products }
    let name: String
    let inputShape: [Int]
    let outputShape: [Int]
    let length: Int
    let inputWidth: Int
    let hidden: Int
    let parameters: ParameterStore
    let weightInput: ParameterStore.Entry
    let weightHidden: ParameterStore.Entry
    let biasInput: ParameterStore.Entry
    let biasHidden: ParameterStore.Entry
    /// Gate activations i, f, g, o per step [B, T, 4H]; cell states [B, T, H]; h = the output.
    private let gates: Workspace
    private let cells: Workspace
    private let hiddenStates: Workspace
    private let gateGradient: Workspace
    private let previousHidden: Workspace
    private let inputGradient: Workspace
    private let carry: Workspace
    private let zeros: Workspace
    /// W_hh packed for the forward steps (panels of 8 units' four gates) and the backward ones
    /// (panels of 32 columns).
    private let packedForward: Workspace
    private let packedBackward: Workspace
    /// W_ih packed for the input product or the input gradient (`PanelProduct`).
    private let packedInput: Workspace
    /// b_ih + b_hh, which every step adds to its gates' input part.
    private let combinedBias: Workspace
    /// While generating, each call starts from the state the previous call ended with.
    var carriesState = false
    private let savedHidden: Workspace
    private let savedCell: Workspace

    var output: UnsafePointer<Float> { UnsafePointer(hiddenStates.pointer) }
    var multiplyAddsPerSample: Int { length * 4 * hidden * (inputWidth + hidden) }

    init(name: String, index k: Int, length: Int, input: Int, hidden: Int, builder: LayerBuilder) {
        self.name = "\(name)/l\(k)"
        (self.length, self.inputWidth, self.hidden) = (length, input, hidden)
        inputShape = [length, input]
        outputShape = [length, hidden]
        parameters = builder.parameters
        let bound = 1 / Float(hidden).squareRoot()
        func uniform(_ count: Int) -> (UnsafeMutablePointer<Float>, inout Generator) -> Void {
            { pointer, generator in for i in 0..<count { pointer[i] = (generator.nextUnitFloat() * 2 - 1) * bound } }
        }
        weightInput = builder.declare("\(name)/weight_ih_l\(k)", shape: [4 * hidden, input], decays: true, initialize: uniform(4 * hidden * input))
        weightHidden = builder.declare("\(name)/weight_hh_l\(k)", shape: [4 * hidden, hidden], decays: true, initialize: uniform(4 * hidden * hidden))
        biasInput = builder.declare("\(name)/bias_ih_l\(k)", shape: [4 * hidden], decays: false, initialize: uniform(4 * hidden))
        biasHidden = builder.declare("\(name)/bias_hh_l\(k)", shape: [4 * hidden], decays: false, initialize: uniform(4 * hidden))
        let rows = builder.maxBatch * length
        gates = builder.workspace(rows * 4 * hidden)
        cells = builder.workspace(rows * hidden)
        hiddenStates = builder.workspace(rows * hidden)
        gateGradient = builder.workspace(rows * 4 * hidden)
        previousHidden = builder.workspace(rows * hidden)
        inputGradient = builder.workspace(rows * input)
        carry = builder.workspace(builder.maxBatch * hidden)
        zeros = builder.workspace(hidden)
        packedForward = builder.workspace(owned: cohort_lstm_forward_panels(hidden) * 32 * hidden)
        packedBackward = builder.workspace(owned: cohort_lstm_backward_panels(hidden) * 32 * 4 * hidden)
        packedInput = builder.workspace(owned: max(PanelProduct.scratch(input, 4 * hidden), PanelProduct.scratch(4 * hidden, input)))
        combinedBias = builder.workspace(owned: 4 * hidden)
        savedHidden = builder.workspace(builder.maxBatch * hidden)
        savedCell = builder.workspace(builder.maxBatch * hidden)
    }

    /// Generation packs W_hh here, once per sequence, not at every one-token call.
    func resetState() {
        savedHidden.pointer.update(repeating: 0, count: savedHidden.count)
        savedCell.pointer.update(repeating: 0, count: savedCell.count)
        if carriesState { cohort_lstm_pack_forward(parameters.values(of: weightHidden), packedForward.pointer, hidden) }
    }

    /// Parts of a step's panels on the threads: any cut gives the same bits, so as many as there
    /// are threads once a step's product is worth a region (1 MFLOP).
    private func stepParts(panels: Int, batch: Int) -> Int {
        8 * batch * hidden * hidden >= 1 << 20 ? min(panels, LayerThreads.count) : 1
    }

    func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let (T, H, G) = (length, hidden, 4 * hidden)
        let rows = batch * T
        // gates[rows, 4H] = x[rows, in] · W_ihᵀ; each step adds b_ih + b_hh, then h_{t−1} · W_hhᵀ.
        let (bi, bh) = (parameters.values(of: biasInput), parameters.values(of: biasHidden))
        for j in 0..<G { combinedBias.pointer[j] = bi[j] + bh[j] }
        PanelProduct.multiply(rows: [0..<rows], G, inputWidth, input, inputWidth, parameters.values(of: weightInput), inputWidth,
                              transposeB: true, gates.pointer, G, accumulate: false, packed: packedInput.pointer)
        if !carriesState { cohort_lstm_pack_forward(parameters.values(of: weightHidden), packedForward.pointer, H) }
        let (packed, panels) = (UnsafePointer(packedForward.pointer), cohort_lstm_forward_panels(H))
        let parts = stepParts(panels: panels, batch: batch)
        let (gateRows, cellRows, hiddenRows, bias) = (gates.pointer, cells.pointer, hiddenStates.pointer, UnsafePointer(combinedBias.pointer))
        for t in 0..<T {
            // Row b of the previous state: h[b, t−1] (stride T·H), the carried state, or none.
            let previous: UnsafePointer<Float>? = t > 0 ? UnsafePointer(hiddenRows + (t - 1) * H)
                : carriesState ? UnsafePointer(savedHidden.pointer) : nil
            let (previousCell, previousCellStride) = t > 0 ? (UnsafePointer(cellRows + (t - 1) * H), T * H)
                : carriesState ? (UnsafePointer(savedCell.pointer), H) : (UnsafePointer(zeros.pointer), 0)
            LayerThreads.run(parts: parts) { part, _ in
                let first = part * panels / parts
                cohort_lstm_forward_step(packed, bias, H, batch, first, (part + 1) * panels / parts - first,
                                         previous, t > 0 ? T * H : H, gateRows + t * G, T * G, previousCell, previousCellStride,
                                         cellRows + t * H, hiddenRows + t * H, T * H)
            }
        }
        if carriesState {
            for b in 0..<batch {
                (savedHidden.pointer + b * H).update(from: hiddenStates.pointer + (b * T + T - 1) * H, count: H)
                (savedCell.pointer + b * H).update(from: cells.pointer + (b * T + T - 1) * H, count: H)
            }
        }
        return UnsafePointer(hiddenStates.pointer)
    }

    func backward(_ input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let (T, H, G) = (length, hidden, 4 * hidden)
        let rows = batch * T
        let dCell = carry.pointer  // [B, H]: dL/dc_t from step t + 1, then dL/dc_{t−1}
        dCell.update(repeating: 0, count: batch * H)
        cohort_lstm_pack_backward(parameters.values(of: weightHidden), packedBackward.pointer, H)
        let (packed, panels) = (UnsafePointer(packedBackward.pointer), cohort_lstm_backward_panels(H))
        let parts = stepParts(panels: panels, batch: batch)
        let (gateRows, cellRows, gradientRows) = (gates.pointer, cells.pointer, gateGradient.pointer)
        for t in stride(from: T - 1, through: 0, by: -1) {
            // dh_t = dy_t + dgates_{t+1} · W_hh (none after the last step), then the cells.
            let next: UnsafePointer<Float>? = t < T - 1 ? UnsafePointer(gradientRows + (t + 1) * G) : nil
            let (previousCell, previousCellStride) = t > 0 ? (UnsafePointer(cellRows + (t - 1) * H), T * H) : (UnsafePointer(zeros.pointer), 0)
            LayerThreads.run(parts: parts) { part, _ in
                let first = part * panels / parts
                cohort_lstm_backward_step(packed, H, batch, first, (part + 1) * panels / parts - first,
                                          next, T * G, gradientRows + t * G, gateRows + t * G, T * G, cellRows + t * H, previousCell,
                                          T * H, previousCellStride, outputGradient + t * H, T * H, dCell)
            }
        }
        // h_{t−1} for every step (zero before the first), then the weight gradients in one SGEMM each.
        for b in 0..<batch {
            (previousHidden.pointer + b * T * H).update(repeating: 0, count: H)
            (previousHidden.pointer + (b * T + 1) * H).update(from: hiddenStates.pointer + b * T * H, count: (T - 1) * H)
        }
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(G), Int32(H), Int32(rows),
                    1, gateGradient.pointer, Int32(G), previousHidden.pointer, Int32(H), 1, parameters.gradients(of: weightHidden), Int32(H))
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(G), Int32(inputWidth), Int32(rows),
                    1, gateGradient.pointer, Int32(G), input, Int32(inputWidth), 1, parameters.gradients(of: weightInput), Int32(inputWidth))
        // db_ih and db_hh += Σ_rows dgates, one pass, a range of columns per part (each column's sum in row order).
        let (dbi, dbh, columnParts) = (parameters.gradients(of: biasInput), parameters.gradients(of: biasHidden), min(LayerThreads.count, G / 64))
        LayerThreads.run(parts: max(1, columnParts)) { part, _ in
            let first = part * G / max(1, columnParts)
            cohort_add_rows_twice(gateGradient.pointer + first, G, dbi + first, dbh + first, rows, (part + 1) * G / max(1, columnParts) - first)
        }
        // dx = dgates · W_ih  [rows, 4H] · [4H, in]
        PanelProduct.multiply(rows: [0..<rows], inputWidth, G, gateGradient.pointer, G, parameters.values(of: weightInput), inputWidth,
                              transposeB: false, inputGradient.pointer, inputWidth, accumulate: false, packed: packedInput.pointer)
        return UnsafePointer(inputGradient.pointer)
    }
}

extension LSTMOptions {
    /// The `LSTM` operator per layer, sequence-major (what onnxruntime runs), PyTorch's gate
    /// blocks i, f, g, o reordered to ONNX's i, o, f, c.
    public func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int]) {
        func reorder(_ values: [Float]) -> [Float] {
            let per = values.count / 4
            return Array(values[0..<per]) + Array(values[(3 * per)...]) + Array(values[per..<(2 * per)]) + Array(values[(2 * per)..<(3 * per)])
        }
        var value = x
        for k in 0..<layers {
            let wi = try graph.tensor("\(name)/weight_ih_l\(k)"), wh = try graph.tensor("\(name)/weight_hh_l\(k)")
            let bi = try graph.tensor("\(name)/bias_ih_l\(k)"), bh = try graph.tensor("\(name)/bias_hh_l\(k)")
            let w = graph.constant("\(name).W_l\(k)", [1] + wi.shape, reorder(wi.values))
            let r = graph.constant("\(name).R_l\(k)", [1] + wh.shape, reorder(wh.values))
            let b = graph.constant("\(name).B_l\(k)", [1, 8 * hidden], reorder(bi.values) + reorder(bh.values))
            let timeMajor = graph.node("Transpose", [value], attributes: [.ints("perm", [1, 0, 2])])
            let y = graph.node("LSTM", [timeMajor, w, r, b], attributes: [.int("hidden_size", hidden)])  // [T, 1, N, H]
            let squeezed = graph.node("Squeeze", [y, graph.constantInt("axis", [1], [1])])
            value = graph.node("Transpose", [squeezed], attributes: [.ints("perm", [1, 0, 2])])
        }
        guard !returnSequences else { return (value, [shape[0], hidden]) }
        return (graph.node("Gather", [value, graph.constantInt("last", [], [Int64(shape[0] - 1)])], attributes: [.int("axis", 1)]), [hidden])
    }
}
