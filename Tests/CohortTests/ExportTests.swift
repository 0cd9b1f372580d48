import Foundation
import XCTest
@testable import Cohort

/// `cohort export --format safetensors`: the file is valid safetensors (header, offsets, raw
/// little-endian data) and holds the checkpoint's tensors under PyTorch names and layouts.
/// (Examples/pytorch/check_export.py checks the same files in PyTorch with strict loading.)
final class ExportTests: XCTestCase {
    func test_safetensorsHoldTheCheckpointUnderPyTorchNamesAndLayouts() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 64, seed: 1)
        let layers = """
            - {type: conv2d, filters: 3, kernel: 3, padding: same, bias: false}
            - {type: batch_norm}
            - {type: residual, layers: [{type: conv2d, filters: 3, kernel: 3, padding: same}], activation: relu}
            - {type: flatten}
            - {type: dense, units: 4}
        """
        try smallConfig(train: train, test: nil, runDirectory: "\(directory)/run", epochs: 1, extra: "  max_steps: 3", layers: layers)
            .write(toFile: "\(directory)/c.yaml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCohort(ranks: 1, ["train", "\(directory)/c.yaml"], directory: directory).status, 0)
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        let out = "\(directory)/model.safetensors"
        let export = try runCohort(ranks: 1, ["export", checkpoint, "--format", "safetensors", "--out", out], directory: directory)
        XCTAssertEqual(export.status, 0, export.error)

        let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        let length = Int(bytes.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        XCTAssertEqual((8 + length) % 8, 0, "data 8-byte aligned")
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: bytes[8..<(8 + length)]) as? [String: Any])
        let data = bytes[(8 + length)...]
        func tensor(_ name: String) throws -> (shape: [Int], values: [Float]) {
            let info = try XCTUnwrap(header[name] as? [String: Any], name)
            let offsets = try XCTUnwrap(info["data_offsets"] as? [Int])
            let slice = data[(data.startIndex + offsets[0])..<(data.startIndex + offsets[1])]
            let values = slice.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            return (try XCTUnwrap(info["shape"] as? [Int]), values)
        }
        XCTAssertEqual(Set(header.keys), ["__metadata__", "conv2d_1.weight", "batch_norm_1.weight", "batch_norm_1.bias",
                                          "batch_norm_1.running_mean", "batch_norm_1.running_var", "batch_norm_1.num_batches_tracked",
                                          "residual_1.conv2d_2.weight", "residual_1.conv2d_2.bias", "dense_1.weight", "dense_1.bias"])
        let stored = try Checkpoint.read(from: checkpoint)
        let dense = try XCTUnwrap(stored.tensors["parameters/dense_1/weight"])  // [in, out]
        let exported = try tensor("dense_1.weight")                              // [out, in]
        XCTAssertEqual(exported.shape, [4, dense.shape[0]])
        for o in 0..<4 { for i in 0..<dense.shape[0] { XCTAssertEqual(exported.values[o * dense.shape[0] + i], dense.values[i * 4 + o]) } }
        XCTAssertEqual(try tensor("residual_1.conv2d_2.weight").values, stored.tensors["parameters/residual_1/conv2d_2/weight"]?.values)
        XCTAssertEqual(try tensor("batch_norm_1.weight").values, stored.tensors["parameters/batch_norm_1/gamma"]?.values)
        XCTAssertEqual(try tensor("batch_norm_1.running_var").values, stored.tensors["buffers/batch_norm_1/running_var"]?.values)
        let tracked = try XCTUnwrap(header["batch_norm_1.num_batches_tracked"] as? [String: Any])
        XCTAssertEqual(tracked["dtype"] as? String, "I64")
        let metadata = try XCTUnwrap(header["__metadata__"] as? [String: String])
        XCTAssertEqual(metadata["input_shape"], "[1,6,6]")
        XCTAssertEqual(metadata["loss"], "softmax_cross_entropy")
        XCTAssertEqual(try TrainConfig.parse(text: try XCTUnwrap(metadata["config"]), file: "metadata").layers,
                       try TrainConfig.load(path: "\(directory)/c.yaml").layers)

        let onnx = try runCohort(ranks: 1, ["export", checkpoint, "--format", "onnx", "--out", "\(directory)/m.onnx"], directory: directory)
        XCTAssertEqual(onnx.status, 0, onnx.error)
        XCTAssertTrue(onnx.output.contains("an ONNX graph (opset 17)"), onnx.output)
        let unknown = try runCohort(ranks: 1, ["export", checkpoint, "--format", "tflite", "--out", "\(directory)/m.tflite"], directory: directory)
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(unknown.error.contains("--format tflite: is not one of safetensors, onnx"), unknown.error)
        let clobber = try runCohort(ranks: 1, ["export", checkpoint, "--format", "safetensors", "--out", checkpoint], directory: directory)
        XCTAssertEqual(clobber.status, 1)
        XCTAssertNoThrow(try Checkpoint.read(from: checkpoint), "the checkpoint survives")
    }
}
