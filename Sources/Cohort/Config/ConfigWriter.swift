import Foundation

extension TrainConfig {
    /// Every key of the config as YAML that `TrainConfig.parse` reads back equal: the text a
    /// config built in Swift stores in its checkpoints and run directory.
    public var yaml: String {
        var lines = ["name: \(quoted(name))", "seed: \(seed)", "run_dir: \(quoted(runDirectory))", "data:"]
        var data = ["train": quoted(self.data.train), "features": quoted(self.data.features), "labels": quoted(self.data.labels),
                    "cache": "\(self.data.cache)", "normalize": self.data.normalize.rawValue,
                    "remainder": self.data.dropRemainder ? "drop" : "partial", "sampling": self.data.sampling.rawValue,
                    "shuffle_buffer": "\(self.data.shuffleBuffer)", "validation_split": "\(self.data.validationSplit)",
                    "prefetch": "\(self.data.prefetch)", "check_finite": "\(self.data.checkFinite)"]
        data["test"] = self.data.test.map(quoted)
        data["mean"] = self.data.mean.map { "[" + $0.map { "\($0)" }.joined(separator: ", ") + "]" }
        data["std"] = self.data.std.map { "[" + $0.map { "\($0)" }.joined(separator: ", ") + "]" }
        data["block_rows"] = self.data.blockRows.map { "\($0)" }
        data["window"] = self.data.window.map { "\($0)" }
        if self.data.augmentation.isEnabled {
            data["augment"] = "{crop_padding: \(self.data.augmentation.cropPadding), horizontal_flip: \(self.data.augmentation.horizontalFlip)}"
        }
        lines += section(data)
        lines.append("model:")
        if !layers.isEmpty { lines += ["  layers:"] + layers.map { "    - \($0.yamlFlow)" } }
        if !addedLayers.isEmpty { lines += ["  add_layers:"] + addedLayers.map { "    - \($0.yamlFlow)" } }
        let names = { (list: [String]) in "[" + list.map(quoted).joined(separator: ", ") + "]" }
        if let from = fineTuning.initFrom {
            lines.append("  init_from: {\(from.huggingface ? "huggingface" : "checkpoint"): \(quoted(from.checkpoint))" + (from.layers.map { ", layers: \(names($0))" } ?? "")
                         + ", skip: \(names(from.skip))}")
        }
        if !fineTuning.freeze.isEmpty { lines.append("  freeze: \(names(fineTuning.freeze))") }
        lines.append("  frozen_batch_norm: \(fineTuning.frozenBatchNorm.rawValue)")
        switch loss {
        case .softmaxCrossEntropy(let smoothing): lines.append("loss: {type: softmax_cross_entropy, label_smoothing: \(smoothing)}")
        case .binaryCrossEntropy: lines.append("loss: binary_cross_entropy")
        case .meanSquaredError: lines.append("loss: mean_squared_error")
        }
        let schedule = optimizer.schedule
        var scheduleKeys = ["type: \(schedule.kind.rawValue)", "warmup_steps: \(schedule.warmupSteps)", "step_size: \(schedule.stepSize)",
                            "gamma: \(schedule.gamma)", "min_learning_rate: \(schedule.minimumRate)"]
        if let total = schedule.totalSteps { scheduleKeys.append("total_steps: \(total)") }
        lines.append("optimizer:")
        lines += section(["type": optimizer.kind.rawValue, "learning_rate": "\(optimizer.learningRate)", "momentum": "\(optimizer.momentum)",
                          "nesterov": "\(optimizer.nesterov)", "beta1": "\(optimizer.beta1)", "beta2": "\(optimizer.beta2)",
                          "epsilon": "\(optimizer.epsilon)", "weight_decay": "\(optimizer.weightDecay)",
                          "decay_bias_and_norm": "\(optimizer.decayBiasAndNorm)", "clip_grad_norm": "\(optimizer.clipNorm)",
                          "schedule": "{" + scheduleKeys.joined(separator: ", ") + "}"])
        var trainingKeys = ["epochs": "\(training.epochs)", "batch_size": "\(training.batchSize)", "eval_batch_size": "\(training.evalBatchSize)",
                            "log_every": "\(training.logEvery)", "on_nonfinite": training.onNonFinite.rawValue,
                            "timing_barrier": "\(training.timingBarrier)", "all_reduce": training.allReduce.rawValue,
                            "accumulate_steps": "\(training.accumulateSteps)",
                            "state": training.state.rawValue, "overlap_all_reduce": "\(training.overlapAllReduce)",
                            "bucket_mb": "\(training.bucketMegabytes)", "compress": training.compress.rawValue, "stall_timeout": "\(training.stallTimeout)",
                            "recompute": training.recompute.rawValue, "keep_global_batch": "\(training.keepGlobalBatch)"]
        trainingKeys["max_steps"] = training.maxSteps.map { "\($0)" }
        trainingKeys["threads"] = training.threads.map { "\($0)" }
        lines.append("training:")
        lines += section(trainingKeys)
        lines.append("checkpoint:")
        lines += section(["every_epochs": "\(checkpoint.everyEpochs)", "every_steps": "\(checkpoint.everySteps)",
                          "every_seconds": "\(checkpoint.everySeconds)", "keep_last": "\(checkpoint.keepLast)",
                          "keep_best": "\(checkpoint.keepBest)", "monitor": checkpoint.monitor.rawValue])
        var callbackKeys: [String: String] = [:]
        if let stop = callbacks.earlyStopping {
            callbackKeys["early_stopping"] = "{monitor: \(stop.monitor.rawValue), patience: \(stop.patience), min_delta: \(stop.minDelta), restore_best_weights: \(stop.restoreBestWeights)}"
        }
        if let plateau = callbacks.reduceOnPlateau {
            callbackKeys["reduce_lr_on_plateau"] = "{monitor: \(plateau.monitor.rawValue), factor: \(plateau.factor), patience: \(plateau.patience), min_delta: \(plateau.minDelta), cooldown: \(plateau.cooldown), min_learning_rate: \(plateau.minimumRate)}"
        }
        if !callbackKeys.isEmpty { lines += ["callbacks:"] + section(callbackKeys) }
        lines.append("tensorboard: \(tensorBoard)")
        return lines.joined(separator: "\n") + "\n"
    }

    private func section(_ keys: [String: String]) -> [String] {
        keys.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }
    }
}

/// A YAML double-quoted scalar.
private func quoted(_ text: String) -> String {
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
