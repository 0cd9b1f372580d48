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
        that load_state_dict(strict=True) accepts.
        --format onnx: an inference graph (opset 17, dynamic batch) that takes the data file's
        rows as float32 (token ids as int64) and applies the stored normalization.
        --format huggingface: a GPT-2-shaped model (GPT2LMHeadModel) or a BERT-family encoder
        (BertModel, with its tokenizer.json and sentence-transformers pooling; a head after the
        encoder is not part of BertModel) as a Hugging Face directory that transformers'
        from_pretrained loads; --out names a directory that does not exist yet or is empty.
        Runs in one process.
        """
    )

    @Argument(help: "A checkpoint file written by cohort train.")
    var checkpoint: String

    @Option(help: "Output format: safetensors, onnx or huggingface.")
    var format: String

    @Option(help: "Output file.")
    var out: String

    func run() throws {
        reportingErrors {
            guard ["safetensors", "onnx", "huggingface"].contains(format) else {
                throw CohortError("--format \(format): is not one of safetensors, onnx, huggingface")
            }
            try refuseOutput(out, namingAnyOf: [checkpoint])
            var stored = try Checkpoint.read(from: checkpoint)
            if format == "huggingface" {
                let files = try HuggingFace.export(stored)
                try writeModelDirectory(out, files: files)
                printLine("wrote \(out): \(files.map(\.name).joined(separator: ", ")) (\(files.reduce(0) { $0 + $1.bytes.count }) bytes)")
                return
            }
            let inputShape: [Int]
            if let shape = stored.inputShape, stored.inputScale != nil {
                inputShape = shape
            } else {
                // A checkpoint from before input_shape and input_scale were stored: its training data tells.
                let train = stored.dataFiles?.first { $0.hasPrefix("train=") }.map { String($0.dropFirst("train=".count)) }
                let data = try TrainedModel.load(checkpoint: checkpoint, data: train, maxBatch: 1, communicator: SingleProcess()).data
                inputShape = data.sampleShape
                stored.inputScale = (data as? LabeledData).map { Double($0.scale) } ?? 1
                stored.inputLayout = data.sampleLayout
            }
            let bytes: Data
            let what: String
            if format == "onnx" {
                bytes = Data(try OnnxExport.model(of: stored, inputShape: inputShape))
                what = "an ONNX graph (opset 17)"
            } else {
                let (tensors, metadata) = try SafetensorsExport.tensors(of: stored, inputShape: inputShape)
                bytes = try SafetensorsExport.encode(tensors, metadata: metadata)
                what = "\(tensors.count) tensors (safetensors)"
            }
            let temporary = URL(fileURLWithPath: out).deletingLastPathComponent().appendingPathComponent(".\(URL(fileURLWithPath: out).lastPathComponent).tmp-\(getpid())").path
            guard FileManager.default.createFile(atPath: temporary, contents: bytes) else {
                throw CohortError("\(out): cannot write (is the directory writable?)")
            }
            guard rename(temporary, out) == 0 else {
                unlink(temporary)
                throw CohortError("\(out): cannot move the new file into place: \(String(cString: strerror(errno)))")
            }
            printLine("wrote \(out): \(what), \(bytes.count) bytes")
        }
    }
}

/// Writes `files` into `directory`, which must not exist yet or be empty (nothing a user had is
/// written over): each file under a temporary name first, then renamed into place.
func writeModelDirectory(_ directory: String, files: [(name: String, bytes: Data)]) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
        guard isDirectory.boolValue, (try? FileManager.default.contentsOfDirectory(atPath: directory))?.isEmpty == true else {
            throw CohortError("\(directory): exists and is not an empty directory; choose a new one")
        }
    } else {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CohortError("\(directory): cannot create the directory: \(error.localizedDescription)")
        }
    }
    for (name, bytes) in files {
        let folder = URL(fileURLWithPath: "\(directory)/\(name)").deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let file = URL(fileURLWithPath: name).lastPathComponent
        let (path, temporary) = ("\(directory)/\(name)", "\(folder)/.\(file).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: temporary, contents: bytes) else {
            throw CohortError("\(path): cannot write (disk full, or the directory not writable?)")
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw CohortError("\(path): cannot move the new file into place: \(String(cString: strerror(errno)))")
        }
    }
}
