import Foundation

/// Per-layer forward and backward times of a model on random input: where a step's time goes.
///
/// Each layer runs on the output its predecessor produced (so shapes and sparsity are real),
/// `steps` times after one warm-up step; the median of each layer's times is reported together
/// with its multiply-add work, so a slow layer stands out as low GFLOP/s.
public struct LayerProfile {
    public struct Row {
        public let name: String
        /// 0 for the model's layers, 1 for a layer inside one of them, and so on.
        public var depth = 0
        public let forwardSeconds: Double
        public let backwardSeconds: Double
        /// Forward FLOPs for the batch (2 per multiply-add); 0 for layers without a GEMM.
        public let forwardFLOPs: Double
        /// Backward FLOPs: the weight gradient, plus the input gradient when the layer computes it.
        public let backwardFLOPs: Double
        /// How its own work uses `training.threads` (a container's: its `(rest)` row's).
        public var threading: LayerThreading = .single
    }

    public let batch: Int
    public let rows: [Row]

    public static func measure(_ model: Model, batch: Int, steps: Int, seed: UInt64 = 1) -> LayerProfile {
        let layers = model.layers
        var generator = Generator(seed: seed, streams: 99)
        let inputCount = batch * model.inputShape.reduce(1, *)
        let input = UnsafeMutablePointer<Float>.allocate(capacity: inputCount)
        defer { input.deallocate() }
        // Token ids for a model that reads them, else uniform values in [-1, 1).
        let vocabulary = (model.layers.first as? TokenConsumer)?.vocabulary
        for index in 0..<inputCount {
            input[index] = vocabulary.map { Float(generator.nextIndex(below: $0)) } ?? generator.nextUnitFloat() * 2 - 1
        }
        let outputCount = batch * model.outputShape.reduce(1, *)
        let seed = UnsafeMutablePointer<Float>.allocate(capacity: outputCount)
        defer { seed.deallocate() }
        for index in 0..<outputCount { seed[index] = (generator.nextUnitFloat() * 2 - 1) / Float(outputCount) }

        var forwardTimes = Array(repeating: [Double](), count: layers.count)
        var backwardTimes = Array(repeating: [Double](), count: layers.count)
        // Containers' calls to their sublayers are timed too, per step.
        var innerForward: [String: [Double]] = [:], innerBackward: [String: [Double]] = [:]
        SublayerTimes.recording = true
        defer { SublayerTimes.recording = false; SublayerTimes.reset() }
        var inputs = Array(repeating: UnsafePointer<Float>(input), count: layers.count)
        for step in 0...max(steps, 1) {
            var activation = UnsafePointer<Float>(input)
            for (index, layer) in layers.enumerated() {
                inputs[index] = activation
                let start = monotonicNanoseconds()
                activation = layer.forward(activation, batch: batch, training: true)
                if step > 0 { forwardTimes[index].append(seconds(since: start)) }
            }
            var gradient = UnsafePointer<Float>(seed)
            for index in layers.indices.reversed() {
                let start = monotonicNanoseconds()
                gradient = layers[index].backward(inputs[index], outputGradient: gradient, batch: batch)
                if step > 0 { backwardTimes[index].append(seconds(since: start)) }
            }
            if step > 0 {
                for (name, time) in SublayerTimes.forward { innerForward[name, default: []].append(time) }
                for (name, time) in SublayerTimes.backward { innerBackward[name, default: []].append(time) }
            }
            SublayerTimes.reset()
        }
        func row(_ layer: Layer, forward: Double, backward: Double, depth: Int) -> Row {
            let work = multiplyAdds(layer)
            let inputGradient = (layer as? InputGradientOptional)?.computesInputGradient ?? true
            return Row(name: layer.name, depth: depth, forwardSeconds: forward, backwardSeconds: backward,
                       forwardFLOPs: 2 * Double(batch * work), backwardFLOPs: 2 * Double(batch * work) * (inputGradient ? 2 : 1),
                       threading: layer.threading)
        }
        /// A container's sublayers, depth first, then what the container does itself (`(rest)`).
        func inner(_ layer: Layer, forward: Double, backward: Double, depth: Int) -> [Row] {
            guard !layer.sublayers.isEmpty else { return [] }
            var rows: [Row] = []
            var (childForward, childBackward) = (0.0, 0.0)
            for sublayer in layer.sublayers {
                let f = median(innerForward[sublayer.name] ?? []), b = median(innerBackward[sublayer.name] ?? [])
                (childForward, childBackward) = (childForward + f, childBackward + b)
                rows.append(row(sublayer, forward: f, backward: b, depth: depth))
                rows += inner(sublayer, forward: f, backward: b, depth: depth + 1)
            }
            rows.append(Row(name: "\(layer.name)/(rest)", depth: depth, forwardSeconds: max(forward - childForward, 0),
                            backwardSeconds: max(backward - childBackward, 0), forwardFLOPs: 2 * Double(batch * layer.multiplyAddsPerSample),
                            backwardFLOPs: 4 * Double(batch * layer.multiplyAddsPerSample), threading: layer.threading))
            return rows
        }
        var rows: [Row] = []
        for index in layers.indices {
            let (forward, backward) = (median(forwardTimes[index]), median(backwardTimes[index]))
            rows.append(row(layers[index], forward: forward, backward: backward, depth: 0))
            rows += inner(layers[index], forward: forward, backward: backward, depth: 1)
        }
        return LayerProfile(batch: batch, rows: rows)
    }

    /// Multiply-adds per sample of the layer's matrix products.
    static func multiplyAdds(_ layer: Layer) -> Int {
        layer.multiplyAddsPerSample + layer.sublayers.reduce(0) { $0 + multiplyAdds($1) }
    }

    /// A table: one line per layer, then the step total.
    public func table() -> String {
        func ms(_ seconds: Double) -> String { String(format: "%9.3f", seconds * 1e3) }
        func rate(_ flops: Double, _ seconds: Double) -> String {
            flops > 0 && seconds > 0 ? String(format: "%8.1f", flops / seconds / 1e9) : "       -"
        }
        let top = rows.filter { $0.depth == 0 }
        let total = top.reduce(0) { $0 + $1.forwardSeconds + $1.backwardSeconds }
        var lines = ["layer                   forward ms  GFLOP/s  backward ms  GFLOP/s   share  on \(LayerThreads.count) thread(s)"]
        for row in rows {
            let share = total > 0 ? (row.forwardSeconds + row.backwardSeconds) / total * 100 : 0
            let label = String(repeating: "  ", count: row.depth) + (row.depth == 0 ? row.name : String(row.name.split(separator: "/").last ?? ""))
            lines.append(label.padding(toLength: 22, withPad: " ", startingAt: 0)
                         + "  \(ms(row.forwardSeconds)) \(rate(row.forwardFLOPs, row.forwardSeconds))"
                         + "    \(ms(row.backwardSeconds)) \(rate(row.backwardFLOPs, row.backwardSeconds))"
                         + String(format: "  %5.1f%%", share)
                         + "  " + (rows.contains { $0.name == row.name + "/(rest)" } ? "(see below)" : row.threading.rawValue))
        }
        let flops = top.reduce(0) { $0 + $1.forwardFLOPs + $1.backwardFLOPs }
        lines.append("total (batch \(batch)): " + String(format: "%.3f ms, %.1f GFLOP/s, %.0f samples/s (layers only)",
                                                        total * 1e3, total > 0 ? flops / total / 1e9 : 0, total > 0 ? Double(batch) / total : 0))
        return lines.joined(separator: "\n")
    }
}
