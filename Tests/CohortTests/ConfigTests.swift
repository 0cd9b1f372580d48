import XCTest
@testable import Cohort

final class ConfigTests: XCTestCase {
    private let valid = smallConfig(train: "train.h5", test: "test.h5", runDirectory: "runs/x")

    private func assertError(_ text: String, contains fragments: [String], overrides: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TrainConfig.parse(text: text, file: "c.yaml", overrides: overrides), file: file, line: line) { error in
            let message = (error as? CohortError)?.message ?? "\(error)"
            for fragment in fragments { XCTAssertTrue(message.contains(fragment), "'\(message)' lacks '\(fragment)'", file: file, line: line) }
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", file: file, line: line)
        }
    }

    func test_validConfigParses() throws {
        let config = try TrainConfig.parse(text: valid, file: "c.yaml")
        XCTAssertEqual(config.training.batchSize, 8)
        XCTAssertEqual(config.layers.count, 2)
        XCTAssertEqual(config.optimizer.kind, .adam)
        XCTAssertEqual(config.data.features, "images")
    }

    func test_shippedW1ConfigParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try TrainConfig.load(path: root.appendingPathComponent("configs/fashion-mnist-mlp.yaml").path)
        XCTAssertEqual(config.training.batchSize, 64)
        XCTAssertEqual(config.optimizer.learningRate, 1e-3)
        let model = try Model(inputShape: [1, 28, 28], layers: config.layers, maxBatch: 1, seed: 0)
        XCTAssertEqual(model.parameters.count, 235_146)
    }

    func test_malformedYAMLIsOneLineError() {
        assertError("data: [unclosed\nmodel: {", contains: ["c.yaml", "malformed YAML"])
    }

    func test_unknownKeyNamesTheKeyAndLine() {
        assertError(valid + "\noptimzer:\n  type: sgd\n", contains: ["c.yaml:", "unknown key 'optimzer'"])
        assertError(valid.replacingOnce("batch_size: 8", with: "batch_size: 8\n  batchsize: 9"),
                    contains: ["training.batchsize"])
    }

    func test_unknownLayerIsNamed() {
        assertError(valid.replacingOnce("type: dense\n      units: 4", with: "type: densse\n      units: 4"),
                    contains: ["model.layers[1].type", "densse"])
    }

    func test_wrongTypeNamesTheKey() {
        assertError(valid.replacingOnce("epochs: 2", with: "epochs: two"), contains: ["training.epochs", "integer", "two"])
        assertError(valid.replacingOnce("learning_rate: 0.01", with: "learning_rate: fast"), contains: ["optimizer.learning_rate"])
    }

    /// The scale-out and threading keys refuse what they cannot mean, naming the key.
    func test_scaleOutAndThreadKeysRefuseBadValues() throws {
        assertError(valid, contains: ["training.threads", "1...1024", "0"], overrides: ["training.threads=0"])
        assertError(valid, contains: ["training.state", "node_local"], overrides: ["training.state=node_local"])
        assertError(valid, contains: ["training.compress", "fp8"], overrides: ["training.compress=fp8"])
        assertError(valid, contains: ["training.bucket_mb"], overrides: ["training.bucket_mb=0"])
        assertError(valid, contains: ["training.overlap_all_reduce"], overrides: ["training.overlap_all_reduce=maybe"])
        assertError(valid, contains: ["training.recompute", "layers"], overrides: ["training.recompute=layers"])
        let parsed = try TrainConfig.parse(text: valid, file: "c.yaml",
                                           overrides: ["training.threads=3", "training.state=replicated", "training.compress=bf16"])
        XCTAssertEqual(parsed.training.threads, 3)
        XCTAssertEqual(parsed.training.state, .replicated)
        XCTAssertEqual(parsed.training.compress, .bf16)
        XCTAssertEqual(try TrainConfig.parse(text: valid, file: "c.yaml").training.state, .nodeShared, "node_shared is the default")
        XCTAssertEqual(try TrainConfig.parse(text: valid, file: "c.yaml", overrides: ["training.recompute=blocks"]).training.recompute, .blocks)
    }

    func test_missingDataSectionIsNamed() {
        assertError("model:\n  layers:\n    - type: relu\n", contains: ["missing key data"])
    }

    func test_missingConfigFileIsNamed() {
        XCTAssertThrowsError(try TrainConfig.load(path: "/nonexistent/cfg.yaml")) { error in
            XCTAssertEqual((error as? CohortError)?.message, "/nonexistent/cfg.yaml: no such config file")
        }
    }

    func test_setOverridesAnyKeyAndIsRecorded() throws {
        let config = try TrainConfig.parse(text: valid, file: "c.yaml",
                                           overrides: ["training.epochs=7", "optimizer.type=sgd", "checkpoint.keep_last=1"])
        XCTAssertEqual(config.training.epochs, 7)
        XCTAssertEqual(config.optimizer.kind, .sgd)
        XCTAssertEqual(config.checkpoint.keepLast, 1)
        XCTAssertTrue(config.text.contains("epochs: 7"))
        assertError(valid, contains: ["training.epoch", "unknown key"], overrides: ["training.epoch=3"])
    }
}
