import Foundation
import XCTest
@testable import Cohort

/// `TrainingTask`: what a run learns, read once from its data and loss, with each shape rule in one place.
final class TrainingTaskTests: XCTestCase {
    func test_theTaskIsReadFromTheDataTheLossAndTheModel() throws {
        let directory = try temporaryDirectory(self)
        let path = try writeSyntheticDataset("\(directory)/images.h5", rows: 8, classes: 4)
        let config = DataConfig(train: path)
        let images = try openSamples(path: path, config: config, phase: .zero, seed: 0, cache: false)
        let task = try TrainingTask(data: images, loss: .softmaxCrossEntropy(smoothing: 0))
        XCTAssertEqual(task, .classification(classes: 4, outputs: 4))
        XCTAssertEqual(task.outputShape, [4])
        XCTAssertTrue(task.hasAccuracy && task.reportsClasses && !task.evaluatesWhenStoppedMidEpoch)
        XCTAssertEqual(task.rateUnit, "samples/s")

        XCTAssertThrowsError(try task.checkOutput([3], file: "images.h5")) { error in
            XCTAssertEqual((error as? CohortError)?.message, "images.h5: has 4 classes, so it needs 4 outputs, but the model's last layer gives [3]")
        }
        XCTAssertThrowsError(try TrainingTask(data: images, loss: .binaryCrossEntropy)) { error in
            XCTAssertTrue((error as? CohortError)?.message.hasSuffix("binary_cross_entropy needs labels 0 and 1 (2 classes), the file has 4") == true)
        }

        let language = TrainingTask.languageModel(vocabulary: 65, positions: 32)
        XCTAssertEqual(language.outputShape, [32, 65])
        XCTAssertEqual(language.rateUnit, "tokens/s")
        XCTAssertEqual(language.targets(rows: 3), 96)
        XCTAssertTrue(language.evaluatesWhenStoppedMidEpoch && !language.reportsClasses)
        XCTAssertThrowsError(try language.checkValidationSplit(0.1, file: "train.h5"))
        XCTAssertNoThrow(try task.checkValidationSplit(0.1, file: "images.h5"))
        let model = try Model(inputShape: [32], layers: [.family(EmbeddingOptions(vocabulary: 64, dimension: 8)),
                                                         .family(LanguageModelHeadOptions(tied: false, units: 65))])
        XCTAssertThrowsError(try language.checkTokens(of: model, file: "train.h5")) { error in
            XCTAssertEqual((error as? CohortError)?.message, "train.h5: its vocabulary has 65 tokens, but embedding_1 has vocabulary 64")
        }

        let regression = TrainingTask.regression(width: 2)
        XCTAssertFalse(regression.hasAccuracy || regression.reportsClasses)
        XCTAssertThrowsError(try regression.checkOutput([1], file: "r.h5")) { error in
            XCTAssertEqual((error as? CohortError)?.message, "r.h5: has 2 target(s) per row, but the model's last layer gives [1]")
        }
        let encoder = try Model(inputShape: [6], layers: [.family(BertEmbeddingsOptions(vocabulary: 10, dimension: 4, maxLength: 8)),
                                                          .family(SequencePoolOptions(mode: .first)), .dense(4)])
        XCTAssertEqual(try TrainingTask(data: images, loss: .softmaxCrossEntropy(smoothing: 0), model: encoder), .sequenceClassification(classes: 4, outputs: 4))
    }
}
