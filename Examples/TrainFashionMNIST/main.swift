// Trains the W1 MLP on Fashion-MNIST through the library, with typed configs instead of YAML:
//   launch/prepare-data.sh                      # data/fashion-mnist/{train,test}.h5
//   mpirun -np 2 .build/release/train-fashion-mnist [DATA_DIR] [MAX_STEPS]
// Every rank runs this program; rank 0 prints and writes the checkpoints (with this config as YAML).
import Cohort
import Foundation

let arguments = CommandLine.arguments.dropFirst()
let dataDirectory = arguments.first ?? "data/fashion-mnist"
let maxSteps = arguments.dropFirst().first.flatMap { Int($0) }

let config = TrainConfig(
    name: "fashion-mnist-mlp-swift",
    seed: 1,
    data: DataConfig(train: "\(dataDirectory)/train.h5", test: "\(dataDirectory)/test.h5"),
    layers: [.flatten, .dense(256, activation: .relu), .dense(128, activation: .relu), .dense(10)],
    optimizer: OptimizerConfig(kind: .adam, learningRate: 1e-3),
    training: TrainingConfig(epochs: 2, batchSize: 64, maxSteps: maxSteps))

let communicator = MPICommunicator()
do {
    let trainer = try Trainer(config: config, communicator: communicator)
    if communicator.isRoot {
        print(trainer.model.summary())
        trainer.progress = Progress.forStandardOutput(quiet: true, every: 0, stepsPerEpoch: trainer.stepsThisEpoch)
    }
    trainer.synchronizeInitialState()
    let outcome = try trainer.run()
    if communicator.isRoot {
        let accuracy = trainer.finalReport.map { String(format: ", test accuracy %.4f", $0.accuracy) } ?? ""
        print("\(outcome) after \(trainer.position.globalStep) steps\(accuracy); checkpoints in \(config.runDirectory)/checkpoints")
    }
    communicator.finalize()
} catch {
    FileHandle.standardError.write(Data("train-fashion-mnist: rank \(communicator.rank): \(error)\n".utf8))
    communicator.abort(code: 1)
}
