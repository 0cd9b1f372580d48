import Foundation

// The tables of the config's sections (keys: configs/README.md). Each key's default is its
// section's initializer's; `TrainConfig.parse` and `TrainConfig.yaml` both go through these.

extension DataConfig: ConfigSection {
    static var keys: [ConfigKey<DataConfig>] { [
        .string("train", \.train), .string("test", \.test), .string("features", \.features), .string("labels", \.labels),
        .bool("cache", \.cache), .choice("normalize", \.normalize),
        ConfigKey(name: "remainder", read: { map, data in
            data.dropRemainder = try map.choice("remainder", ["partial", "drop"], default: data.dropRemainder ? "drop" : "partial") == "drop"
        }, write: { $0.dropRemainder ? "drop" : "partial" }),
        .numbers("mean", \.mean), .numbers("std", \.std), .choice("sampling", \.sampling),
        .int("block_rows", \.blockRows) { $0 > 0 ? nil : "must be positive" },
        .int("shuffle_buffer", \.shuffleBuffer, 1...Int.max), .double("validation_split", \.validationSplit, 0...0.9),
        .bool("prefetch", \.prefetch),
        ConfigKey(name: "augment", read: { map, data in
            guard let augment = try map.map("augment") else { return }
            data.augmentation = try Augmentation.parse(augment, over: data.augmentation)
        }, write: { data in
            data.augmentation.isEnabled ? "{" + data.augmentation.yamlLines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ") + "}" : nil
        }),
        .bool("check_finite", \.checkFinite),
        .int("window", \.window) { (1...1_048_576).contains($0) ? nil : "must be in 1...1048576" },
    ] }
}

extension Augmentation: ConfigSection {
    static var keys: [ConfigKey<Augmentation>] { [.int("crop_padding", \.cropPadding, 0...64), .bool("horizontal_flip", \.horizontalFlip)] }
}

extension OptimizerConfig: ConfigSection {
    static var keys: [ConfigKey<OptimizerConfig>] { [
        .choice("type", \.kind), .float("learning_rate", \.learningRate, 0...10), .float("momentum", \.momentum, 0...1),
        .bool("nesterov", \.nesterov), .float("beta1", \.beta1, 0...1), .float("beta2", \.beta2, 0...1),
        .float("epsilon", \.epsilon, 0...1), .float("weight_decay", \.weightDecay, 0...1),
        .bool("decay_bias_and_norm", \.decayBiasAndNorm), .float("clip_grad_norm", \.clipNorm, 0...1e9),
        ConfigKey(name: "schedule", read: { map, optimizer in
            var schedule = LearningRateSchedule(baseRate: optimizer.learningRate)
            if let map = try map.map("schedule") {
                schedule = try LearningRateSchedule.parse(map, over: schedule)
            }
            optimizer.schedule = schedule
        }, write: { optimizer in
            "{" + optimizer.schedule.yamlLines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ") + "}"
        }),
    ] }

    /// The defaults hang on `type` (SGD's learning rate, AdamW's weight decay): it is read first.
    static func parse(_ map: ConfigMap) throws -> OptimizerConfig {
        var start = OptimizerConfig()
        try ConfigKey.choice("type", \OptimizerConfig.kind).read(map, &start)
        let kind = start.kind
        let optimizer = try read(map, over: OptimizerConfig(kind: kind))
        if optimizer.nesterov && (kind != .sgd || optimizer.momentum == 0) {
            throw map.error("nesterov", "Nesterov momentum needs type sgd and momentum > 0")
        }
        try map.finish()
        return optimizer
    }
}


extension LearningRateSchedule: ConfigSection {
    static var keys: [ConfigKey<LearningRateSchedule>] { [
        .choice("type", \.kind), .int("warmup_steps", \.warmupSteps, 0...Int.max), .int("step_size", \.stepSize, 1...Int.max),
        .float("gamma", \.gamma, 0...1), .float("min_learning_rate", \.minimumRate, 0...10),
        .int("total_steps", \.totalSteps) { $0 > 0 ? nil : "must be positive" },
    ] }
}

extension TrainingConfig: ConfigSection {
    static var keys: [ConfigKey<TrainingConfig>] { [
        .int("epochs", \.epochs, 1...1_000_000), .int("batch_size", \.batchSize, 1...1_000_000),
        // Workspaces are sized for the larger of the two batches: by default evaluation reuses
        // the training batch and costs no extra memory.
        ConfigKey(name: "eval_batch_size", read: { map, training in
            training.evalBatchSize = try map.int("eval_batch_size", default: training.batchSize, range: 1...1_000_000)
        }, write: { "\($0.evalBatchSize)" }),
        .int("max_steps", \.maxSteps) { $0 > 0 ? nil : "must be positive" },
        .int("log_every", \.logEvery, 0...Int.max), .choice("on_nonfinite", \.onNonFinite), .bool("timing_barrier", \.timingBarrier),
        .choice("all_reduce", \.allReduce), .int("accumulate_steps", \.accumulateSteps, 1...65_536), .choice("state", \.state),
        .bool("overlap_all_reduce", \.overlapAllReduce), .double("bucket_mb", \.bucketMegabytes, 0.001...1e6),
        .choice("compress", \.compress),
        .int("threads", \.threads) { (1...1024).contains($0) ? nil : "must be in 1...1024, got \($0)" },
        .double("stall_timeout", \.stallTimeout, 0...1e7), .choice("recompute", \.recompute), .bool("keep_global_batch", \.keepGlobalBatch),
    ] }
}

extension CheckpointConfig: ConfigSection {
    static var keys: [ConfigKey<CheckpointConfig>] { [
        .int("every_epochs", \.everyEpochs, 0...Int.max), .int("every_steps", \.everySteps, 0...Int.max),
        .double("every_seconds", \.everySeconds, 0...1e9), .int("keep_last", \.keepLast, 1...Int.max), .bool("keep_best", \.keepBest),
        .choice("monitor", \.monitor),
    ] }
}

extension EarlyStopping: ConfigSection {
    static var keys: [ConfigKey<EarlyStopping>] { [
        .choice("monitor", \.monitor), .int("patience", \.patience, 1...Int.max), .double("min_delta", \.minDelta, 0...1e9),
        .bool("restore_best_weights", \.restoreBestWeights),
    ] }
}

extension ReduceOnPlateau: ConfigSection {
    static var keys: [ConfigKey<ReduceOnPlateau>] { [
        .choice("monitor", \.monitor), .double("factor", \.factor, 0...0.999_999), .int("patience", \.patience, 1...Int.max),
        .double("min_delta", \.minDelta, 0...1e9), .int("cooldown", \.cooldown, 0...Int.max),
        .double("min_learning_rate", \.minimumRate, 0...10),
    ] }
}

extension CallbackConfig: ConfigSection {
    static var keys: [ConfigKey<CallbackConfig>] { [
        callback("early_stopping", \.earlyStopping, EarlyStopping(monitor: .testLoss, patience: 3)),
        callback("reduce_lr_on_plateau", \.reduceOnPlateau, ReduceOnPlateau(monitor: .testLoss, factor: 0.1, patience: 2)),
    ] }

    /// A callback is on when its key is there; its own keys are read over `defaults`.
    private static func callback<Callback: ConfigSection>(_ name: String, _ path: WritableKeyPath<CallbackConfig, Callback?>,
                                                          _ defaults: Callback) -> ConfigKey<CallbackConfig> {
        ConfigKey(name: name, read: { map, callbacks in
            guard let map = try map.map(name) else { return }
            callbacks[keyPath: path] = try Callback.parse(map, over: defaults)
        }, write: { callbacks in
            callbacks[keyPath: path].map { "{" + $0.yamlLines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ") + "}" }
        })
    }
}

extension FineTuning {
    /// `model.init_from`, `model.freeze` and `model.frozen_batch_norm`, from the `model` section.
    static func parse(_ model: ConfigMap) throws -> FineTuning {
        var fineTuning = FineTuning(freeze: try model.strings("freeze") ?? [])
        try ConfigKey.choice("frozen_batch_norm", \FineTuning.frozenBatchNorm).read(model, &fineTuning)
        guard let map = try model.map("init_from") else { return fineTuning }
        let huggingface = try map.string("huggingface")
        guard (huggingface == nil) != (map.has("checkpoint") == false) else {
            throw map.error("checkpoint", "init_from takes checkpoint (a Cohort checkpoint) or huggingface (a model directory), one of them")
        }
        fineTuning.initFrom = FineTuning.InitFrom(checkpoint: try huggingface ?? map.requiredString("checkpoint"),
                                                  layers: try map.strings("layers"), skip: try map.strings("skip") ?? [])
        fineTuning.initFrom?.huggingface = huggingface != nil
        try map.finish()
        return fineTuning
    }
}
