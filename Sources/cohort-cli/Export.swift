import ArgumentParser
import Cohort
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's weights for other tools (safetensors, PyTorch state_dict names).",
        discussion: """
        --format safetensors: parameters and batch-norm buffers under PyTorch state_dict names and
        layouts, with the config, input shape, normalization and class names as metadata
        (docs/formats.md, "Export"). Examples/pytorch/cohort_torch.py builds the PyTorch module
        that load_state_dict(strict=True) accepts. Runs in one process.
        """
    )

    @Argument(help: "A checkpoint file written by cohort train.")
    var checkpoint: String

    @Option(help: "Output format: safetensors.")
    var format: String

    @Option(help: "Output file.")
    var out: String

    func run() throws {
        reportingErrors {
            guard format == "safetensors" else {
                throw CohortError("--format \(format): this version exports safetensors only (ONNX is not built yet)")
            }
            try refuseOutput(out, namingAnyOf: [checkpoint])
            let stored = try Checkpoint.read(from: checkpoint)
            let inputShape: [Int]
            if let shape = stored.inputShape {
                inputShape = shape
            } else {
                // A checkpoint from before input_shape was stored: its training data tells.
                let train = stored.dataFiles?.first { $0.hasPrefix("train=") }.map { String($0.dropFirst("train=".count)) }
                inputShape = try TrainedModel.load(checkpoint: checkpoint, data: train, maxBatch: 1, communicator: SingleProcess()).data.sampleShape
            }
            let (tensors, metadata) = try SafetensorsExport.tensors(of: stored, inputShape: inputShape)
            let bytes = try SafetensorsExport.encode(tensors, metadata: metadata)
            let temporary = URL(fileURLWithPath: out).deletingLastPathComponent().appendingPathComponent(".\(URL(fileURLWithPath: out).lastPathComponent).tmp-\(getpid())").path
            guard FileManager.default.createFile(atPath: temporary, contents: bytes) else {
                throw CohortError("\(out): cannot write (is the directory writable?)")
            }
            guard rename(temporary, out) == 0 else {
                unlink(temporary)
                throw CohortError("\(out): cannot move the new file into place: \(String(cString: strerror(errno)))")
            }
            printLine("wrote \(out): \(tensors.count) tensors, \(bytes.count) bytes (safetensors)")
        }
    }
}
