import Foundation
import XCTest
@testable import Cohort

final class ReportingTests: XCTestCase {
    // MARK: TensorBoard event files

    /// An independent reader of the TFRecord framing and the Event fields the writer uses.
    private struct Record { var wallTime: Double?; var step: Int64?; var fileVersion: String?; var tag: String?; var value: Float? }

    private func readEvents(_ path: String) throws -> [Record] {
        let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: path)))
        var records: [Record] = []
        var offset = 0
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        while offset < bytes.count {
            let lengthBytes = Array(bytes[offset..<offset + 8])
            let length = Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(lengthBytes[$1]) << (8 * UInt64($1)) })
            XCTAssertEqual(u32(offset + 8), maskedCRC32C(lengthBytes), "length CRC of record \(records.count)")
            let data = Array(bytes[(offset + 12)..<(offset + 12 + length)])
            XCTAssertEqual(u32(offset + 12 + length), maskedCRC32C(data), "data CRC of record \(records.count)")
            records.append(parseEvent(data))
            offset += 12 + length + 4
        }
        XCTAssertEqual(offset, bytes.count)
        return records
    }

    private func parseFields(_ data: [UInt8]) -> [(field: Int, varint: UInt64?, fixed: [UInt8]?, bytes: [UInt8]?)] {
        var fields: [(Int, UInt64?, [UInt8]?, [UInt8]?)] = []
        var i = 0
        func varint() -> UInt64 {
            var value: UInt64 = 0, shift: UInt64 = 0
            while true {
                let byte = data[i]; i += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
        }
        while i < data.count {
            let key = varint()
            switch key & 7 {
            case 0: fields.append((Int(key >> 3), varint(), nil, nil))
            case 1: fields.append((Int(key >> 3), nil, Array(data[i..<i + 8]), nil)); i += 8
            case 5: fields.append((Int(key >> 3), nil, Array(data[i..<i + 4]), nil)); i += 4
            case 2:
                let length = Int(varint())
                fields.append((Int(key >> 3), nil, nil, Array(data[i..<i + length]))); i += length
            default: XCTFail("unexpected wire type \(key & 7)"); return fields
            }
        }
        return fields
    }

    private func parseEvent(_ data: [UInt8]) -> Record {
        var record = Record()
        for field in parseFields(data) {
            switch field.field {
            case 1: record.wallTime = Double(bitPattern: field.fixed!.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
            case 2: record.step = Int64(bitPattern: field.varint!)
            case 3: record.fileVersion = String(decoding: field.bytes!, as: UTF8.self)
            case 5:
                for value in parseFields(field.bytes!) where value.field == 1 {
                    for part in parseFields(value.bytes!) {
                        if part.field == 1 { record.tag = String(decoding: part.bytes!, as: UTF8.self) }
                        if part.field == 2 { record.value = Float(bitPattern: part.fixed!.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }) }
                    }
                }
            default: break
            }
        }
        return record
    }

    func test_crc32cMatchesTheStandardCheckValue() {
        XCTAssertEqual(crc32c(Array("123456789".utf8)), 0xE306_9283)
    }

    func test_eventFileRecordsParseBackWithTheirValues() throws {
        let directory = try temporaryDirectory(self)
        let writer = try EventWriter(directory: directory)
        writer.scalar("train/loss", 0.625, step: 7)
        writer.scalar("epoch/test_accuracy", 0.875, step: 469)
        writer.flush()
        let records = try readEvents(writer.path)
        XCTAssertEqual(records.count, 3)
        XCTAssertEqual(records[0].fileVersion, "brain.Event:2")
        XCTAssertEqual(records[1].tag, "train/loss")
        XCTAssertEqual(records[1].value, 0.625)
        XCTAssertEqual(records[1].step, 7)
        XCTAssertEqual(records[2].tag, "epoch/test_accuracy")
        XCTAssertEqual(records[2].value, 0.875)
        XCTAssertEqual(records[2].step, 469)
        XCTAssertGreaterThan(records[2].wallTime ?? 0, 1.7e9)
        XCTAssertTrue(URL(fileURLWithPath: writer.path).lastPathComponent.hasPrefix("events.out.tfevents."))
    }

    // MARK: Classification report

    func test_reportMatchesHandComputedFigures() {
        // true \ predicted:   a  b  c
        let confusion = [[5, 1, 0],     // a: support 6
                         [2, 3, 1],     // b: support 6
                         [0, 0, 0]]     // c: no support, never predicted
        let report = ClassificationReport(confusion: confusion, classNames: ["a", "b", "c"])
        // a: precision 5/7, recall 5/6; b: precision 3/4, recall 3/6; c: 0, 0 (scikit-learn's zero_division=0).
        XCTAssertEqual(report.rows[0].precision, 5.0 / 7, accuracy: 1e-12)
        XCTAssertEqual(report.rows[0].recall, 5.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(report.rows[0].f1, 2 * (5.0 / 7) * (5.0 / 6) / (5.0 / 7 + 5.0 / 6), accuracy: 1e-12)
        XCTAssertEqual(report.rows[1].precision, 0.75, accuracy: 1e-12)
        XCTAssertEqual(report.rows[1].recall, 0.5, accuracy: 1e-12)
        XCTAssertEqual(report.rows[1].f1, 0.6, accuracy: 1e-12)
        XCTAssertEqual(report.rows[2].f1, 0)
        XCTAssertEqual(report.accuracy, 8.0 / 12, accuracy: 1e-12)
        XCTAssertEqual(report.macro.precision, (5.0 / 7 + 0.75 + 0) / 3, accuracy: 1e-12)
        XCTAssertEqual(report.weighted.recall, (6 * 5.0 / 6 + 6 * 0.5) / 12, accuracy: 1e-12)
        XCTAssertEqual(report.macro.support, 12)
        let json = try! JSONSerialization.jsonObject(with: Data(report.json().utf8)) as! [String: Any]
        XCTAssertEqual(json["accuracy"] as? Double ?? 0, 8.0 / 12, accuracy: 1e-12)
        XCTAssertEqual((json["confusion_matrix"] as? [[Int]]) ?? [], confusion)
        XCTAssertTrue(report.table().contains("weighted avg"))
    }

    // MARK: Callbacks on scripted metric sequences

    func test_earlyStoppingStopsAfterPatienceEpochsWithoutImprovement() {
        var callback = EarlyStopping(monitor: .testLoss, patience: 2, minDelta: 0.01, restoreBestWeights: true)
        let losses = [0.50, 0.40, 0.395, 0.41, 0.30, 0.31, 0.305]
        var stoppedAt: Int?
        for (index, loss) in losses.enumerated() where stoppedAt == nil {
            if callback.update(loss, epoch: index + 1).stop { stoppedAt = index + 1 }
        }
        // 0.395 is not better than 0.40 by more than 0.01; 0.41 worse → stop after epoch 4? No:
        // epoch 3 wait 1, epoch 4 wait 2 = patience → stop at 4, best 0.40 at epoch 2.
        XCTAssertEqual(stoppedAt, 4)
        XCTAssertEqual(callback.best, 0.40)
        XCTAssertEqual(callback.bestEpoch, 2)
    }

    func test_earlyStoppingOnAccuracyMaximizes() {
        var callback = EarlyStopping(monitor: .testAccuracy, patience: 1)
        XCTAssertFalse(callback.update(0.8, epoch: 1).stop)
        XCTAssertFalse(callback.update(0.85, epoch: 2).stop)
        XCTAssertTrue(callback.update(0.84, epoch: 3).stop)
    }

    func test_plateauReductionActsAtTheRightEpochs() {
        var callback = ReduceOnPlateau(monitor: .testLoss, factor: 0.5, patience: 2, cooldown: 1, minimumRate: 0.0002)
        let losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.94, 0.95, 0.96, 0.97]
        var reductions: [Int: Double] = [:]
        for (index, loss) in losses.enumerated() {
            if let scale = callback.update(loss, baseRate: 0.001) { reductions[index + 1] = scale }
        }
        // Keras' rule: best 0.9 at epoch 2; epochs 3, 4 without improvement → × 0.5 at 4 and one
        // epoch of cooldown, which ends within epoch 5, so 5 already counts (wait 1); 6 → × 0.25;
        // 7 (cooldown ends, wait 1), 8 → 0.125 is below the floor 0.0002 / 0.001 = 0.2 → 0.2 at 8;
        // then 9, 10 cannot go lower.
        XCTAssertEqual(reductions, [4: 0.5, 6: 0.25, 8: 0.2])
    }

    // MARK: What the user sees

    func test_nonTerminalProgressHasNoCarriageReturns() {
        var written = ""
        var progress = Progress(style: .lines, every: 3) { written += $0 }
        for step in 1...10 {
            progress.update(.init(epoch: 1, epochs: 2, step: step, steps: 10, loss: 0.5, learningRate: 0.001, samplesPerSecond: 100, elapsed: 1))
        }
        progress.finishEpoch()
        XCTAssertFalse(written.contains("\r"))
        XCTAssertEqual(written.split(separator: "\n").count, 4, "steps 3, 6, 9 and the last:\n\(written)")
        var bar = ""
        var live = Progress(style: .bar, every: 1) { bar += $0 }
        live.update(.init(epoch: 1, epochs: 2, step: 10, steps: 10, loss: 0.5, learningRate: 0.001, samplesPerSecond: 100, elapsed: 1))
        XCTAssertTrue(bar.hasPrefix("\r"), "a terminal gets the line redrawn in place")
        XCTAssertTrue(bar.contains("10/10"), bar)
    }

    func test_trainingLeavesARunDirectoryAndEvaluatePredictWork() throws {
        let directory = try temporaryDirectory(self)
        let train = try writeSyntheticDataset("\(directory)/train.h5", rows: 120, seed: 1)
        let test = try writeSyntheticDataset("\(directory)/test.h5", rows: 40, seed: 2)
        let config = "\(directory)/c.yaml"
        try smallConfig(train: train, test: test, runDirectory: "\(directory)/run", epochs: 3)
            .write(toFile: config, atomically: true, encoding: .utf8)
        let result = try runCohort(ranks: 2, ["train", config, "--set", "training.log_every=5"], directory: directory)
        XCTAssertEqual(result.status, 0, result.error)
        XCTAssertFalse(result.output.contains("\r"), "output to a file has no carriage returns")
        XCTAssertTrue(result.output.contains("epoch 2/3 step 5/8"), result.output)
        XCTAssertTrue(result.output.contains("weighted avg"), result.output)
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(directory)/run")
        XCTAssertTrue(files.contains("config.yaml") && files.contains("metrics.csv") && files.contains("report.json"), "\(files)")
        let events = try XCTUnwrap(files.first { $0.hasPrefix("events.out.tfevents.") })
        let tags = Set(try readEvents("\(directory)/run/\(events)").compactMap(\.tag))
        XCTAssertEqual(tags, ["train/loss", "train/learning_rate", "train/samples_per_second", "epoch/train_loss", "epoch/train_accuracy",
                              "epoch/test_loss", "epoch/test_accuracy", "epoch/learning_rate", "epoch/samples_per_second"])
        let csv = try String(contentsOfFile: "\(directory)/run/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.first.map(String.init), RunRecorder.csvHeader)
        XCTAssertEqual(csv.count, 4)

        // evaluate: exact across ranks (1 and 2 ranks agree), JSON written where asked.
        let checkpoint = try XCTUnwrap(Trainer.checkpoints(in: "\(directory)/run/checkpoints").first)
        let one = try runCohort(ranks: 1, ["evaluate", checkpoint, "--json", "\(directory)/one.json"], directory: directory)
        let two = try runCohort(ranks: 2, ["evaluate", checkpoint, "--json", "\(directory)/two.json", "--batch-size", "7"], directory: directory)
        XCTAssertEqual(one.status, 0, one.error)
        XCTAssertEqual(two.status, 0, two.error)
        let reportOne = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: "\(directory)/one.json"))) as? [String: Any]
        let reportTwo = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: "\(directory)/two.json"))) as? [String: Any]
        XCTAssertEqual(reportOne?["confusion_matrix"] as? [[Int]], reportTwo?["confusion_matrix"] as? [[Int]])

        // predict: probabilities sum to 1 and the labels are their arg-max.
        let predicted = try runCohort(ranks: 1, ["predict", checkpoint, "--data", test, "--out", "\(directory)/p.h5"], directory: directory)
        XCTAssertEqual(predicted.status, 0, predicted.error)
        let file = try HDF5File.open("\(directory)/p.h5")
        let (probabilities, shape): ([Float], [Int]) = try file.read("probabilities")
        let labels: [Int64] = try file.read("predictions").values
        XCTAssertEqual(shape, [40, 4])
        for row in 0..<40 {
            let p = Array(probabilities[(row * 4)..<(row * 4 + 4)])
            XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-5)
            XCTAssertEqual(Int(labels[row]), p.firstIndex(of: p.max()!)!)
        }
    }

    /// `cohort profile`'s measurement: one row per layer, times measured, and FLOPs only for
    /// the layers with matrix products (2·multiply-adds per sample, weight and input gradients).
    func test_layerProfileCoversEveryLayer() throws {
        let model = try Model(inputShape: [1, 8, 8], layers: [.conv2d(4, kernel: 3, activation: .relu), .maxPool(2),
                                                              .flatten, .dense(5)], maxBatch: 4)
        let profile = LayerProfile.measure(model, batch: 4, steps: 3)
        XCTAssertEqual(profile.rows.map(\.name), model.layers.map(\.name))
        XCTAssertTrue(profile.rows.allSatisfy { $0.forwardSeconds > 0 && $0.backwardSeconds >= 0 })
        XCTAssertEqual(profile.rows[0].forwardFLOPs, 2 * 4 * Double(4 * 6 * 6 * 9))
        XCTAssertEqual(profile.rows[0].backwardFLOPs, profile.rows[0].forwardFLOPs)  // first layer: no input gradient
        let dense = try XCTUnwrap(profile.rows.last)
        XCTAssertEqual(dense.forwardFLOPs, 2 * 4 * Double(4 * 3 * 3 * 5))  // after the fused 2×2 pool: [4, 3, 3]
        XCTAssertEqual(dense.backwardFLOPs, 2 * dense.forwardFLOPs)
        XCTAssertEqual(profile.rows[1].forwardFLOPs, 0)
        XCTAssertTrue(profile.table().contains("total (batch 4)"))
    }

    /// Containers are taken apart: each sublayer's time under its container, indented, and
    /// `(rest)` for what the container does itself (attention's batched products and softmax).
    func test_layerProfileTakesContainersApart() throws {
        let model = try Model(inputShape: [6, 8], layers: [.family(TransformerBlockOptions(heads: 2)), .dense(3)], maxBatch: 2)
        let profile = LayerProfile.measure(model, batch: 2, steps: 2)
        XCTAssertEqual(profile.rows.map(\.name), [
            "transformer_block_1", "transformer_block_1/ln_1", "transformer_block_1/attention", "transformer_block_1/attention/qkv",
            "transformer_block_1/attention/proj", "transformer_block_1/attention/(rest)", "transformer_block_1/ln_2",
            "transformer_block_1/fc", "transformer_block_1/gelu", "transformer_block_1/proj", "transformer_block_1/(rest)", "dense_1",
        ])
        XCTAssertEqual(profile.rows.map(\.depth), [0, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 0])
        let inner = profile.rows.filter { $0.depth == 1 }
        XCTAssertTrue(inner.allSatisfy { $0.forwardSeconds > 0 || $0.name.hasSuffix("(rest)") }, "\(inner)")
        let table = profile.table()
        XCTAssertTrue(table.contains("\n    qkv "), table)
        XCTAssertFalse(SublayerTimes.recording, "recording ends with the measurement")
    }
}
