import Foundation

extension TrainConfig {
    /// Every key of the config as YAML that `TrainConfig.parse` reads back equal: the text a
    /// config built in Swift stores in its checkpoints and run directory.
    public var yaml: String {
        var lines = ["name: \(yamlQuoted(name))", "seed: \(seed)", "run_dir: \(yamlQuoted(runDirectory))", "data:"] + data.yamlLines
        lines.append("model:")
        if !layers.isEmpty { lines += ["  layers:"] + layers.map { "    - \($0.yamlFlow)" } }
        if !addedLayers.isEmpty { lines += ["  add_layers:"] + addedLayers.map { "    - \($0.yamlFlow)" } }
        let names = { (list: [String]) in "[" + list.map(yamlQuoted).joined(separator: ", ") + "]" }
        if let from = fineTuning.initFrom {
            lines.append("  init_from: {\(from.huggingface ? "huggingface" : "checkpoint"): \(yamlQuoted(from.checkpoint))" + (from.layers.map { ", layers: \(names($0))" } ?? "")
                         + ", skip: \(names(from.skip))}")
        }
        if !fineTuning.freeze.isEmpty { lines.append("  freeze: \(names(fineTuning.freeze))") }
        lines.append("  frozen_batch_norm: \(fineTuning.frozenBatchNorm.rawValue)")
        switch loss {
        case .softmaxCrossEntropy(let smoothing): lines.append("loss: {type: softmax_cross_entropy, label_smoothing: \(smoothing)}")
        case .binaryCrossEntropy: lines.append("loss: binary_cross_entropy")
        case .meanSquaredError: lines.append("loss: mean_squared_error")
        }
        lines += ["optimizer:"] + optimizer.yamlLines + ["training:"] + training.yamlLines + ["checkpoint:"] + checkpoint.yamlLines
        let callbackLines = callbacks.yamlLines
        if !callbackLines.isEmpty { lines += ["callbacks:"] + callbackLines }
        lines.append("tensorboard: \(tensorBoard)")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A YAML double-quoted scalar.
func yamlQuoted(_ text: String) -> String {
    var escaped = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": escaped += "\\\""
        case "\\": escaped += "\\\\"
        case "\n": escaped += "\\n"
        case "\t": escaped += "\\t"
        default:
            if scalar.value < 0x20 { escaped += String(format: "\\x%02X", scalar.value) } else { escaped.unicodeScalars.append(scalar) }
        }
    }
    return escaped + "\""
}
