import ArgumentParser
import Cohort
import Foundation

struct Profile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time each layer of a config's model, forward and backward, on random input.",
        discussion: """
        Builds the model of CONFIG for the sample shape of its training file, runs --steps training
        steps of forward and backward on random data (one process, the BLAS threads of this
        process) and prints the median time and GFLOP/s of every layer. The optimizer and the
        all-reduce are not included. Example: OPENBLAS_NUM_THREADS=1 cohort profile configs/fashion-mnist-convnet.yaml
        """
    )

    @Argument(help: "A training config (YAML).")
    var config: String

    @Option(help: "Timed steps (after one warm-up step).")
    var steps: Int = 20

    @Option(help: "Batch size (default: the config's per-rank batch).")
    var batch: Int?

    @Option(name: .customLong("set"), help: "Override a config key, as for train.")
    var overrides: [String] = []

    @Option(help: "Layer threads (default: training.threads, else OPENBLAS_NUM_THREADS or the cores this process may use).")
    var threads: Int?

    func run() throws {
        LayerThreads.use(LayerThreads.boundCores())
        reportingErrors {
            let trainConfig = try TrainConfig.load(path: config, overrides: overrides).resolvingPublishedModel()
            LayerThreads.use(threads ?? trainConfig.training.threads ?? LayerThreads.boundCores())
            let batchSize = batch ?? trainConfig.training.batchSize
            guard batchSize > 0, steps > 0 else { throw CohortError("--batch and --steps must be positive") }
            var dataConfig = trainConfig.data
            dataConfig.checkFinite = false
            let data = try openSamples(path: trainConfig.data.train, config: dataConfig, phase: .zero, seed: trainConfig.seed, cache: false)
            let model = try Model(inputShape: data.sampleShape, layers: trainConfig.layers, maxBatch: batchSize, seed: trainConfig.seed,
                                  recomputeBlocks: trainConfig.training.recompute == .blocks)
            printLine("\(config): \(model.parameters.count) parameters, batch \(batchSize), \(steps) steps, BLAS \(blasDescription())")
            printLine(LayerProfile.measure(model, batch: batchSize, steps: steps).table())
        }
    }
}
